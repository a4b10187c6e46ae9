"""The ``speech`` extractor: voice activity per video frame from Silero VAD (docs/AUDIO.md).

Silero VAD (MIT licence) ships its TorchScript weights inside the ``silero-vad`` wheel, so this runs
offline with real pretrained weights. The model scores consecutive 32 ms windows (512 samples at
16 kHz, 256 at 8 kHz; each also sees the 64/32 samples before it) with a recurrent state carried from
window to window (``audio_forward``). Outputs, on the video frames:

- ``features`` (T, 1): the speech probability, the mean of the windows whose centres fall in the
  frame's cell (``align: mean``) or the nearest window (``nearest``);
- ``speech`` (T,) uint8: 1 where the frame time lies inside a speech segment found by Silero's own
  ``get_speech_timestamps_from_probs`` (threshold with hysteresis, shortest speech and silence,
  padding: silero_vad/utils_vad.py, the function of that name), so short pauses inside a sentence
  stay speech. Trainers use it through ``train.mask_audio_by_speech``.

The window probabilities and segments are reproduced exactly as Silero computes them; the attrs count
the segments and the frames they cover (what the segmentation heuristic decided).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.align import AlignMethod
from avpipe.pipeline.errors import ConfigError, ExtractorError
from avpipe.pipeline.extractors.audio.common import NativeFeatures, features_on_timeline, prepare_track
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import AudioTrack, FeatureSet, Timeline, VideoContext

log = logging.getLogger(__name__)

SILERO_RATES = {16000: 512, 8000: 256}  # sample rate -> window length in samples
SILERO_CONTEXT = {16000: 64, 8000: 32}  # samples before each window the model also sees


@dataclass
class SpeechConfig:
    """``extractors.speech`` in params.yaml (defaults: Silero's ``get_speech_timestamps``)."""

    sample_rate: int = 16000  # Silero runs at 8000 or 16000 Hz; other tracks are resampled to this
    align: AlignMethod = AlignMethod.MEAN
    threshold: float = 0.5  # a window at or above starts speech
    neg_threshold: float | None = None  # below it speech may end; null: threshold - 0.15 (Silero's rule)
    min_speech_ms: int = 250  # shorter segments are dropped
    min_silence_ms: int = 100  # shorter pauses stay inside the segment
    speech_pad_ms: int = 30  # each segment widened by this much on both sides

    def __post_init__(self) -> None:
        if self.sample_rate not in SILERO_RATES:
            raise ConfigError(
                "extractors.speech.sample_rate",
                f"Silero VAD runs at 8000 or 16000 Hz, got {self.sample_rate}",
            )
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("extractors.speech.threshold", f"must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0.0 < self.neg_threshold <= self.threshold:
            raise ConfigError(
                "extractors.speech.neg_threshold",
                f"must be in (0, threshold={self.threshold}], got {self.neg_threshold}",
            )
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"extractors.speech.{name}", f"must be >= 0, got {getattr(self, name)}")


def silero_weights_path() -> Path:
    """The TorchScript file inside the installed silero-vad wheel (found without importing it:
    importing ``silero_vad`` sets torch's thread count to 1 for the whole process)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ExtractorError("speech: the silero-vad package is not installed (pip install silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise ExtractorError(f"speech: {path} is missing from the silero-vad installation")
    return path


def load_silero() -> Any:
    import torch

    path = silero_weights_path()
    try:
        with warnings.catch_warnings():  # Silero ships TorchScript; torch's deprecation notice is noise here
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # a truncated or foreign file: name it
        raise ExtractorError(f"speech: cannot load the Silero VAD weights {path}: {err}") from err
    return model.eval()


def window_probabilities(model: Any, samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Speech probability of each consecutive Silero window (the last one zero-padded), as Silero's
    ``audio_forward`` computes it: one pass, recurrent state carried across windows."""
    import torch

    # One thread, as Silero runs itself: ~2 000 tiny sequential steps per minute of audio, where
    # waking a second thread costs more than it gives (measured 20-40x slower with 2 threads on a
    # busy 2-core machine). The caller's setting is put back.
    window = SILERO_RATES[sample_rate]
    if samples.shape[0] < window:  # Silero refuses inputs shorter than one window; it pads the tail itself
        samples = np.pad(samples, (0, window - samples.shape[0]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            probs = model.audio_forward(torch.from_numpy(np.ascontiguousarray(samples))[None], sample_rate)
    finally:
        torch.set_num_threads(threads)
    return probs[0].float().numpy()


def speech_segments(probs: np.ndarray, n_samples: int, cfg: SpeechConfig) -> list[tuple[int, int]]:
    """``[start, end)`` sample ranges of speech by Silero's own post-processing of the probabilities."""
    get_speech_timestamps_from_probs = silero_postprocessing()
    found = get_speech_timestamps_from_probs(
        probs.tolist(),
        threshold=cfg.threshold,
        neg_threshold=cfg.neg_threshold,
        sampling_rate=cfg.sample_rate,
        min_speech_duration_ms=cfg.min_speech_ms,
        min_silence_duration_ms=cfg.min_silence_ms,
        speech_pad_ms=cfg.speech_pad_ms,
        audio_length_samples=n_samples,
    )
    return [(int(s["start"]), int(s["end"])) for s in found]


def silero_postprocessing() -> Any:
    """Silero's ``get_speech_timestamps_from_probs``. Importing the package runs
    ``torch.set_num_threads(1)`` (silero_vad/model.py, line 3): the worker's setting is put back."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad.utils_vad import get_speech_timestamps_from_probs
    finally:
        torch.set_num_threads(threads)
    return get_speech_timestamps_from_probs


def segments_mask(segments: list[tuple[int, int]], track: AudioTrack, frame_times: np.ndarray) -> np.ndarray:
    """1 at each frame time inside a segment (container clock), else 0."""
    inside = np.zeros(frame_times.shape[0], dtype=np.uint8)
    for start, end in segments:
        lo, hi = track.start + start / track.sample_rate, track.start + end / track.sample_rate
        inside[(frame_times >= lo) & (frame_times < hi)] = 1
    return inside


@register_extractor
class SpeechExtractor(Extractor):
    name = "speech"
    version = "1"
    input_kind = InputKind.AUDIO
    config_class = SpeechConfig
    description = "Silero VAD speech probability per video frame and a speech-segment mask"

    def __init__(self, config: SpeechConfig | None = None) -> None:
        super().__init__(config)
        self._model: Any = None

    @property
    def feature_dim(self) -> int:
        return 1

    @property
    def frame_shift(self) -> float | None:
        return SILERO_RATES[self.config.sample_rate] / self.config.sample_rate

    def preflight(self) -> None:
        silero_weights_path()

    def setup(self, device: str) -> None:
        # Silero is a tiny recurrent model run window by window: the CPU is faster than a GPU launch.
        self._model = load_silero()
        log.info("Silero VAD loaded from %s", silero_weights_path())

    def extract(self, source: AudioTrack | None, timeline: Timeline, context: VideoContext) -> FeatureSet:
        cfg: SpeechConfig = self.config
        track = prepare_track(source, cfg.sample_rate, context)
        frame_times = np.asarray(timeline.time, dtype=np.float64)
        if track is None:
            fs = features_on_timeline(None, None, timeline, cfg.align, 1, self.attrs([], 0))
            fs.arrays["speech"] = np.zeros(len(frame_times), dtype=np.uint8)
            return fs
        if self._model is None:
            self.setup("cpu")
        window = SILERO_RATES[cfg.sample_rate]
        probs = window_probabilities(self._model, track.samples, cfg.sample_rate)
        times = track.start + (np.arange(probs.shape[0]) * window + window / 2.0) / cfg.sample_rate
        segments = speech_segments(probs, track.samples.shape[0], cfg)
        native = NativeFeatures(values=probs[:, None].astype(np.float32), times=times)
        fs = features_on_timeline(native, track, timeline, cfg.align, 1, {})
        speech = segments_mask(segments, track, frame_times) * (fs.mask != 0)
        fs.arrays["speech"] = speech.astype(np.uint8)
        fs.attrs.update(self.attrs(segments, int(speech.sum())))
        return fs

    def attrs(self, segments: list[tuple[int, int]], speech_frames: int) -> dict[str, Any]:
        cfg: SpeechConfig = self.config
        return {
            "sample_rate": cfg.sample_rate,
            "native_hop": SILERO_RATES[cfg.sample_rate] / cfg.sample_rate,
            "feature_names": ["speech_probability"],
            "model": f"silero-vad {silero_version()}",
            "threshold": cfg.threshold,
            "segments": len(segments),
            "speech_frames": speech_frames,
        }


def silero_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("silero-vad")
    except PackageNotFoundError:
        return "not installed"
