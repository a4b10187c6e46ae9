"""Build the manifest: probe every annotated video, write the manifest, its failures and per-frame labels.

For each candidate the dataset adapter finds: read its label files, probe the media, list its native
frames, align the labels to them, and write the ``labels`` shard (skipped when the shard already holds
the same label-file contents, alignment version and media file). One bad file becomes one failures row;
the run goes on. Corpora of many files run on the Dask cluster in batches (pipeline/candidates.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from avpipe.pipeline.adapters import Candidate, DatasetAdapter, create_adapter
from avpipe.pipeline.adapters.base import distinct_ids
from avpipe.pipeline.candidates import map_candidates
from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.errors import AvpipeError, LabelError, MediaError
from avpipe.pipeline.fingerprint import media_fingerprint, params_hash, params_json
from avpipe.pipeline.labels import (
    ALIGNMENT_VERSION,
    AU_NAMES,
    EXPRESSION_NAMES,
    LABELS_EXTRACTOR,
    FrameLabels,
    RawLabels,
    align_labels,
    task_name,
)
from avpipe.pipeline.manifest import Failure, FailureStage, ManifestRow, write_failures, write_manifest
from avpipe.pipeline.media import probe
from avpipe.pipeline.store import FeatureStore, ShardStatus
from avpipe.pipeline.timeline import media_timeline
from avpipe.pipeline.types import MediaInfo, Timeline

log = logging.getLogger(__name__)


@dataclass
class ManifestReport:
    """What a manifest run produced."""

    rows: list[ManifestRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    labels_written: int = 0
    labels_skipped: int = 0
    label_actions: Counter = field(default_factory=Counter)  # resampling/repair rule -> times it acted
    label_actions_by_video: dict[str, Counter] = field(default_factory=dict)
    renamed_ids: int = 0  # videos whose id got their extension (or ~N) to keep ids unique
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"manifest: {len(self.rows)} videos, {len(self.failures)} failed; labels: "
            f"{self.labels_written} written, {self.labels_skipped} already stored; "
            f"{self.renamed_ids} ids made unique ({self.seconds:.1f}s)"
            + "".join(f"; {action}: {count}" for action, count in sorted(self.label_actions.items()))
        )


@dataclass
class _Outcome:
    """The result of one candidate: a row (and whether its labels shard was written) or a failure."""

    row: ManifestRow | None = None
    failure: Failure | None = None
    labels_entry: dict | None = None  # the index entry of the labels shard written, None if skipped
    label_actions: Counter = field(default_factory=Counter)


def build_manifest(
    dataset: DatasetConfig,
    manifest: ManifestConfig,
    store: StoreConfig,
    runner: RunnerConfig | None = None,
) -> ManifestReport:
    """Scan, probe and label every video of the dataset; write the manifest and failures CSVs."""
    started = time.perf_counter()
    root = dataset.require_root()
    adapter = create_adapter(
        dataset.adapter,
        root,
        video_extensions=dataset.video_extensions,
        labels=dataset.labels,
        **dataset.options,
    )
    scan = adapter.scan()
    candidates, renamed = distinct_ids(scan.candidates)
    feature_store = FeatureStore(
        store.root, compression=store.compression.value, chunk_frames=store.chunk_frames
    )
    feature_store.cleanup_temp(LABELS_EXTRACTOR)
    report = ManifestReport(failures=list(scan.failures), renamed_ids=renamed)
    owner = LabelsOwner(dataset_identity(root), store.replace_other_dataset)
    _index_upkeep(feature_store.sync_index)

    def lost(candidate: Candidate, reason: str) -> None:
        report.failures.append(Failure(str(candidate.media_path), FailureStage.PROBE.value, reason))

    try:
        map_candidates(
            _process_candidate,
            (adapter, feature_store, dataset.audio_fps, owner),
            candidates,
            lambda outcome: _collect(report, outcome, feature_store),
            lost,
            runner,
            desc="manifest",
        )
    finally:
        # Once for every labels shard renamed in this run (a rename lost to a power loss before this
        # is a missing shard that the next run's sync_index drops from the index and rewrites).
        _index_upkeep(feature_store.sync_folder)
        _index_upkeep(feature_store.compact_index)
    report.rows.sort(key=lambda row: row.video_id)
    report.failures.sort(key=lambda failure: (failure.path, failure.stage))
    write_manifest(report.rows, manifest.path)
    write_failures(report.failures, manifest.failures)
    report.seconds = time.perf_counter() - started
    log.info("%s", report.summary())
    for failure in report.failures:
        log.warning("failed (%s): %s: %s", failure.stage, failure.path, failure.reason)
    return report


def _index_upkeep(step: Callable[[str], object]) -> None:
    """Index or folder upkeep of the labels store (sync, fsync, compact); a full disk there is not fatal
    (the index is a cache that the shards can always rebuild, and its log stays valid)."""
    try:
        step(LABELS_EXTRACTOR)
    except OSError as err:
        log.warning("labels index: %s failed: %s", step.__name__, err)


def _collect(report: ManifestReport, outcome: _Outcome, store: FeatureStore) -> None:
    """Driver side: keep the row or failure; index the new labels shard (the index has one writer)."""
    if outcome.failure is not None:
        report.failures.append(outcome.failure)
        return
    assert outcome.row is not None
    report.rows.append(outcome.row)
    report.label_actions.update(outcome.label_actions)
    report.label_actions_by_video[outcome.row.video_id] = outcome.label_actions
    if outcome.labels_entry is not None:
        try:
            store.record(LABELS_EXTRACTOR, outcome.row.video_id, outcome.labels_entry)
        except OSError as err:  # the shard is kept; the next run's sync_index indexes it
            log.warning("%s: labels shard written but not indexed: %s", outcome.row.video_id, err)
        report.labels_written += 1
    else:
        report.labels_skipped += 1


@dataclass(frozen=True)
class LabelsOwner:
    """Which dataset this run's labels shards come from, and whether another dataset's may be replaced."""

    dataset: str = ""
    replace_other_dataset: bool = False


def dataset_identity(root: Path) -> str:
    """A dataset is its root folder (absolute): the provenance every labels shard records."""
    return str(Path(root).resolve())


def _process_candidate(
    adapter: DatasetAdapter,
    store: FeatureStore,
    audio_fps: float | None,
    owner: LabelsOwner,
    candidate: Candidate,
) -> _Outcome:
    return process_candidate(adapter, candidate, store, audio_fps, owner)


def process_candidate(
    adapter: DatasetAdapter,
    candidate: Candidate,
    store: FeatureStore,
    audio_fps: float | None = None,
    owner: LabelsOwner = LabelsOwner(),
) -> _Outcome:
    """One video: labels, probe, native timeline, aligned labels shard. Never raises for bad input.

    ``audio_fps`` (dataset.audio_fps) admits files without a video stream, on a grid at that rate.
    ``owner``: the dataset the labels shard records, and whether another dataset's may be replaced."""
    media = str(candidate.media_path)
    stage = FailureStage.LABELS
    try:
        raw = adapter.read_labels(candidate) if candidate.labels or candidate.label_text else RawLabels()
        stage = FailureStage.PROBE
        info = _probe_video(media, audio_fps)
        stage = FailureStage.TIMELINE
        timeline = _native_timeline(media, info, audio_fps)
        frame_labels, note = align_labels(raw, timeline, getattr(adapter, "label_config", None))
        if note:
            log.warning("%s: %s", candidate.video_id, note)
        row = _manifest_row(candidate, info, timeline, frame_labels, raw, note, audio_fps)
        stage = FailureStage.STORE
        entry = _store_labels(
            store, candidate, timeline, frame_labels, note, getattr(adapter, "label_config", None), owner
        )
    except LabelError as err:
        return _Outcome(failure=Failure(err.path, stage.value, f"{candidate.video_id}: {err.reason}"))
    except MediaError as err:
        return _Outcome(failure=Failure(err.path, stage.value, err.reason))
    except AvpipeError as err:
        return _Outcome(failure=Failure(media, stage.value, str(err)))
    except Exception as err:  # one broken file must not stop the run; the report keeps the error type
        log.debug("%s failed", media, exc_info=True)
        return _Outcome(failure=Failure(media, stage.value, f"{type(err).__name__}: {err}"))
    return _Outcome(row=row, labels_entry=entry, label_actions=frame_labels.actions)


