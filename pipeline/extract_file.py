"""``avpipe.extract``: the features of one media file, in memory, without DVC or a feature store.

Each feature runs through the stages' own code path (``avpipe.pipeline.extract.video_features``: the
same timeline, decoding, extractor and row checks as ``run_extractor``), with the parameters the
stage would use, so the arrays are those the stage writes to the store (tests/test_extract_file.py).
Results are pandas DataFrames with named columns (``avpipe.pipeline.tables``), plus the raw arrays
(face crops included). docs/API.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avpipe.pipeline.config import StoreConfig, build_dataclass
from avpipe.pipeline.errors import ExtractorError, MediaError
from avpipe.pipeline.extract import FACES_EXTRACTOR, ExtractionJob, uses_device, video_features
from avpipe.pipeline.registry import Extractor, ExtractorRegistry, InputKind, default_registry
from avpipe.pipeline.runner import configure_worker_threads, resolve_device
from avpipe.pipeline.tables import feature_table, joined_table
from avpipe.pipeline.types import FaceCrops, FeatureSet, Timeline

if TYPE_CHECKING:
    import pandas as pd

    from avpipe.pipeline.config import Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureRun:
    """How one feature was computed: what its shard's attributes would say, and the run's counts."""

    extractor_version: str
    params_hash: str  # the stage's parameter hash for the same parameters (store skip key)
    params_json: str
    rows: int
    valid_rows: int  # rows whose mask is not MISSING
    upsampled_audio: bool  # decoding raised the audio's sample rate (nothing above its Nyquist)


@dataclass
class ExtractedFeatures(Mapping[str, "pd.DataFrame"]):
    """The features of one file: ``result["logmel"]`` is a DataFrame (one row per frame, named columns).

    ``feature_sets`` holds each feature's arrays exactly as the stage stores them (``FeatureSet``);
    ``arrays(name)`` and ``crops(size)`` give them, images included; ``runs`` how each was computed.
    """

    path: str
    video_id: str
    feature_sets: dict[str, FeatureSet]
    runs: dict[str, FeatureRun]
    extractor_classes: dict[str, type[Extractor]] = field(default_factory=dict, repr=False)
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self.feature_sets:
            raise KeyError(f"{name!r} was not extracted; features: {', '.join(self.feature_sets)}")
        if name not in self._tables:
            cls = self.extractor_classes.get(name)
            self._tables[name] = feature_table(name, self.feature_sets[name], cls)
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.feature_sets)

    def __len__(self) -> int:
        return len(self.feature_sets)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {len(fs)} rows" for name, fs in self.feature_sets.items())
        return f"ExtractedFeatures({self.path!r}, {shapes})"

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """``time``, ``frame_index``, ``mask`` and every array of feature ``name``, as stored."""
        fs = self.feature_sets[name]
        return {"time": fs.time, "frame_index": fs.frame_index, "mask": fs.mask, **fs.arrays}

    def attrs(self, name: str) -> dict[str, Any]:
        """The extractor's own attributes of feature ``name`` (column names, counts, settings)."""
        return dict(self.feature_sets[name].attrs)

    def crops(self, size: int | None = None) -> np.ndarray:
        """Face crops (T, S, S, 3) uint8 RGB of size ``size`` (default: the first configured)."""
        if FACES_EXTRACTOR not in self.feature_sets:
            raise KeyError(f"no face crops: 'faces' was not extracted from {self.path}")
        arrays = self.feature_sets[FACES_EXTRACTOR].arrays
        sizes = [name for name in arrays if name.startswith("crops_")]
        name = sizes[0] if size is None and sizes else f"crops_{size}"
        if name not in arrays:
            raise KeyError(f"no crops of size {size} from {self.path}; sizes: {', '.join(sizes) or 'none'}")
        return arrays[name]

    def table(self, names: Sequence[str] | None = None) -> pd.DataFrame:
        """One table of several features side by side (``time``, ``frame_index``, then per feature
        ``<feature>_mask`` and its columns); one feature's table as it is."""
        return joined_table({name: self[name] for name in (names or list(self))})


