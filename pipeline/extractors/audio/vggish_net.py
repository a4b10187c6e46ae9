"""The VGGish network, its input frontend, weights loading and PCA post-processing (torch).

Architecture and frontend follow the ``torchvggish`` package (a port of Google's TF VGGish), so its
published weights load as they are: a 4-block VGG conv stack (64, 128, 2x256, 2x512 channels, 3x3
convs, ReLU, 2x2 max-pools) on one (96, 64) log-mel patch, then FC 12288-4096-4096-128 with ReLU.
Frontend: 16 kHz, 25 ms periodic-Hann windows every 10 ms, 512-point FFT magnitude, 64 HTK-mel bands
125-7500 Hz, ``log(mel + 0.01)``, patches of 96 frames (0.96 s).

Two ways to run the conv stack over many overlapping patches (``VggishMode``):

- ``exact``: every patch on its own, as torchvggish does (zero padding at each patch's edges).
- ``shared``: the conv stack runs once over the continuous log-mel of the track and each patch takes
  its 6x4 cell of the result, for every max-pool phase the patches need. A patch then sees up to
  0.27 s of audio beyond its edges instead of zero padding, so embeddings differ from ``exact`` near
  the patch borders; in exchange the convolutions are shared between patches that overlap by 92 %.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avpipe.pipeline.checkpoints import CheckpointError, load_weights
from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.audio import spectral
from avpipe.pipeline.extractors.audio.vggish import VggishMode

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FRAME_HOP = HOP_SAMPLES / SAMPLE_RATE
N_FFT = 512
N_MELS = 64
MEL_FMIN, MEL_FMAX = 125.0, 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # 0.96 s of 10 ms frames
PATCH_SECONDS = PATCH_FRAMES * FRAME_HOP
EMBEDDING_SIZE = 128
CONV_CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
TOTAL_STRIDE = 16  # four 2x2 max-pools
# Frames a final conv unit reaches beyond its pooling cell on either side: a segment of the shared
# trunk needs this much context around its patches for results independent of how it is cut.
SHARED_CONTEXT = 48
SHARED_SEGMENT_PATCH_SPAN = 1024  # patch starts per shared-trunk segment (bounds activation memory)
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
PCA_EIGEN_VECTORS, PCA_MEANS = "pca_eigen_vectors", "pca_means"

WEIGHTS_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"
WEIGHTS_SOURCE = "https://github.com/harritaylor/torchvggish/releases"


def silence_log_mel() -> float:
    """The frontend's value for a band with no energy: what padding outside the track holds."""
    return float(np.log(LOG_OFFSET))


def log_mel_frames(samples: np.ndarray) -> np.ndarray:
    """(n_frames, 64) float32 VGGish log-mel frames of 16 kHz mono ``samples`` (no padding)."""
    filterbank = spectral.mel_filterbank(N_MELS, N_FFT, SAMPLE_RATE, MEL_FMIN, MEL_FMAX)
    magnitudes = spectral.mel_spectrogram(samples, WINDOW_SAMPLES, HOP_SAMPLES, filterbank, power=1.0)
    return np.log(magnitudes + np.float32(LOG_OFFSET))


def frame_centre(index: np.ndarray | int) -> np.ndarray:
    """Seconds from the first sample to the centre of log-mel frame ``index``."""
    return (np.asarray(index, dtype=np.float64) * HOP_SAMPLES + WINDOW_SAMPLES / 2.0) / SAMPLE_RATE


def patch_start_for(centre_seconds: np.ndarray) -> np.ndarray:
    """First log-mel frame of the patch whose centre is nearest to each time (seconds from sample 0)."""
    offset = frame_centre(0) + (PATCH_FRAMES - 1) / 2.0 * FRAME_HOP
    return np.round((np.asarray(centre_seconds, dtype=np.float64) - offset) / FRAME_HOP).astype(np.int64)


