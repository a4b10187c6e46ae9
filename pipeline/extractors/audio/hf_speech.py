"""The ``hf-speech`` extractor: self-supervised speech embeddings from any Hugging Face speech encoder.

wav2vec2, HuBERT, WavLM, data2vec-audio (and their fine-tuned checkpoints) or Whisper's encoder, from
a local ``save_pretrained`` directory or the local Hugging Face cache: never downloaded (hf_encoder).
The model's own normaliser runs over the whole track; the track is encoded in overlapping chunks so
memory stays bounded; the chosen hidden states (one, several concatenated, or their plain average)
are pooled onto the video frames by the timestamps of the encoder frames, computed from the model's
subsampling convolutions. docs/AUDIO.md has the options and the measured chunk-seam error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.align import AlignMethod
from avpipe.pipeline.errors import ConfigError, ExtractorError
from avpipe.pipeline.extractors.audio.common import NativeFeatures, features_on_timeline, prepare_track
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext

log = logging.getLogger(__name__)


class LayerCombine(StrEnum):
    """How several hidden states become one row: side by side, or their unweighted mean."""

    CONCAT = "concat"
    MEAN = "mean"


@dataclass
class HfSpeechConfig:
    """``extractors.hf-speech`` in params.yaml."""

    model: str | None = None  # save_pretrained directory, or a repo id in the local HF cache
    sample_rate: int = 16000  # must be the model's (its preprocessor_config.json says)
    layers: list[int] = field(default_factory=lambda: [-1])  # hidden states: 0 = input embeddings, -1 = last
    combine: LayerCombine = LayerCombine.CONCAT
    align: AlignMethod = AlignMethod.MEAN
    chunk_seconds: float = 20.0  # audio encoded per forward pass (Whisper: at most its window - 2 contexts)
    context_seconds: float = (
        2.0  # audio on each side of a chunk, encoded and thrown away (>= 1 receptive field)
    )
    batch_size: int = 4  # chunks per forward pass
    fp16: bool = True  # on a GPU only

    def __post_init__(self) -> None:
        self.combine = LayerCombine(self.combine)
        self.align = AlignMethod(self.align)
        if isinstance(self.layers, int):
            self.layers = [self.layers]
        if not self.layers:
            raise ConfigError("extractors.hf-speech.layers", "must list at least one hidden state")
        if len(set(self.layers)) != len(self.layers):
            raise ConfigError("extractors.hf-speech.layers", f"lists a layer twice: {self.layers}")
        if not self.chunk_seconds > 0:
            raise ConfigError("extractors.hf-speech.chunk_seconds", f"must be > 0, got {self.chunk_seconds}")
        if not self.context_seconds >= 0:
            raise ConfigError(
                "extractors.hf-speech.context_seconds", f"must be >= 0, got {self.context_seconds}"
            )
        if self.batch_size < 1:
            raise ConfigError("extractors.hf-speech.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Chunk:
    """Samples ``[start, stop)`` are encoded; frames centred in ``[own_start, own_stop)`` are kept."""

    start: int
    stop: int
    own_start: float
    own_stop: float


def plan_chunks(n_samples: int, chunk: int, context: int) -> list[Chunk]:
    """Consecutive owned spans of ``chunk`` samples, each encoded with ``context`` samples either side."""
    chunks = []
    for own in range(0, max(n_samples, 1), chunk):
        first, last = own == 0, own + chunk >= n_samples
        chunks.append(
            Chunk(
                start=max(0, own - context),
                stop=min(n_samples, own + chunk + context),
                own_start=-np.inf if first else own,
                own_stop=np.inf if last else own + chunk,
            )
        )
    return chunks


def _round_to(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


@register_extractor
class HfSpeechExtractor(Extractor):
    name = "hf-speech"
    version = "1"
    input_kind = InputKind.AUDIO
    config_class = HfSpeechConfig
    description = (
        "Hugging Face speech encoder hidden states (wav2vec2/HuBERT/WavLM/data2vec/Whisper) per frame"
    )

    def __init__(self, config: HfSpeechConfig | None = None) -> None:
        super().__init__(config)
        self._encoder: Any = None
        self._dims: tuple[int, int] | None = None

    def _checkpoint(self) -> Path:
        from avpipe.pipeline.extractors.audio import hf_encoder

        if not self.config.model:
            raise ExtractorError(
                "hf-speech: extractors.hf-speech.model is not set: give a save_pretrained directory "
                "(e.g. models/wavlm-base-plus) or a repo id in the local Hugging Face cache"
            )
        return hf_encoder.resolve_checkpoint(self.config.model)

    def _encoder_dims(self) -> tuple[int, int]:
        from avpipe.pipeline.extractors.audio import hf_encoder

        if self._dims is None:
            directory = self._checkpoint()
            self._dims = hf_encoder.encoder_dims(hf_encoder.read_model_config(directory), directory)
        return self._dims

    def layer_indices(self) -> list[int]:
        """The configured hidden states as non-negative indices (checked against the model's depth)."""
        _, n_states = self._encoder_dims()
        chosen = []
        for layer in self.config.layers:
            if not -n_states <= layer < n_states:
                raise ConfigError(
                    "extractors.hf-speech.layers",
                    f"{layer} is out of range: {self.config.model} has {n_states} hidden states "
                    f"(0 = input embeddings ... {n_states - 1} = last layer, or -1)",
                )
            chosen.append(layer % n_states)
        return chosen

    @property
    def feature_dim(self) -> int:
        hidden, _ = self._encoder_dims()
        n = len(self.config.layers) if self.config.combine is LayerCombine.CONCAT else 1
        return hidden * n

    def preflight(self) -> None:
        """Stop before any video when the checkpoint is absent, unreadable or the layers do not exist."""
        self.layer_indices()

    def setup(self, device: str) -> None:
        from avpipe.pipeline.extractors.audio.hf_encoder import SpeechEncoder

        cfg: HfSpeechConfig = self.config
        self.layer_indices()
        encoder = SpeechEncoder(self._checkpoint(), device, cfg.fp16)
        if encoder.sample_rate != cfg.sample_rate:
            raise ConfigError(
                "extractors.hf-speech.sample_rate",
                f"{encoder.directory} expects {encoder.sample_rate} Hz input, got {cfg.sample_rate}",
            )
        self._encoder = encoder
        log.info(
            "hf-speech: %s on %s (%s), frames every %d samples, centre offset %.1f",
            encoder.directory,
            device,
            encoder.dtype,
            encoder.geometry.hop,
            encoder.geometry.offset,
        )

    def extract(self, source: AudioTrack | None, timeline: Timeline, context: VideoContext) -> FeatureSet:
        cfg: HfSpeechConfig = self.config
        track = prepare_track(source, cfg.sample_rate, context)
        if track is None:
            return features_on_timeline(None, None, timeline, cfg.align, self.feature_dim, self.attrs())
        if self._encoder is None:
            self.setup("cpu")
        native = self.encode(track)
        return features_on_timeline(native, track, timeline, cfg.align, self.feature_dim, self.attrs())

    def encode(self, track: AudioTrack) -> NativeFeatures:
        """The combined hidden states of every encoder frame of ``track`` and their container-clock times."""
        encoder = self._encoder
        geometry = encoder.geometry
        samples = encoder.normalise(track.samples)
        chunk, context = self._chunk_sizes()
        layers = self.layer_indices()
        frames: dict[int, np.ndarray] = {}
        pending: list[Chunk] = plan_chunks(samples.shape[0], chunk, context)
        while pending:
            size = pending[0].stop - pending[0].start
            batch = [c for c in pending if c.stop - c.start == size][: self.config.batch_size]
            pending = [c for c in pending if c not in batch]
            inputs = np.stack([self._input(samples, c) for c in batch])
            states = encoder.hidden_states(inputs, layers)
            for i, c in enumerate(batch):
                rows = self._combine([state[i] for state in states])
                centres = c.start + geometry.centres(rows.shape[0])
                keep = (centres >= c.own_start) & (centres < c.own_stop) & (centres < samples.shape[0])
                first = (c.start - 0) // geometry.hop  # chunk starts are multiples of the hop
                for k in np.flatnonzero(keep):
                    frames[int(first + k)] = rows[k]
        if not frames:  # a track shorter than half a receptive field: no frame centre inside it
            return NativeFeatures(values=np.zeros((0, self.feature_dim), np.float32), times=np.zeros(0))
        order = sorted(frames)
        values = np.stack([frames[k] for k in order]).astype(np.float32)
        times = track.start + geometry.centres(order[-1] + 1)[order] / track.sample_rate
        return NativeFeatures(values=values, times=times)

    def _chunk_sizes(self) -> tuple[int, int]:
        cfg: HfSpeechConfig = self.config
        hop = self._encoder.geometry.hop
        chunk = _round_to(cfg.chunk_seconds * cfg.sample_rate, hop)
        # At least one receptive field past each seam, so that no frame near a seam is lost.
        receptive = int(np.ceil(2 * self._encoder.geometry.offset)) + 1
        context = _round_to(max(cfg.context_seconds * cfg.sample_rate, receptive), hop)
        if self._encoder.is_whisper and chunk + 2 * context > self._encoder.whisper_window:
            raise ConfigError(
                "extractors.hf-speech.chunk_seconds",
                f"chunk_seconds + 2 * context_seconds must fit Whisper's {self._encoder.whisper_window} "
                f"sample window; got {(chunk + 2 * context) / cfg.sample_rate:.2f} s",
            )
        return chunk, context

    def _input(self, samples: np.ndarray, chunk: Chunk) -> np.ndarray:
        """The chunk's samples, zero-padded to at least one encoder frame's receptive field."""
        piece = samples[chunk.start : chunk.stop]
        shortest = int(np.ceil(2 * self._encoder.geometry.offset)) + 1
        if piece.shape[0] < shortest:
            piece = np.pad(piece, (0, shortest - piece.shape[0]))
        return piece

    def _combine(self, states: list[np.ndarray]) -> np.ndarray:
        if self.config.combine is LayerCombine.MEAN:
            return np.mean(states, axis=0)
        return np.concatenate(states, axis=1)

    def attrs(self) -> dict[str, Any]:
        cfg: HfSpeechConfig = self.config
        out: dict[str, Any] = {
            "sample_rate": cfg.sample_rate,
            "model": str(cfg.model),
            "layers": [int(x) for x in cfg.layers],
            "combine": LayerCombine(cfg.combine).value,
        }
        if self._encoder is not None:
            out["native_hop"] = self._encoder.geometry.hop / cfg.sample_rate
            out["model_type"] = str(self._encoder.config.get("model_type"))
            out["model_dir"] = str(self._encoder.directory)
            out["model_fingerprint"] = self._encoder.fingerprint
        return out
