"""Reading the chosen features and the labels of videos from the store, joined on ``frame_index``.

The first feature's timeline is the video's training timeline. Other features are looked up by frame
index (they share it when extracted at the same ``dataset.fps``; rows they lack count as missing), and
so are the labels, which the manifest stage stores on the native timeline. Feature sizes are read from
the shards: a model learns them from ``resolve_inputs``, never from code.

``train.mask_audio_by_speech`` marks the audio inputs invalid (zeros, mask off) on the frames the
``speech`` extractor (Silero VAD) found no speech in: a model then sees audio features only where
somebody speaks. How many frames it masked is counted per video (``VideoData.speech_masked``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from avpipe.models.base import InputSpec
from avpipe.pipeline.config.train import FeatureSpec, Modality
from avpipe.pipeline.errors import AvpipeError, ConfigError, ExtractorError, StoreError
from avpipe.pipeline.labels import LABELS_EXTRACTOR, UNLABELED_AU, UNLABELED_EXPRESSION, FrameLabels
from avpipe.pipeline.registry import ExtractorRegistry, InputKind, default_registry
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import MaskValue

log = logging.getLogger(__name__)

SPEECH_EXTRACTOR = "speech"  # pipeline/extractors/audio/speech.py
SPEECH_ARRAY = "speech"


@dataclass
class VideoData:
    """One video on its training timeline: per-input features, their validity, the labels."""

    video_id: str
    time: np.ndarray  # (T,) float64
    frame_index: np.ndarray  # (T,) int64
    features: dict[str, np.ndarray]  # input key -> (T, D) float32
    valid: dict[str, np.ndarray]  # input key -> (T,) bool: mask not MISSING and every value finite
    labels: FrameLabels
    speech_masked: int = 0  # audio frames train.mask_audio_by_speech turned invalid

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])


def resolve_inputs(store: FeatureStore, specs: Sequence[FeatureSpec], video_id: str) -> list[InputSpec]:
    """Each feature's key, size (from ``video_id``'s shard) and modality (registry when ``auto``)."""
    registry = None
    inputs = []
    for spec in specs:
        _, values, _ = store.get(spec.extractor, video_id, spec.array)
        dim = int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1
        if spec.modality is Modality.AUTO and registry is None:
            registry = default_registry()  # imports the built-in extractor modules: only when needed
        inputs.append(InputSpec(key=spec.key, dim=dim, modality=resolve_modality(spec, registry)))
    return inputs


def resolve_modality(spec: FeatureSpec, registry: ExtractorRegistry | None) -> Modality:
    """``auto``: AUDIO extractors are audio, face/frame extractors visual (the extractor registry says)."""
    if spec.modality is not Modality.AUTO:
        return spec.modality
    try:
        cls = (registry or default_registry()).get(spec.extractor)
    except ExtractorError:
        raise ConfigError(
            "train.features",
            f"{spec.extractor!r} is not a registered extractor, so its modality is unknown; "
            "give it as {extractor: ..., modality: visual|audio}",
        ) from None
    return Modality.AUDIO if cls.input_kind is InputKind.AUDIO else Modality.VISUAL


def load_video(
    store: FeatureStore,
    specs: Sequence[FeatureSpec],
    video_id: str,
    with_labels: bool = True,
    require_labels: bool = True,
    speech_masked_keys: Sequence[str] = (),
) -> VideoData:
    """Read every feature of ``video_id`` and its labels; StoreError names the shard at fault.

    Without ``with_labels`` (prediction), or when the labels shard is absent and not ``require_labels``
    (test videos), every frame is unlabeled. The inputs in ``speech_masked_keys`` are invalid where the
    ``speech`` shard's ``speech`` array is 0 (or the speech shard lacks the frame).
    """
    time = frame_index = None
    features: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for spec in specs:
        stored = store.read(spec.extractor, video_id, [spec.array])
        values = np.asarray(stored.arrays[spec.array], dtype=np.float32).reshape(len(stored), -1)
        ok = (stored.mask != MaskValue.MISSING) & np.all(np.isfinite(values), axis=1)
        if frame_index is None:
            time, frame_index = stored.time, stored.frame_index
        elif not np.array_equal(stored.frame_index, frame_index):
            rows, found = match_frames(stored.frame_index, frame_index)
            values, ok = values[rows], ok[rows] & found
        features[spec.key] = np.where(ok[:, None], values, 0.0).astype(np.float32)
        valid[spec.key] = ok
    assert time is not None and frame_index is not None
    masked = 0
    if speech_masked_keys:
        speaking = read_speech(store, video_id, frame_index)
        for key in speech_masked_keys:
            masked += int(np.count_nonzero(valid[key] & ~speaking))
            valid[key] = valid[key] & speaking
            features[key][~speaking] = 0.0
    labels = FrameLabels.unlabeled(len(frame_index))
    if with_labels and (require_labels or store.shard_path(LABELS_EXTRACTOR, video_id).exists()):
        labels = read_labels(store, video_id, frame_index)
    return VideoData(video_id, time, frame_index, features, valid, labels, masked)


def read_speech(store: FeatureStore, video_id: str, frame_index: np.ndarray) -> np.ndarray:
    """(T,) bool: the ``speech`` extractor's segment mask at ``frame_index`` (False where it has no row)."""
    stored = store.read(SPEECH_EXTRACTOR, video_id, [SPEECH_ARRAY])
    rows, found = match_frames(stored.frame_index, frame_index)
    return found & (np.asarray(stored.arrays[SPEECH_ARRAY])[rows] != 0)