def patch_centre(start: np.ndarray) -> np.ndarray:
    """Seconds from sample 0 to the centre of the patch starting at log-mel frame ``start``."""
    return (frame_centre(start) + frame_centre(np.asarray(start) + PATCH_FRAMES - 1)) / 2.0


class Vggish(nn.Module):
    """torchvggish's ``VGG``: parameter names ``features.*`` and ``embeddings.*`` match its checkpoints."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for spec in CONV_CHANNELS:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(spec), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(spec)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(inplace=True),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, 1, 96, 64) log-mel patches -> (B, 128) embeddings."""
        return self.embed(self.features(patches))

    def embed(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, 512, 6, 4) conv output -> embeddings; flattened time, frequency, channel as TF VGGish."""
        return self.embeddings(trunk.permute(0, 2, 3, 1).reshape(trunk.shape[0], -1))

    def stages(self) -> list[nn.Sequential]:
        """The conv stack cut after each max-pool: four stages, each ending with a 2x2 pool."""
        out, current = [], []
        for layer in self.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                out.append(nn.Sequential(*current[:-1]))
                current = []
        return out


@dataclass(frozen=True)
class Pca:
    """torchvggish's post-processor: PCA (with whitening) and optional 8-bit quantisation."""

    eigen_vectors: torch.Tensor  # (128, 128)
    means: torch.Tensor  # (128, 1)
    quantize: bool

    def apply(self, embeddings: torch.Tensor) -> torch.Tensor:
        projected = (self.eigen_vectors @ (embeddings.T - self.means)).T
        if not self.quantize:
            return projected
        clipped = projected.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))

    def to(self, device: str) -> Pca:
        return Pca(self.eigen_vectors.to(device), self.means.to(device), self.quantize)


# --------------------------------------------------------------------------- weights


def missing_weights_message(config_key: str, expected: str, path: str | None) -> str:
    where = "is not set" if path is None else f"points to {path}, which does not exist"
    return (
        f"{config_key} {where}. VGGish needs its weights as a local file: download {expected} from the "
        f"torchvggish GitHub releases ({WEIGHTS_SOURCE}; the PCA parameters are {PCA_FILE}), put it e.g. "
        f"under models/weights/, and set {config_key}: models/weights/{expected} in params.yaml "
        f"(or pass --set {config_key}=/path/to/{expected})."
    )


def load_torch_file(path: Path, what: str) -> Any:
    """The file's tensors and numpy arrays (as in the PCA release file), never running code from it;
    a legacy file needing full unpickling is refused with how to convert it (pipeline/checkpoints.py)."""
    try:
        return load_weights(path, what)
    except CheckpointError as err:
        raise ExtractorError(str(err)) from err


def check_weights_file(path: str | None, config_key: str, expected: str) -> Path:
    if path is None or not Path(path).is_file():
        raise ExtractorError(missing_weights_message(config_key, expected, path))
    return Path(path)