def extract(
    path: str | Path,
    features: Sequence[str] | str = ("faces", "logmel", "egemaps"),
    *,
    params: Params | str | Path | None = None,
    overrides: Sequence[str] = (),
    extractors: Mapping[str, Any] | None = None,
    video_id: str | None = None,
    subject_position: str | None = None,
    registry: ExtractorRegistry | None = None,
) -> ExtractedFeatures:
    """Extract ``features`` (registered extractor names) from the media file ``path``, in this process.

    Parameters as the stages take them: ``params`` is a ``Params``, a params.yaml path, or None for
    the built-in defaults; ``overrides`` are ``--set`` strings (``"dataset.fps=25"``); ``extractors``
    maps an extractor name to its own settings (a dict of keys to change, or its config dataclass).
    ``runner.device`` and ``runner.torch_threads`` apply (torch's and OpenCV's thread counts are
    restored afterwards). A FACES extractor (face embeddings) reads the crops of ``faces``, which is
    then computed too. ``subject_position`` ("left"/"right") as the manifest's column for two-person
    videos. Raises ``MediaError`` naming the file when it cannot be read.
    """
    from avpipe.pipeline.media import probe

    names = [features] if isinstance(features, str) else list(features)
    if not names:
        raise ExtractorError("no features asked for; name at least one extractor")
    registry = registry or default_registry()
    resolved = resolve_params(params, overrides, registry)
    order = run_order(names, registry)
    unused = sorted(set(extractors or {}) - set(order))
    if unused:
        raise ExtractorError(
            f"extractors has settings for {unused[0]!r}, which is not extracted ({', '.join(order)})"
        )
    if subject_position not in (None, "left", "right"):
        raise ExtractorError(f"subject_position must be 'left', 'right' or None, got {subject_position!r}")
    media = Path(path)
    if not media.is_file():
        why = "is a directory, not a media file" if media.is_dir() else "no such file"
        raise MediaError(media, why)
    probe(media)  # a file that is not media fails here, naming itself, before any model loads
    video = {
        "video_id": video_id or media.stem,
        "media_path": str(media),
        "subject_position": subject_position,
    }
    feature_sets: dict[str, FeatureSet] = {}
    runs: dict[str, FeatureRun] = {}
    threads = ThreadCounts()
    try:
        for name in order:
            cls = registry.get(name)
            config = extractor_config(resolved, name, (extractors or {}).get(name), registry)
            job = ExtractionJob.create(
                name,
                cls,
                config,
                StoreConfig(),
                fps=resolved.dataset.fps,
                device=resolved.runner.device,
                torch_threads=resolved.runner.torch_threads,
                audio_fps=resolved.dataset.audio_fps,
                max_pixels=resolved.runner.max_pixels,
            )
            feature_sets[name], runs[name] = run_one(job, video, feature_sets, threads)
    finally:
        threads.restore()
    return ExtractedFeatures(
        path=str(media),
        video_id=video["video_id"],
        feature_sets={name: feature_sets[name] for name in order},
        runs=runs,
        extractor_classes={name: registry.get(name) for name in order},
    )


def run_order(names: Sequence[str], registry: ExtractorRegistry) -> list[str]:
    """The features to compute, faces first when a FACES extractor needs its crops; unknown names
    raise ExtractorError listing the known ones."""
    wanted = list(dict.fromkeys(names))
    kinds = {name: registry.get(name).input_kind for name in wanted}
    if any(kind is InputKind.FACES for kind in kinds.values()) and FACES_EXTRACTOR not in wanted:
        wanted.insert(0, FACES_EXTRACTOR)
    return sorted(wanted, key=lambda name: name != FACES_EXTRACTOR)


def resolve_params(
    params: Params | str | Path | None, overrides: Sequence[str], registry: ExtractorRegistry
) -> Params:
    """A ``Params``: the given one, a params file read with ``overrides``, or the built-in defaults."""
    from avpipe.pipeline.config import Params, load_params, params_from_dict

    if isinstance(params, Params):
        if overrides:
            raise ExtractorError("overrides apply to a params file or the defaults, not to a Params object")
        return params
    if params is None:
        return params_from_dict({}, overrides, registry=registry)
    return load_params(params, overrides, registry=registry)