def speech_masked_inputs(specs: Sequence[FeatureSpec]) -> list[str]:
    """The keys of the audio inputs (the speech feature itself excepted) that the speech mask applies to."""
    registry = None
    keys = []
    for spec in specs:
        if spec.modality is Modality.AUTO and registry is None:
            registry = default_registry()
        if spec.extractor != SPEECH_EXTRACTOR and resolve_modality(spec, registry) is Modality.AUDIO:
            keys.append(spec.key)
    return keys


def load_videos(
    store: FeatureStore,
    specs: Sequence[FeatureSpec],
    video_ids: Iterable[str],
    with_labels: bool = True,
    require_labels: bool = True,
    mask_audio_by_speech: bool = False,
) -> tuple[list[VideoData], dict[str, str]]:
    """Every readable video, and ``{video id: why it was skipped}`` for the others (logged)."""
    skipped: dict[str, str] = {}
    videos = list(
        iter_videos(store, specs, video_ids, with_labels, require_labels, mask_audio_by_speech, skipped)
    )
    return videos, skipped


def iter_videos(
    store: FeatureStore,
    specs: Sequence[FeatureSpec],
    video_ids: Iterable[str],
    with_labels: bool = True,
    require_labels: bool = True,
    mask_audio_by_speech: bool = False,
    skipped: dict[str, str] | None = None,
) -> Iterator[VideoData]:
    """The readable videos one at a time (a table larger than memory is filled from this); the others
    are logged and recorded in ``skipped``."""
    skipped = skipped if skipped is not None else {}
    masked_keys = speech_masked_inputs(specs) if mask_audio_by_speech else []
    if mask_audio_by_speech and not masked_keys:
        raise ConfigError("train.mask_audio_by_speech", "is true but train.features has no audio feature")
    masked = n_videos = 0
    for video_id in tqdm(list(video_ids), desc="load features", unit="video", leave=False, disable=None):
        try:
            video = load_video(store, specs, video_id, with_labels, require_labels, masked_keys)
        except AvpipeError as err:
            skipped[video_id] = str(err)
            log.warning("skipping video %s: %s", video_id, err)
            continue
        masked, n_videos = masked + video.speech_masked, n_videos + 1
        yield video
    if masked_keys:
        log.info(
            "mask_audio_by_speech: %d audio frames without speech masked in %s over %d videos",
            masked,
            masked_keys,
            n_videos,
        )


def without_features(video: VideoData) -> VideoData:
    """``video``'s timeline, labels and counts without its feature arrays (what remains once tabled)."""
    return VideoData(video.video_id, video.time, video.frame_index, {}, {}, video.labels, video.speech_masked)


def match_frames(source: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each frame index in ``wanted``, its row in ``source`` (0 when absent) and whether it was found."""
    order = np.argsort(source, kind="stable")
    sorted_source = source[order]
    positions = np.clip(np.searchsorted(sorted_source, wanted), 0, max(len(source) - 1, 0))
    if len(source) == 0:
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    found = sorted_source[positions] == wanted
    return np.where(found, order[positions], 0).astype(np.int64), found


def read_labels(store: FeatureStore, video_id: str, frame_index: np.ndarray) -> FrameLabels:
    """The video's labels at ``frame_index`` (unlabeled where the labels shard has no such frame), every
    declared dimension, categorical and multi-label task included."""
    return read_labels_found(store, video_id, frame_index)[0]


def read_labels_found(
    store: FeatureStore, video_id: str, frame_index: np.ndarray
) -> tuple[FrameLabels, np.ndarray]:
    """``read_labels``, and (T,) bool: which frames of ``frame_index`` have a row in the labels shard."""
    stored = store.read(LABELS_EXTRACTOR, video_id)
    for name in ("valence_arousal", "expression", "action_units"):
        if name not in stored.arrays:
            raise StoreError(f"{store.shard_path(LABELS_EXTRACTOR, video_id)}: labels shard lacks {name!r}")
    labels = FrameLabels.from_feature_set(stored)
    rows, found = match_frames(stored.frame_index, frame_index)
    aligned = FrameLabels.unlabeled(len(frame_index))
    aligned.valence_arousal[found] = labels.valence_arousal[rows[found]]
    aligned.expression[found] = labels.expression[rows[found]]
    aligned.action_units[found] = labels.action_units[rows[found]]
    for group, fill in (
        ("dimensions", np.nan),
        ("categories", UNLABELED_EXPRESSION),
        ("multilabels", UNLABELED_AU),
        ("raters", np.nan),
    ):
        for name, values in getattr(labels, group).items():
            out = np.full((len(frame_index), *values.shape[1:]), fill, dtype=values.dtype)
            out[found] = values[rows[found]]
            getattr(aligned, group)[name] = out
    aligned.category_names = dict(labels.category_names)
    aligned.multilabel_names = dict(labels.multilabel_names)
    aligned.rater_names = dict(labels.rater_names)
    return aligned, found