def vggish_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network's tensors from a checkpoint: plain, wrapped in ``state_dict``, or ``module.``-prefixed."""
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise ExtractorError(
            f"{path}: not a state-dict (a mapping of names to tensors), got {type(raw).__name__}"
        )
    state = {}
    for key, value in raw.items():
        name = str(key).removeprefix("module.")
        if name.startswith("pproc."):  # PCA saved along with a full torchvggish VGGish module
            continue
        state[name] = torch.as_tensor(value)
    return state


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Clear error for missing or unexpected keys and wrong shapes (load_state_dict's is a wall of text)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{name} {tuple(state[name].shape)} (expected {shape})"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_few(wrong)}")
    if problems:
        raise ExtractorError(
            f"{path}: not a VGGish (torchvggish) state-dict: {'; '.join(problems)}. "
            f"Expected the keys of {WEIGHTS_FILE} (features.0.weight ... embeddings.4.bias)."
        )


UNTRAINED_PREFIX = "untrained:"


def untrained_seed(path: str | None, config_key: str) -> int | None:
    """The seed of ``untrained:<seed>`` (seeded random weights, for demo and plumbing tests), or None."""
    if path is None or not path.startswith(UNTRAINED_PREFIX):
        return None
    text = path.removeprefix(UNTRAINED_PREFIX)
    if not text.isdigit():
        raise ExtractorError(f"{config_key}: {path!r} must be untrained:<integer seed>, e.g. untrained:0")
    return int(text)


def load_vggish(
    path: str | None, config_key: str = "extractors.vggish.checkpoint", warn: bool = True
) -> Vggish:
    """A Vggish in eval mode with the weights at ``path`` (clear ExtractorError otherwise).

    ``untrained:<seed>`` builds the network with seeded random weights instead: its embeddings are random
    projections of the log-mel patches, good for exercising the pipeline offline, not VGGish features.
    """
    seed = untrained_seed(path, config_key)
    if seed is not None:
        (log.warning if warn else log.debug)(
            "%s is %r: VGGish runs with seeded RANDOM weights; the features are not VGGish embeddings. %s",
            config_key,
            path,
            missing_weights_message(config_key, WEIGHTS_FILE, None).split(". ", 1)[1],
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Vggish().eval()
    file = check_weights_file(path, config_key, WEIGHTS_FILE)
    state = vggish_state_dict(load_torch_file(file, "VGGish checkpoint"), file)
    # Built on the meta device: random initialisation of 72 M parameters would be thrown away.
    with torch.device("meta"):
        model = Vggish()
    check_state_dict(model, state, file)
    model.load_state_dict({name: t.float() for name, t in state.items()}, assign=True)
    return model.eval()


def load_pca(path: str | None, quantize: bool, config_key: str = "extractors.vggish.pca_params") -> Pca:
    file = check_weights_file(path, config_key, PCA_FILE)
    raw = load_torch_file(file, "VGGish PCA parameters")
    if not isinstance(raw, Mapping) or PCA_EIGEN_VECTORS not in raw or PCA_MEANS not in raw:
        keys = sorted(map(str, raw)) if isinstance(raw, Mapping) else type(raw).__name__
        raise ExtractorError(
            f"{file}: PCA parameters need keys {PCA_EIGEN_VECTORS!r} and {PCA_MEANS!r}, got {keys}"
        )
    vectors = torch.as_tensor(np.asarray(raw[PCA_EIGEN_VECTORS]), dtype=torch.float32)
    means = torch.as_tensor(np.asarray(raw[PCA_MEANS]), dtype=torch.float32).reshape(-1, 1)
    if tuple(vectors.shape) != (EMBEDDING_SIZE, EMBEDDING_SIZE) or tuple(means.shape) != (EMBEDDING_SIZE, 1):
        raise ExtractorError(
            f"{file}: PCA shapes {tuple(vectors.shape)} and {tuple(means.shape)}; "
            "expected eigen vectors (128, 128) and 128 means"
        )
    return Pca(vectors, means, quantize)


def _few(items: list[str], n: int = 4) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# --------------------------------------------------------------------------- inference


class VggishRunner:
    """Embeddings of many patches of one log-mel sequence, batched, under ``torch.inference_mode``."""

    def __init__(
        self,
        model: Vggish,
        device: str,
        batch_size: int,
        pca: Pca | None = None,
        segment_span: int = SHARED_SEGMENT_PATCH_SPAN,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.pca = pca.to(device) if pca is not None else None
        self.segment_span = segment_span
        self._stages = model.stages()

    def embed(self, log_mel: np.ndarray, starts: np.ndarray, mode: VggishMode) -> np.ndarray:
        """(P, 128) float32 embeddings of the patches ``log_mel[s : s + 96]`` for each start ``s``.

        Rows outside ``log_mel`` read as silence. ``mode`` picks per-patch or shared convolutions.
        """
        starts = np.asarray(starts, dtype=np.int64)
        if starts.size == 0:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        with torch.inference_mode():
            if VggishMode(mode) is VggishMode.EXACT:
                out = self._exact(log_mel, starts)
            else:
                out = self._shared(log_mel, starts)
            if self.pca is not None:
                out = self.pca.apply(out)
            return out.float().cpu().numpy()

    def _exact(self, log_mel: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        padded, shift = _pad_for(log_mel, int(starts.min()), int(starts.max()) + PATCH_FRAMES)
        rows = np.arange(PATCH_FRAMES)
        chunks = []
        for first in range(0, starts.size, self.batch_size):
            batch = padded[(starts[first : first + self.batch_size] + shift)[:, None] + rows]
            tensor = torch.from_numpy(batch).to(self.device)[:, None]
            chunks.append(self.model(tensor))
        return torch.cat(chunks)

    def _shared(self, log_mel: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        order = np.argsort(starts, kind="stable")
        shape = (starts.size, 512, PATCH_FRAMES // TOTAL_STRIDE, N_MELS // TOTAL_STRIDE)
        trunks = torch.empty(shape, device=self.device)
        first = 0
        while first < order.size:
            span_end = starts[order[first]] + self.segment_span
            stop = int(np.searchsorted(starts[order], span_end, side="left"))
            group = order[first:stop]
            trunks[torch.from_numpy(group).to(self.device)] = self._shared_segment(log_mel, starts[group])
            first = stop
        chunks = [
            self.model.embed(trunks[i : i + self.batch_size]) for i in range(0, starts.size, self.batch_size)
        ]
        return torch.cat(chunks)

    def _shared_segment(self, log_mel: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        """Conv trunks (P, 512, 6, 4) of patches whose starts lie within one segment of the sequence."""
        # The segment begins on a multiple of the total stride, so max-pool phases relative to it equal
        # the global ones and results do not depend on where segments are cut.
        begin = (int(starts.min()) - SHARED_CONTEXT) // TOTAL_STRIDE * TOTAL_STRIDE
        end = int(starts.max()) + PATCH_FRAMES + SHARED_CONTEXT
        padded, shift = _pad_for(log_mel, begin, end)
        segment = torch.from_numpy(np.ascontiguousarray(padded[begin + shift : end + shift])).to(self.device)
        local = starts - begin
        phases = {(): segment[None, None]}  # key: pool phase bits so far; value: (1, C, T, F)
        for level, stage in enumerate(self._stages):
            needed = {_phase_bits(s, level + 1) for s in local.tolist()}
            phases = _pool_phases({key: stage(x) for key, x in phases.items()}, needed)
        out = []
        for s in local.tolist():
            x = phases[_phase_bits(s, len(self._stages))]
            position = s // TOTAL_STRIDE
            out.append(x[0, :, position : position + PATCH_FRAMES // TOTAL_STRIDE])
        return torch.stack(out)


def _phase_bits(start: int, levels: int) -> tuple[int, ...]:
    """Max-pool phase (0/1) at each of the first ``levels`` pools for a patch starting at ``start``."""
    return tuple((start >> level) & 1 for level in range(levels))


def _pool_phases(
    activations: dict[tuple[int, ...], torch.Tensor], needed: set[tuple[int, ...]]
) -> dict[tuple[int, ...], torch.Tensor]:
    """2x2 max-pool each activation at the time phases that some patch needs (frequency: phase 0)."""
    out = {}
    for key in needed:
        x = activations[key[:-1]]
        phase = key[-1]
        length = (x.shape[2] - phase) // 2 * 2
        out[key] = nn.functional.max_pool2d(x[:, :, phase : phase + length], kernel_size=2, stride=2)
    return out


def _pad_for(log_mel: np.ndarray, begin: int, end: int) -> tuple[np.ndarray, int]:
    """``log_mel`` padded with silence rows so that rows ``begin .. end`` exist; returns (array, shift)."""
    before = max(0, -begin)
    after = max(0, end - log_mel.shape[0])
    if before == 0 and after == 0:
        return log_mel, 0
    padded = np.pad(log_mel, ((before, after), (0, 0)), constant_values=silence_log_mel())
    return padded, before
