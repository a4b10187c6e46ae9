"""Hugging Face speech encoders (wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper's encoder), offline.

Loading: a local directory written by ``save_pretrained`` (config.json, weights, the feature
extractor's preprocessor_config.json), or a repo id already in the local Hugging Face cache. Nothing
is ever downloaded: every call passes ``local_files_only``.

Timing: each encoder frame's centre on the input is computed from the subsampling convolutions of the
loaded model (kernel, stride, padding of every ``Conv1d`` of wav2vec2's feature encoder, or Whisper's
mel hop then its two convolutions), never assumed. Frame ``k`` of an input starting at sample 0 is
centred on sample ``k * hop + offset``.

Chunking: long tracks run in chunks of ``chunk`` samples with ``context`` samples of real audio on each
side; only the frames whose centres fall in a chunk's own span are kept. Chunk starts are multiples of
the hop, so every kept frame lies on the same grid as an unchunked run.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.hf_local import resolve_local_model

log = logging.getLogger(__name__)

WHISPER_TYPES = ("whisper",)


@dataclass(frozen=True)
class FrameGeometry:
    """Encoder frame ``k`` of an input starting at sample 0 is centred on ``k * hop + offset`` samples."""

    hop: int
    offset: float

    @classmethod
    def from_convs(cls, layers: list[tuple[int, int, int]], input_hop: int = 1, input_offset: float = 0.0):
        """Compose ``(kernel, stride, padding)`` layers (first layer first) over an input whose element
        ``j`` is centred on sample ``j * input_hop + input_offset``.

        Output ``k`` of one layer covers inputs ``k*stride - padding ... k*stride - padding + kernel - 1``:
        its centre is ``k*stride - padding + (kernel - 1) / 2``.
        """
        scale, shift = 1, 0.0  # position on the layer's input = scale * k + shift
        for kernel, stride, padding in reversed(layers):
            scale, shift = scale * stride, shift * stride - padding + (kernel - 1) / 2.0
        return cls(hop=scale * input_hop, offset=shift * input_hop + input_offset)

    def centres(self, n_frames: int) -> np.ndarray:
        return np.arange(n_frames, dtype=np.float64) * self.hop + self.offset


def resolve_checkpoint(model: str) -> Path:
    """The directory holding ``model``: itself when it is a directory, else its local HF cache snapshot."""
    return resolve_local_model(model, "hf-speech")


def read_model_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExtractorError(f"hf-speech: cannot read {path}: {err}") from err


def encoder_dims(config: dict[str, Any], path: Path) -> tuple[int, int]:
    """``(hidden size, number of hidden states)`` of the encoder: layers + 1 (the input embeddings)."""
    if config.get("model_type") in WHISPER_TYPES:
        hidden, layers = config.get("d_model"), config.get("encoder_layers")
    else:
        hidden, layers = config.get("hidden_size"), config.get("num_hidden_layers")
    if not isinstance(hidden, int) or not isinstance(layers, int):
        raise ExtractorError(
            f"hf-speech: {path}/config.json (model_type {config.get('model_type')!r}) does not give the "
            "encoder's width and depth: not a speech encoder config"
        )
    return hidden, layers + 1


class SpeechEncoder:
    """A loaded encoder with its own input normaliser, run on float32 mono samples."""

    def __init__(self, directory: Path, device: str, fp16: bool) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel
        from transformers.utils import logging as hf_logging

        if not sys.stderr.isatty():  # the weight-loading progress bar only on a terminal
            hf_logging.disable_progress_bar()
        self.directory = directory
        self.config = read_model_config(directory)
        self.is_whisper = self.config.get("model_type") in WHISPER_TYPES
        try:
            self.frontend = AutoFeatureExtractor.from_pretrained(directory, local_files_only=True)
            model = AutoModel.from_pretrained(directory, local_files_only=True)
        except Exception as err:
            raise ExtractorError(f"hf-speech: cannot load the model in {directory}: {err}") from err
        self.net = (model.get_encoder() if self.is_whisper else model).eval()
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 and self.device.type == "cuda" else torch.float32
        self.net.to(self.device, self.dtype)
        self.sample_rate = int(self.frontend.sampling_rate)
        self.geometry = self._geometry()
        self.fingerprint = weights_fingerprint(directory)

    def _geometry(self) -> FrameGeometry:
        import torch

        if self.is_whisper:
            # Whisper's log-mel frames are centred on multiples of hop_length (STFT with centre padding).
            convs = [self.net.conv1, self.net.conv2]
            hop = int(self.frontend.hop_length)
        else:
            feature_encoder = getattr(self.net, "feature_extractor", None)
            if feature_encoder is None:
                raise ExtractorError(
                    f"hf-speech: {self.directory}: the model has no convolutional feature encoder"
                )
            convs = [m for m in feature_encoder.modules() if isinstance(m, torch.nn.Conv1d)]
            hop = 1
        layers = [(m.kernel_size[0], m.stride[0], _padding(m)) for m in convs]
        return FrameGeometry.from_convs(layers, input_hop=hop)

    @property
    def whisper_window(self) -> int:
        """Samples per Whisper input window (its encoder takes fixed-length log-mel inputs)."""
        return int(self.frontend.n_samples)

    def normalise(self, samples: np.ndarray) -> np.ndarray:
        """The model's own waveform normaliser over the whole track (wav2vec2 family; Whisper: identity)."""
        if self.is_whisper:
            return samples
        out = self.frontend(samples, sampling_rate=self.sample_rate, return_tensors="np")
        return np.asarray(out["input_values"][0], dtype=np.float32)

    def hidden_states(self, batch: np.ndarray, layers: list[int]) -> list[np.ndarray]:
        """Hidden states ``layers`` (0: the input embeddings) of a (B, samples) batch: (B, frames, hidden)
        each; only those leave the device."""
        import torch

        with torch.inference_mode():
            if self.is_whisper:
                feats = self.frontend(list(batch), sampling_rate=self.sample_rate, return_tensors="pt")
                inputs = feats["input_features"].to(self.device, self.dtype)
                out = self.net(inputs, output_hidden_states=True)
            else:
                inputs = torch.from_numpy(batch).to(self.device, self.dtype)
                out = self.net(inputs, output_hidden_states=True)
        return [out.hidden_states[layer].float().cpu().numpy() for layer in layers]


def weights_fingerprint(directory: Path) -> str:
    """Hash of the folder's config and of its weight files' names and sizes: which model made a shard
    (the params only say where it was; the folder's content may change under the same path)."""
    import hashlib

    digest = hashlib.sha256((directory / "config.json").read_bytes())
    for path in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def _padding(conv: Any) -> int:
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "valid":
            return 0
        raise ExtractorError(f"hf-speech: convolution padding {padding!r} is not supported for frame timing")
    return int(padding[0])