def _probe_video(path: str, audio_fps: float | None = None) -> MediaInfo:
    info = probe(path)
    if info.video is None and audio_fps is None:
        raise MediaError(
            path, "has no video stream (audio only; set dataset.audio_fps to use audio-only files)"
        )
    return info


def _native_timeline(path: str, info: MediaInfo, audio_fps: float | None = None) -> Timeline:
    timeline = media_timeline(path, fps=None, audio_fps=audio_fps, info=info)
    if len(timeline) == 0:
        raise MediaError(path, "has no decodable video frames")
    return timeline


def _manifest_row(
    candidate: Candidate,
    info: MediaInfo,
    timeline: Timeline,
    frame_labels: FrameLabels,
    raw: RawLabels,
    note: str,
    audio_fps: float | None = None,
) -> ManifestRow:
    row = ManifestRow(
        video_id=candidate.video_id,
        media_path=str(candidate.media_path),
        subject=candidate.subject,
        subject_position=candidate.subject_position,
        split=candidate.split,
        labels={task_name(task): str(path) for task, path in candidate.labels.items()},
        label_rows={track.name: len(track) for track in raw.tracks},
        labeled_frames=int(frame_labels.labeled().sum()),
        notes="; ".join([*candidate.notes, *([note] if note else [])]),
    )
    return row.with_probe(info, n_frames=len(timeline), audio_fps=audio_fps)


