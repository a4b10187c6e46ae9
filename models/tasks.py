"""What the trainers train: the tasks of ``train.tasks``, resolved against the labels the data carries.

A task key names either one of the three Aff-Wild2 / ABAW tasks the presets train, or a task a dataset
declares (``dataset.labels``, or its recipe: pipeline/config/labels.py, docs/DATASETS.md) by its kind and
name, the names of the labels shard's arrays with ``:`` for ``.``:

- ``va``: valence and arousal together (two outputs), ``expr``: Aff-Wild2's 8 expressions,
  ``au``: the 12 ABAW action units;
- ``dimension:<name>``: one continuous dimension (``dimension:dominance``; ``dimension:valence`` trains
  valence alone, e.g. on a valence-only dataset);
- ``category:<name>``: a categorical task with the dataset's own class names (``category:emotion``);
- ``multilabel:<name>``: a multi-label task, one 0/1 output per class.

``train.tasks`` left empty (null) trains every task the training videos' labels carry (``data_tasks``).
A task the data does not carry is a ConfigError naming the task and the dataset.

Partially labelled frames: every label entry counts on its own. A frame with valence but no arousal trains
and scores valence (``ccc_valence``) and leaves arousal out; an action unit or multi-label class marked
unlabelled is left out of that class's loss and F1 only; a frame unlabelled for one task still trains the
others. A training window is kept when any of its frames has any label of a trained task.

The torch Dataset over the store (models/dataset.py, ``FeatureWindows``) takes the same task keys and
reads its window labels through ``task_targets`` and ``labeled_entries`` too, so a window's labels of a task
are what the trainers train on for it.

This module is torch-free: the evaluate stage and the metrics use it too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avpipe.pipeline.config.train import TASK_SEPARATOR
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import (
    AU_NAMES,
    EXPRESSION_NAMES,
    UNLABELED_AU,
    UNLABELED_EXPRESSION,
    UNLABELED_VA,
    VA_NAMES,
    FrameLabels,
    TaskKind,
)

VA, EXPR, AU = "va", "expr", "au"
SEPARATOR = TASK_SEPARATOR
UNLABELED_DIMENSION = np.nan  # the fill of a declared dimension's targets


@dataclass(frozen=True)
class TaskSpec:
    """One trained task: its key (``va``, ``category:emotion``), kind and output names (dimensions or
    classes, from the data)."""

    key: str
    kind: TaskKind
    names: tuple[str, ...]

    @property
    def value(self) -> str:
        """The key (so code written for the ``Task`` enum's ``.value`` keeps working)."""
        return self.key

    @property
    def name(self) -> str:
        """The name metrics and prediction columns use: ``va``/``expr``/``au``, or the declared name."""
        return self.key.partition(SEPARATOR)[2] or self.key

    @property
    def builtin(self) -> bool:
        return self.key in BUILTIN

    @property
    def n_outputs(self) -> int:
        return len(self.names)

    @property
    def score_metric(self) -> str:
        """The metric model selection and ``score`` add up: CCC (mean) or macro / mean F1."""
        if self.key == VA:
            return "ccc_mean"
        return f"ccc_{self.name}" if self.kind is TaskKind.CONTINUOUS else f"f1_{self.name}"

    @property
    def headline_metrics(self) -> list[str]:
        """What the results' headline (results.dir/metrics/train.json) shows of a declared task."""
        if self.kind is TaskKind.CATEGORICAL:
            return [self.score_metric, f"accuracy_{self.name}"]
        return [self.score_metric]

    @property
    def frames_metric(self) -> str:
        return f"n_frames_{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind.value, "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        return cls(str(data["key"]), TaskKind(data["kind"]), tuple(str(n) for n in data["names"]))


BUILTIN = {
    VA: TaskSpec(VA, TaskKind.CONTINUOUS, tuple(VA_NAMES)),
    EXPR: TaskSpec(EXPR, TaskKind.CATEGORICAL, tuple(EXPRESSION_NAMES)),
    AU: TaskSpec(AU, TaskKind.MULTILABEL, tuple(AU_NAMES)),
}


def as_spec(task: Any) -> TaskSpec:
    """A TaskSpec from a TaskSpec, or from a built-in task's key (``Task.VA``, ``"expr"``)."""
    if isinstance(task, TaskSpec):
        return task
    key = str(getattr(task, "value", task))
    if key not in BUILTIN:
        raise ValueError(f"task {key!r}: a declared task needs its class names; resolve it from the labels")
    return BUILTIN[key]


def as_specs(tasks: Iterable[Any]) -> list[TaskSpec]:
    return [as_spec(task) for task in tasks]


# --------------------------------------------------------------------------- targets


def unlabeled_fill(spec: TaskSpec) -> float:
    if spec.key == VA:
        return UNLABELED_VA
    if spec.kind is TaskKind.CONTINUOUS:
        return UNLABELED_DIMENSION
    return UNLABELED_EXPRESSION if spec.kind is TaskKind.CATEGORICAL else UNLABELED_AU


def target_dtype(spec: TaskSpec) -> type:
    return np.int64 if spec.kind is TaskKind.CATEGORICAL else np.float32


def target_shape(spec: TaskSpec) -> tuple[int, ...]:
    """A frame's target: (C,) values or 0/1 flags, or () for a class index."""
    return () if spec.kind is TaskKind.CATEGORICAL else (spec.n_outputs,)


def task_targets(spec: TaskSpec, labels: FrameLabels) -> np.ndarray:
    """(T, C) float32 values / flags, or (T,) int64 class indices, of ``spec`` on the labels' frames.

    ``va`` keeps -5 for unlabelled entries (each dimension its own), a declared dimension NaN, classes and
    multi-label flags -1. A task the video's labels lack is unlabelled on every frame.
    """
    n = len(labels)
    key, name = spec.key, spec.name
    if key == VA:
        return np.asarray(labels.valence_arousal, dtype=np.float32).reshape(n, 2)
    if key == EXPR:
        return np.asarray(labels.expression, dtype=np.int64)
    if key == AU:
        return np.asarray(labels.action_units, dtype=np.float32).reshape(n, -1)
    out = np.full((n, *target_shape(spec)), unlabeled_fill(spec), dtype=target_dtype(spec))
    if spec.kind is TaskKind.CONTINUOUS:
        if name in labels.dimensions:
            out[:, 0] = labels.dimensions[name]
        elif name in VA_NAMES:
            column = np.asarray(labels.valence_arousal[:, VA_NAMES.index(name)], dtype=np.float32)
            out[:, 0] = np.where(column == UNLABELED_VA, np.nan, column)
    elif spec.kind is TaskKind.CATEGORICAL and name in labels.categories:
        out[:] = labels.categories[name]
    elif spec.kind is TaskKind.MULTILABEL and name in labels.multilabels:
        values = labels.multilabels[name]
        if values.shape[1] != spec.n_outputs:
            raise ValueError(
                f"{key}: {values.shape[1]} classes in these labels, the task has {spec.n_outputs}"
            )
        out[:] = values
    return out


def labeled_entries(spec: TaskSpec, targets: np.ndarray) -> np.ndarray:
    """Bool, the shape of ``targets``: which entries hold a label."""
    if spec.key == VA:
        return targets != UNLABELED_VA
    if spec.kind is TaskKind.CONTINUOUS:
        return ~np.isnan(targets)
    return targets != (UNLABELED_EXPRESSION if spec.kind is TaskKind.CATEGORICAL else UNLABELED_AU)


def labeled_frames(spec: TaskSpec, targets: np.ndarray) -> np.ndarray:
    """(T,) bool: frames with at least one label entry of ``spec``."""
    entries = labeled_entries(spec, targets)
    return entries if entries.ndim == 1 else np.any(entries, axis=1)


def frames_with_any_label(labels: FrameLabels, keys: Sequence[str] | None) -> np.ndarray:
    """(T,) bool: frames labelled for at least one of the task ``keys`` (None: for any task at all).

    Needs no class names, so it also works before the tasks are resolved (``train.unlabeled: delete``).
    """
    if keys is None:
        return labels.labeled()
    keep = np.zeros(len(labels), dtype=bool)
    for key in keys:
        prefix, _, name = key.partition(SEPARATOR)
        if key in BUILTIN:
            keep |= labeled_frames(BUILTIN[key], task_targets(BUILTIN[key], labels))
        elif prefix == "dimension":
            keep |= labeled_frames(TaskSpec(key, TaskKind.CONTINUOUS, (name,)), _dimension(labels, key))
        elif prefix == "category" and name in labels.categories:
            keep |= labels.categories[name] != UNLABELED_EXPRESSION
        elif prefix == "multilabel" and name in labels.multilabels:
            keep |= np.any(labels.multilabels[name] != UNLABELED_AU, axis=1)
    return keep


def _dimension(labels: FrameLabels, key: str) -> np.ndarray:
    name = key.partition(SEPARATOR)[2]
    return task_targets(TaskSpec(key, TaskKind.CONTINUOUS, (name,)), labels)


# --------------------------------------------------------------------------- what the data carries


@dataclass
class TaskCatalogue:
    """The tasks the labels of some videos carry, with their labelled-frame counts."""

    specs: dict[str, TaskSpec]
    frames: dict[str, int]
    # frames with some but not all of a task's entries labelled (valence without arousal, some AUs):
    # the partial-label rule (module docstring) acts on them
    partial: dict[str, int] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return list(self.specs)


def held_tasks(labels: FrameLabels) -> list[TaskSpec]:
    """Every task ``labels`` holds an array for, whether any frame is labelled or not: ``va``, ``expr``,
    ``au``, ``dimension:valence`` and ``dimension:arousal`` (every labels shard has them), then each
    declared dimension, categorical and multi-label task with the labels' class names."""
    specs = [BUILTIN[VA], BUILTIN[EXPR], BUILTIN[AU]]
    specs += [TaskSpec(f"dimension:{n}", TaskKind.CONTINUOUS, (n,)) for n in VA_NAMES]
    specs += [TaskSpec(f"dimension:{n}", TaskKind.CONTINUOUS, (n,)) for n in labels.dimensions]
    for name in labels.categories:
        classes = tuple(labels.category_names.get(name, ()))
        specs.append(TaskSpec(f"category:{name}", TaskKind.CATEGORICAL, classes))
    for name in labels.multilabels:
        classes = tuple(labels.multilabel_names.get(name, ()))
        specs.append(TaskSpec(f"multilabel:{name}", TaskKind.MULTILABEL, classes))
    return specs


class _SpecsOfVideos:
    """Task specs gathered over videos: the first video's, each later one checked to agree with it."""

    def __init__(self) -> None:
        self.specs: dict[str, TaskSpec] = {}
        self.owner: dict[str, str] = {}

    def add(self, spec: TaskSpec, video_id: str) -> None:
        if not spec.names:
            raise ConfigError(
                "dataset.labels",
                f"the labels of video {video_id!r} hold {spec.key!r} without its class names "
                "(a labels shard written before they were stored): run `avpipe manifest` again",
            )
        known = self.specs.setdefault(spec.key, spec)
        self.owner.setdefault(spec.key, video_id)
        if known.names != spec.names:
            raise ConfigError(
                "dataset.labels",
                f"task {spec.key!r} has classes {list(known.names)} in video {self.owner[spec.key]!r} but "
                f"{list(spec.names)} in video {video_id!r}; relabel the videos with one class list",
            )


def stored_tasks(
    labels: Iterable[tuple[str, FrameLabels]], keys: Collection[str] | None = None
) -> dict[str, TaskSpec]:
    """The tasks ``labels`` (``(video id, labels)`` pairs) hold (``held_tasks``), labelled frames or not
    (e.g. to read test videos' labels), by key; only ``keys`` when given. Their class names must agree
    across videos."""
    gathered = _SpecsOfVideos()
    for video_id, video in labels:
        for spec in held_tasks(video):
            if keys is None or spec.key in keys:
                gathered.add(spec, video_id)
    return gathered.specs


def data_tasks(labels: Iterable[tuple[str, FrameLabels]]) -> TaskCatalogue:
    """Every task with at least one labelled frame in ``labels`` (``(video id, labels)`` pairs).

    ``va`` counts in a video with both dimensions labelled (on any frames); ``dimension:valence`` and
    ``dimension:arousal`` are offered on their own too. A categorical or multi-label task's class names
    must agree across videos.
    """
    frames: dict[str, int] = {}
    partial: dict[str, int] = {}
    gathered = _SpecsOfVideos()
    for video_id, video in labels:
        for spec in held_tasks(video):
            entries = labeled_entries(spec, task_targets(spec, video))
            entries = entries.reshape(len(video), -1)
            count = int(np.count_nonzero(np.any(entries, axis=1)))
            if spec.key == VA and not np.all(np.any(entries, axis=0)):
                count = 0  # va needs both dimensions in the video
            if not count:
                continue
            gathered.add(spec, video_id)
            frames[spec.key] = frames.get(spec.key, 0) + count
            some = np.any(entries, axis=1) & ~np.all(entries, axis=1)
            partial[spec.key] = partial.get(spec.key, 0) + int(np.count_nonzero(some))
    return TaskCatalogue(gathered.specs, frames, partial)


def default_tasks(catalogue: TaskCatalogue) -> list[str]:
    """``train.tasks`` left empty: every task of the data, ``va`` standing for its two dimensions."""
    keys = catalogue.keys()
    if VA in keys:
        keys = [k for k in keys if k not in {f"dimension:{n}" for n in VA_NAMES}]
    return keys


def resolve_tasks(requested: Sequence[str] | None, catalogue: TaskCatalogue, dataset: str) -> list[TaskSpec]:
    """The specs of ``requested`` (None: ``default_tasks``); a task the data lacks is a ConfigError that
    names it and ``dataset``."""
    carried = ", ".join(catalogue.keys()) or "none"
    keys = list(requested) if requested is not None else default_tasks(catalogue)
    if not keys:
        raise ConfigError("train.tasks", f"the labels of {dataset} carry no task to train (tasks: {carried})")
    specs = []
    for key in keys:
        key = str(getattr(key, "value", key))
        if key not in catalogue.specs:
            hint = ""
            if key == VA and any(f"dimension:{n}" in catalogue.specs for n in VA_NAMES):
                hint = "; va needs valence and arousal: train dimension:valence or dimension:arousal alone"
            raise ConfigError(
                "train.tasks",
                f"task {key!r} is not in the labels of {dataset}: no training or validation frame is "
                f"labelled for it (the labels carry: {carried}){hint}",
            )
        specs.append(catalogue.specs[key])
    check_distinct_names(specs)
    return specs


def check_distinct_names(specs: Sequence[TaskSpec]) -> None:
    """Metric names must not collide (``va`` and ``dimension:valence`` both report ``ccc_valence``)."""
    seen: dict[str, str] = {}
    for spec in specs:
        names = [spec.name, *((*spec.names, "mean") if spec.key == VA else ())]  # ccc_mean is va's
        for name in names:
            if name in seen and seen[name] != spec.key:
                raise ConfigError(
                    "train.tasks", f"{spec.key!r} and {seen[name]!r} both report metrics named {name!r}"
                )
            seen[name] = spec.key