def extractor_config(params: Params, name: str, given: Any, registry: ExtractorRegistry) -> Any:
    """The config of extractor ``name``: its params section, with the keys of ``given`` changed
    (or ``given`` itself when it is the config dataclass)."""
    base = params.extractor_config(name, registry)
    if given is None:
        return base
    cls = registry.get(name).config_class
    if isinstance(given, cls):
        return given
    if not isinstance(given, Mapping):
        raise ExtractorError(
            f"extractors[{name!r}] must be a dict of settings or a {cls.__name__}, got {type(given).__name__}"
        )
    current = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    return build_dataclass(cls, {**current, **given}, prefix=f"extractors.{name}")


def run_one(
    job: ExtractionJob, video: dict[str, Any], done: Mapping[str, FeatureSet], threads: ThreadCounts
) -> tuple[FeatureSet, FeatureRun]:
    """One extractor over one video through the stages' ``video_features``, set up as a stage's
    worker sets it up (``ExtractorPlugin``); the blocks joined."""
    extractor = job.extractor_class(job.config)
    extractor.preflight()
    threads.remember()
    configure_worker_threads(job.torch_threads, import_torch=False)
    if uses_device(job.extractor_class):
        extractor.setup(resolve_device(job.device))
        threads.remember()  # setup may have imported torch: its own count first
        configure_worker_threads(job.torch_threads)
    else:
        extractor.setup("cpu")
    computed = video_features(extractor, job, video, lambda vid, size: crops_of(done, vid, size))
    blocks = list(computed.blocks)
    features = join_blocks(blocks, computed.timeline)
    run = FeatureRun(
        extractor_version=type(extractor).version,
        params_hash=job.params_hash,
        params_json=job.params_json,
        rows=computed.counts["rows"],
        valid_rows=computed.counts["valid"],
        upsampled_audio=computed.upsampled_audio,
    )
    log.info("%s: %s, %d rows (%d valid)", video["media_path"], job.extractor, run.rows, run.valid_rows)
    return features, run


def crops_of(done: Mapping[str, FeatureSet], video_id: str, crop_size: int) -> FaceCrops:
    """The FACES input from the faces computed in this call (the stages read the same from the store)."""
    faces = done.get(FACES_EXTRACTOR)
    name = f"crops_{crop_size}"
    if faces is None or name not in faces.arrays:
        raise ExtractorError(
            f"{video_id}: no face crops of size {crop_size}; add {crop_size} to extractors.faces.sizes"
        )
    crops = faces.arrays[name]
    return FaceCrops(time=faces.time, frame_index=faces.frame_index, mask=faces.mask, crops=crops)


def join_blocks(blocks: list[FeatureSet], timeline: Timeline) -> FeatureSet:
    """The blocks as one FeatureSet, with the dtypes the store writes (``time`` float64,
    ``frame_index`` int64, ``mask`` uint8) and the last block's attributes, as the store keeps."""
    if not blocks:
        raise ExtractorError("the extractor produced no rows at all (not even an empty block)")
    rows = sum(len(block) for block in blocks)
    if rows != len(timeline):
        raise ExtractorError(f"the extractor produced {rows} rows for a {len(timeline)}-frame timeline")

    def joined(arrays: list[np.ndarray], dtype: Any = None) -> np.ndarray:
        out = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        return np.ascontiguousarray(out, dtype=dtype)

    return FeatureSet(
        time=joined([b.time for b in blocks], np.float64),
        frame_index=joined([b.frame_index for b in blocks], np.int64),
        mask=joined([b.mask for b in blocks], np.uint8),
        arrays={name: joined([b.arrays[name] for b in blocks]) for name in blocks[0].arrays},
        attrs=dict(blocks[-1].attrs),
    )


class ThreadCounts:
    """torch's and OpenCV's thread counts before the extraction set the stage's (``runner.torch_threads``),
    given back by ``restore``. torch is remembered when first seen: an extractor's ``setup`` may import it."""

    def __init__(self) -> None:
        self.torch: int | None = None
        self.cv2: int | None = None
        self.remember()

    def remember(self) -> None:
        if self.torch is None and "torch" in sys.modules:
            import torch

            self.torch = int(torch.get_num_threads())
        if self.cv2 is None:
            with contextlib.suppress(ImportError):
                import cv2

                self.cv2 = int(cv2.getNumThreads())

    def restore(self) -> None:
        if self.torch is not None:
            import torch

            torch.set_num_threads(self.torch)
        if self.cv2 is not None:
            import cv2

            cv2.setNumThreads(self.cv2)