def labels_hash(candidate: Candidate, config: LabelConfig | None = None) -> str:
    """What a labels shard depends on besides the media: label file contents, the declared tasks and
    resampling rules (dataset.labels) and the alignment rule."""
    contents = {
        task_name(task): hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for task, path in candidate.labels.items()
    }
    rules = dataclasses.asdict(config or LabelConfig())
    inline = {"label_text": candidate.label_text} if candidate.label_text else {}
    return params_hash({"labels": contents, "rules": rules, **inline}, ALIGNMENT_VERSION)


def _store_labels(
    store: FeatureStore,
    candidate: Candidate,
    timeline: Timeline,
    frame_labels: FrameLabels,
    note: str,
    config: LabelConfig | None = None,
    owner: LabelsOwner = LabelsOwner(),
) -> dict | None:
    """Write the labels shard unless an identical one is stored; its index entry when written. A shard
    another dataset wrote is not replaced (StoreError: this video fails) unless ``owner`` allows it."""
    digest = labels_hash(candidate, config)
    fingerprint = media_fingerprint(candidate.media_path)
    status = store.status(LABELS_EXTRACTOR, candidate.video_id, digest, fingerprint, verify_data=True)
    if status is ShardStatus.STORED:  # labels shards are small: always read in full before trusting one
        return None
    store.check_dataset(LABELS_EXTRACTOR, candidate.video_id, owner.dataset, owner.replace_other_dataset)
    sources = {task_name(task): str(path) for task, path in candidate.labels.items()}
    features = frame_labels.to_feature_set(
        timeline,
        attrs={
            "tasks": sorted(sources),
            "label_files": sources,
            "alignment_note": note,
            "expression_names": list(EXPRESSION_NAMES),
            "au_names": list(AU_NAMES),
        },
    )
    written = store.write_shard(
        LABELS_EXTRACTOR,
        candidate.video_id,
        [features],
        len(features),
        extractor_version=ALIGNMENT_VERSION,
        params_hash=digest,
        params_json=params_json({"label_files": sources, "alignment_version": ALIGNMENT_VERSION}),
        media_fingerprint=fingerprint,
        sync_folder=False,  # build_manifest syncs the labels folder once, at the end
        dataset=owner.dataset,
    )
    return written.entry
