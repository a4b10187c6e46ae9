"""The ``vggish`` extractor: 128-d VGGish embeddings of 0.96 s log-mel patches, one per video frame.

By default (``hop: null``) each video frame inside the audio track gets the patch whose centre is
nearest to the frame time (within 5 ms). With ``hop`` in seconds, patches start every ``hop`` from the
first sample (complete patches only, at least one), as torchvggish frames a file when ``hop`` is
0.96, and are aligned to the frames with ``align``. Rows outside the track have mask 0; patch rows that
fall outside the track read as silence, and ``coverage`` (T,) says which fraction of each frame's
patch is real audio. The network, frontend and weights handling live in ``vggish_net`` (torch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from avpipe.pipeline.align import AlignMethod
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.extractors.audio.common import NativeFeatures, features_on_timeline, prepare_track
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext

log = logging.getLogger(__name__)

VGGISH_SAMPLE_RATE = 16000
EMBEDDING_SIZE = 128


class VggishMode(StrEnum):
    """How the conv stack runs over overlapping patches (docs/AUDIO.md).

    ``exact``: each patch alone, identical to torchvggish. ``shared``: one conv pass over the track's
    continuous log-mel per max-pool phase, each patch cut from it (patches see 0.27 s of context past
    their edges instead of zero padding; several times faster at a one-frame hop).
    """

    EXACT = "exact"
    SHARED = "shared"


@dataclass
class VggishConfig:
    """``extractors.vggish`` in params.yaml."""

    sample_rate: int = VGGISH_SAMPLE_RATE  # VGGish's frontend is defined at 16 kHz only
    align: AlignMethod = AlignMethod.NEAREST  # used when ``hop`` is set
    checkpoint: str | None = None  # local path to vggish-10086976.pth (torchvggish release)
    pca_params: str | None = None  # local path to vggish_pca_params-970ea276.pth; null: no PCA
    quantize: bool = False  # 8-bit quantisation after PCA, as the AudioSet release embeddings
    hop: float | None = None  # seconds between patches; null: one patch centred on each video frame
    mode: VggishMode = VggishMode.EXACT
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.sample_rate != VGGISH_SAMPLE_RATE:
            raise ConfigError(
                "extractors.vggish.sample_rate",
                f"VGGish's input frontend is defined at {VGGISH_SAMPLE_RATE} Hz, got {self.sample_rate}",
            )
        if self.hop is not None and not self.hop >= 0.01:
            raise ConfigError(
                "extractors.vggish.hop", f"must be null or >= 0.01 s (one log-mel frame), got {self.hop}"
            )
        if self.batch_size < 1:
            raise ConfigError("extractors.vggish.batch_size", f"must be >= 1, got {self.batch_size}")
        if self.quantize and self.pca_params is None:
            raise ConfigError(
                "extractors.vggish.quantize", "quantisation follows the PCA: set pca_params too"
            )


@register_extractor
class VggishExtractor(Extractor):
    name = "vggish"
    version = "1"
    input_kind = InputKind.AUDIO
    config_class = VggishConfig
    description = "VGGish 128-d embeddings of 0.96 s log-mel patches, one patch per video frame"

    def __init__(self, config: VggishConfig | None = None) -> None:
        super().__init__(config)
        self._runner: Any = None

    @property
    def feature_dim(self) -> int:
        return EMBEDDING_SIZE

    @property
    def frame_shift(self) -> float | None:
        return self.config.hop

    def preflight(self) -> None:
        """Stop before any video if the weights are missing or are not a VGGish state-dict."""
        from avpipe.pipeline.extractors.audio import vggish_net

        vggish_net.load_vggish(self.config.checkpoint)
        if self.config.pca_params is not None:
            vggish_net.load_pca(self.config.pca_params, self.config.quantize)

    def setup(self, device: str) -> None:
        from avpipe.pipeline.extractors.audio import vggish_net

        cfg: VggishConfig = self.config
        # preflight (on the driver) already warned about random weights: one warning per run, not per worker
        model = vggish_net.load_vggish(cfg.checkpoint, warn=False)
        pca = vggish_net.load_pca(cfg.pca_params, cfg.quantize) if cfg.pca_params is not None else None
        self._runner = vggish_net.VggishRunner(model, device, cfg.batch_size, pca)
        log.info("VGGish loaded from %s on %s (mode %s)", cfg.checkpoint, device, VggishMode(cfg.mode).value)

    def extract(self, source: AudioTrack | None, timeline: Timeline, context: VideoContext) -> FeatureSet:
        from avpipe.pipeline.extractors.audio import spectral, vggish_net

        cfg: VggishConfig = self.config
        track = prepare_track(source, VGGISH_SAMPLE_RATE, context)
        if track is None:
            return features_on_timeline(None, None, timeline, cfg.align, EMBEDDING_SIZE, self.attrs())
        if self._runner is None:
            self.setup("cpu")
        samples = spectral.pad_to_window(track.samples, vggish_net.WINDOW_SAMPLES)
        log_mel = vggish_net.log_mel_frames(samples)
        starts, times, method = self._patches(track, timeline, log_mel.shape[0])
        embeddings = self._runner.embed(log_mel, starts, VggishMode(cfg.mode))
        real_rows = np.minimum(starts + vggish_net.PATCH_FRAMES, log_mel.shape[0]) - np.maximum(starts, 0)
        coverage = (np.clip(real_rows, 0, None) / vggish_net.PATCH_FRAMES).astype(np.float32)[:, None]
        native = NativeFeatures(values=embeddings, times=times)
        extra = {"coverage": (NativeFeatures(values=coverage, times=times), method)}
        fs = features_on_timeline(native, track, timeline, method, EMBEDDING_SIZE, self.attrs(), extra)
        fs.arrays["coverage"] = fs.arrays["coverage"][:, 0]
        return fs

    def _patches(
        self, track: AudioTrack, timeline: Timeline, n_frames: int
    ) -> tuple[np.ndarray, np.ndarray, AlignMethod]:
        """Patch start rows, the container-clock time each patch stands for, and how to align them."""
        from avpipe.pipeline.extractors.audio import vggish_net

        cfg: VggishConfig = self.config
        if cfg.hop is None:
            frame_times = np.asarray(timeline.time, dtype=np.float64)
            inside = frame_times[(frame_times >= track.start) & (frame_times < track.end)]
            # Each patch stands for its own frame: nearest alignment maps it back exactly.
            return vggish_net.patch_start_for(inside - track.start), inside, AlignMethod.NEAREST
        hop_rows = max(1, round(cfg.hop / vggish_net.FRAME_HOP))
        n_patches = max(1, 1 + (n_frames - vggish_net.PATCH_FRAMES) // hop_rows)
        starts = np.arange(n_patches, dtype=np.int64) * hop_rows
        return starts, track.start + vggish_net.patch_centre(starts), cfg.align

    def attrs(self) -> dict[str, Any]:
        cfg: VggishConfig = self.config
        return {
            "sample_rate": VGGISH_SAMPLE_RATE,
            "patch_seconds": 0.96,
            "hop": cfg.hop if cfg.hop is not None else "frame",
            "mode": VggishMode(cfg.mode).value,
            "pca": cfg.pca_params is not None,
            "quantized": cfg.quantize,
        }
