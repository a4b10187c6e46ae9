"""``dataset.labels``: which label tasks a dataset declares and how time-keyed annotations reach the frames.

A dataset declares its tasks by kind (docs/DATASETS.md):

- ``dimensions``: continuous dimensions, any names (``[valence]``, ``[valence, arousal, dominance,
  liking]``). ``valence`` and ``arousal`` fill the VA task the trainers use (either alone is fine: the
  other stays unlabeled); every other dimension is stored as its own array (``dimension.<name>``).
- ``categorical``: task name -> class names. ``expression`` (Aff-Wild2's 8 classes by default) is the
  task the trainers use; others are stored as ``category.<name>``.
- ``multilabel``: task name -> class names; each class is a 0/1 column. ``au`` (the 12 ABAW action
  units) is the trainers' task; others are stored as ``multilabel.<name>``.

Resampling of time-keyed rows onto the frame times (``resample``, per task or dimension name):

- ``linear``: a frame between two labeled samples at most ``max_gap`` apart gets the linear interpolation;
  a frame within half a sample interval before the first or after the last sample takes that sample.
- ``hold``: a frame takes the last sample at or before it, if that sample is at most ``max_gap`` older
  (sample-and-hold, as a rating joystick logged on change).
- ``nearest``: a frame takes the nearest sample if it is at most ``max_gap / 2`` away.
- ``sparse``: each sample goes to its single nearest frame (avpipe <= 0.x behaviour; 10 Hz labels on
  30 fps video then label one frame in three).

Defaults: ``linear`` for dimensions, ``nearest`` for categorical and multi-label tasks. ``max_gap`` null
means twice the median interval of the track's samples (one missing sample is bridged, no more).

``delay`` (seconds, >= 0) compensates the annotators' reaction time as the AVEC/RECOLA baselines do: the
label rated at time ``t`` describes the frame at ``t - delay`` (the label sequence is shifted back in
time; frames in the last ``delay`` seconds lose their label). Frame-keyed rows shift by
``round(delay * fps)`` frames. ``delays`` sets it per task (``{arousal: 2.0, valence: 1.2}``).

``gold_standard`` combines several raters of a dimension (``<dimension>@<rater>`` columns) when no gold
column is given: ``mean`` (the per-sample mean of the raters present) or ``ewe`` (evaluator weighted
estimator, Grimm & Kroschel 2005: each rater weighted by the Pearson correlation of their ratings with
the mean of all raters; ``ewe_reference: others`` correlates with the mean of the other raters instead)
or ``avec2016`` (the AVEC 2016 RECOLA gold standard: each rater's ratings re-centred on an agreement
weighted mean level, then averaged; pipeline/raters.py).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from avpipe.pipeline.errors import ConfigError

AU_CLASS_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
EXPRESSION_CLASS_NAMES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
TRAINER_DIMENSIONS = ("valence", "arousal")
TRAINER_CATEGORICAL = "expression"
TRAINER_MULTILABEL = "au"
RATER_SEPARATOR = "@"


class Resample(enum.StrEnum):
    LINEAR = "linear"
    HOLD = "hold"
    NEAREST = "nearest"
    SPARSE = "sparse"


class GoldStandard(enum.StrEnum):
    MEAN = "mean"
    EWE = "ewe"
    AVEC2016 = "avec2016"  # CCC centring, then the mean (the AVEC 2016 RECOLA gold standard)


class EweReference(enum.StrEnum):
    ALL = "all"  # Grimm & Kroschel: correlation with the mean of all raters
    OTHERS = "others"  # correlation with the mean of the other raters (leave-one-out)


@dataclass
class LabelConfig:
    """``dataset.labels`` (see the module docstring)."""

    dimensions: list[str] = field(default_factory=lambda: list(TRAINER_DIMENSIONS))
    categorical: dict[str, list[str]] = field(
        default_factory=lambda: {TRAINER_CATEGORICAL: list(EXPRESSION_CLASS_NAMES)}
    )
    multilabel: dict[str, list[str]] = field(
        default_factory=lambda: {TRAINER_MULTILABEL: list(AU_CLASS_NAMES)}
    )
    resample: dict[str, str] = field(default_factory=dict)
    max_gap: float | None = None
    delay: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)  # per task, overriding ``delay``
    gold_standard: str = GoldStandard.MEAN.value
    ewe_reference: str = EweReference.ALL.value

    def __post_init__(self) -> None:
        self._check_names()
        for name, rule in self.resample.items():
            if name not in self.task_names():
                raise ConfigError(
                    f"dataset.labels.resample.{name}",
                    f"no such task; declared: {', '.join(self.task_names())}",
                )
            _enum("dataset.labels.resample." + name, Resample, rule)
        if self.max_gap is not None and not (math.isfinite(self.max_gap) and self.max_gap > 0):
            raise ConfigError("dataset.labels.max_gap", f"must be > 0 seconds or null, got {self.max_gap}")
        for key, value in [("delay", self.delay), *((f"delays.{k}", v) for k, v in self.delays.items())]:
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"dataset.labels.{key}", f"must be >= 0 seconds, got {value}")
        for name in self.delays:
            if name not in self.task_names():
                raise ConfigError(
                    f"dataset.labels.delays.{name}", f"no such task; declared: {', '.join(self.task_names())}"
                )
        _enum("dataset.labels.gold_standard", GoldStandard, self.gold_standard)
        _enum("dataset.labels.ewe_reference", EweReference, self.ewe_reference)

    def _check_names(self) -> None:
        seen: dict[str, str] = {}
        columns = [("dimensions", d) for d in self.dimensions]
        columns += [(f"categorical.{t}", t) for t in self.categorical]
        columns += [(f"multilabel.{t}", c) for t, classes in self.multilabel.items() for c in classes]
        for key, name in columns:
            if not name or RATER_SEPARATOR in name or name in ("frame", "time", "clip"):
                raise ConfigError(f"dataset.labels.{key}", f"{name!r} cannot name a label column")
            if name in seen:
                raise ConfigError(
                    f"dataset.labels.{key}", f"column {name!r} is already declared by {seen[name]}"
                )
            seen[name] = key
        for kind, tasks in (("categorical", self.categorical), ("multilabel", self.multilabel)):
            for task, classes in tasks.items():
                if not classes or len(set(classes)) != len(classes):
                    raise ConfigError(f"dataset.labels.{kind}.{task}", "needs distinct class names")
        if set(self.categorical) & set(self.multilabel):
            raise ConfigError("dataset.labels.multilabel", "a task name is both categorical and multi-label")
        if list(self.categorical.get(TRAINER_CATEGORICAL, EXPRESSION_CLASS_NAMES)) != list(
            EXPRESSION_CLASS_NAMES
        ):
            raise ConfigError(
                "dataset.labels.categorical.expression",
                "is the trainers' task with Aff-Wild2's classes; declare your classes under another name",
            )
        if list(self.multilabel.get(TRAINER_MULTILABEL, AU_CLASS_NAMES)) != list(AU_CLASS_NAMES):
            raise ConfigError(
                "dataset.labels.multilabel.au",
                "is the trainers' task with the 12 ABAW units; declare your units under another name",
            )

    def task_names(self) -> list[str]:
        return [*self.dimensions, *self.categorical, *self.multilabel]

    def delay_of(self, name: str) -> float:
        return self.delays.get(name, self.delay)

    def rule(self, name: str, continuous: bool) -> Resample:
        default = Resample.LINEAR if continuous else Resample.NEAREST
        return Resample(self.resample.get(name, default))


def _enum(key: str, kind: type[enum.StrEnum], value: str) -> None:
    try:
        kind(value)
    except ValueError:
        raise ConfigError(
            key, f"unknown value {value!r}; known: {', '.join(v.value for v in kind)}"
        ) from None
