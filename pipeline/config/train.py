"""The ``train`` section of params.yaml: a dataclass tree, plus presets that fill it.

Torch-free on purpose: ``avpipe.pipeline.config`` imports this module whenever params.yaml is validated.

``train.preset`` names ``presets/<name>.yaml`` (next to params.yaml). ``resolve_train_section`` merges the
explicit ``train.*`` keys over the preset's values, so ``dvc exp run -S train.preset=jca`` switches the whole
recipe while ``-S train.epochs=5`` still overrides one value of it.

A preset's top-level keys are its ``demo`` variant (sized for a CPU and the demo dataset). Its ``paper:``
block holds the original code's settings (``settings``: train keys) and where each comes from (``cite``:
dotted key -> file:line); ``train.variant: paper`` merges those settings over the demo keys.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from avpipe.pipeline.errors import ConfigError

PRESETS_DIR = "presets"
DEFAULT_FEATURE_ARRAY = "features"
_PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PAPER_BLOCK = "paper"
VARIANTS = ("demo", "paper")


class Task(StrEnum):
    """The three Aff-Wild2 / ABAW tasks the presets train; a dataset's own tasks are named
    ``dimension:<name>``, ``category:<name>`` or ``multilabel:<name>`` (avpipe.models.tasks)."""

    VA = "va"  # valence, arousal: regression in [-1, 1]
    EXPR = "expr"  # 8-class expression
    AU = "au"  # 12 binary action units


# A task a dataset declares: <kind>:<name>, the labels shard's array name with ":" for "." (kind -> shard
# prefix; avpipe.models.tasks resolves such a key against the labels).
TASK_KIND_PREFIXES = ("dimension", "category", "multilabel")
TASK_SEPARATOR = ":"


def check_task_key(key: Any, where: str) -> str:
    """``key`` if it names a task (``va``, ``expr``, ``au``, ``dimension:<name>``, ``category:<name>``,
    ``multilabel:<name>``); ConfigError at ``where`` otherwise."""
    if isinstance(key, str) and key in {t.value for t in Task}:
        return key
    prefix, separator, name = key.partition(TASK_SEPARATOR) if isinstance(key, str) else ("", "", "")
    if not separator or prefix not in TASK_KIND_PREFIXES or not name or TASK_SEPARATOR in name or "." in name:
        raise ConfigError(
            where,
            f"unknown task {key!r}; tasks: va, expr, au, or a task the dataset declares as "
            "dimension:<name>, category:<name> or multilabel:<name> (docs/TRAINING.md)",
        )
    return key


class Modality(StrEnum):
    """Which stream a feature belongs to; fusion models treat visual and audio inputs differently."""

    AUTO = "auto"  # from the extractor registry: AUDIO extractors are audio, every other is visual
    VISUAL = "visual"
    AUDIO = "audio"


class Scheduler(StrEnum):
    """The learning-rate schedule, stepped once per epoch."""

    PLATEAU = "plateau"  # ReduceLROnPlateau on the validation score (train.plateau)
    LINEAR_WARMUP = "linear_warmup"  # 0 -> lr over warmup_epochs, then linearly to 0 at epochs (AIM3)
    CONSTANT = "constant"


class OptimizerName(StrEnum):
    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"


class VALoss(StrEnum):
    CCC = "ccc"  # 1 - CCC, per dimension (ABAW2/ABAW3 systems)
    MSE = "mse"  # AIM3-RUC ABAW4 (models/loss.py MSELoss on valence and arousal)


# kind of task (avpipe.pipeline.labels.TaskKind's values) -> the train.loss key naming its loss
LOSS_OF_KIND = {"continuous": "va", "categorical": "categorical", "multilabel": "multilabel"}


class CCCReduction(StrEnum):
    """Over which frames the CCC loss computes its moments."""

    POOLED = "pooled"  # every labelled frame of the batch at once (JCA: losses/CCC.py)
    PER_WINDOW = "per_window"  # one CCC per window, averaged (ABAW2: base/loss_function.py)


class Moments(StrEnum):
    """Divisor of a variance or covariance: n (population) or n - 1 (sample, Bessel-corrected)."""

    POPULATION = "population"
    SAMPLE = "sample"


class UnlabeledFrames(StrEnum):
    """Training frames without a label for any trained task."""

    MASK = "mask"  # kept in the windows (the model sees the context), left out of the loss
    DELETE = "delete"  # removed before windowing, so windows join labelled frames (ABAW2 preprocessing.py)


class Normalisation(StrEnum):
    """Which statistics z-score the features of a fold."""

    TRAIN = "train"  # the fold's training videos' statistics, for every video
    PER_PARTITION = "per_partition"  # each partition its own (ABAW2 calculate_mean_and_std.py, dataset.py)


class NormalisationScope(StrEnum):
    """Over which values a mean and std are taken."""

    DIMENSION = "dimension"  # each dimension of a feature its own
    FEATURE = "feature"  # one over every value of a feature (ABAW2 calculate_mean_and_std.py:29-50)


class MergeMethod(StrEnum):
    """CCC centering of the fold models' valence/arousal (avpipe.models.merge)."""

    ABAW2 = "abaw2"  # the original: sample variances, negative agreements kept
    CLIPPED = "clipped"  # negative agreements count as 0: the centre stays within the folds' means


class Shuffle(StrEnum):
    """The order of the training windows."""

    EVERY_EPOCH = "every_epoch"  # a new permutation each epoch
    ONCE = "once"  # one permutation per fold, kept for every epoch (ABAW2 experiment_regular.py:120,126)


class MSEReduction(StrEnum):
    """What the VA MSE loss is averaged over."""

    LABELLED = "labelled"  # the labelled frames
    ALL_POSITIONS = "all_positions"  # every (window, frame, dimension), unlabelled ones counting 0 (AIM3)


class Selection(StrEnum):
    """How the best epoch is chosen on the validation fold."""

    SUM = "sum"  # one model: the epoch with the best sum of the task scores (the ABAW MTL score)
    PER_TASK = "per_task"  # one checkpoint per task: each task's best epoch (AIM3-RUC ABAW4)


class MissingScore(StrEnum):
    """What a task without a validation score (no labelled validation frame: NaN) does to selection."""

    ERROR = "error"  # stop with an error naming the task and the fold
    DROP = "drop"  # warn, and select on the other tasks' scores


@dataclass
class FeatureSpec:
    """One model input: an array of one extractor's shards (``extractor:array`` in short form)."""

    extractor: str
    array: str = DEFAULT_FEATURE_ARRAY
    modality: Modality = Modality.AUTO

    def __post_init__(self) -> None:
        if not self.extractor or ":" in self.extractor:
            raise ConfigError("train.features", f"bad extractor name {self.extractor!r}")
        if not self.array or ":" in self.array:
            raise ConfigError("train.features", f"bad array name {self.array!r} of {self.extractor!r}")

    @classmethod
    def parse(cls, text: str) -> FeatureSpec:
        """``"mfcc"`` -> features of mfcc; ``"fer-minixception:logits"`` -> its ``logits`` array."""
        extractor, _, array = text.partition(":")
        return cls(extractor=extractor.strip(), array=array.strip() or DEFAULT_FEATURE_ARRAY)

    @property
    def key(self) -> str:
        """The input's name in batches, checkpoints and model configs."""
        return self.extractor if self.array == DEFAULT_FEATURE_ARRAY else f"{self.extractor}:{self.array}"


@dataclass
class ModelSpec:
    """``name`` picks the model in ``avpipe.models.registry``; its config class validates ``config``."""

    name: str = "lfan"
    config: dict[str, Any] = field(default_factory=dict)
    separate_va: bool = False  # one model per valence/arousal dimension (ABAW2, JCA)


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.ADAM
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam and adamw

    def __post_init__(self) -> None:
        _positive("train.optimizer.lr", self.lr)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError("train.optimizer.betas", f"must be two values in [0, 1), got {self.betas}")
        for key in ("weight_decay", "momentum", "grad_clip"):
            _non_negative(f"train.optimizer.{key}", getattr(self, key))


@dataclass
class PlateauConfig:
    """ReduceLROnPlateau on the validation score (higher is better)."""

    factor: float = 0.1
    patience: int = 5
    min_lr: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 < self.factor < 1.0:
            raise ConfigError("train.plateau.factor", f"must be in (0, 1), got {self.factor}")
        _at_least("train.plateau.patience", self.patience, 0)
        _non_negative("train.plateau.min_lr", self.min_lr)


@dataclass
class FoldConfig:
    """k-fold cross-validation over the train + validation videos (grouped by subject).

    With ``validation_as_fold`` the official validation set is fold 0 and the training videos are split
    into the other k - 1 folds (ABAW2: 6 folds). ``run`` limits which folds are trained (all by default).
    """

    k: int = 6
    seed: int = 0
    validation_as_fold: bool = True
    run: list[int] | None = None

    def __post_init__(self) -> None:
        _at_least("train.folds.k", self.k, 1)
        if self.k == 1 and not self.validation_as_fold:
            raise ConfigError(
                "train.folds.k", "k = 1 needs validation_as_fold: true (one fold = the validation set)"
            )
        for fold in self.run or []:
            if not 0 <= fold < self.k:
                raise ConfigError("train.folds.run", f"fold {fold} is outside 0..{self.k - 1}")

    def folds_to_run(self) -> list[int]:
        return sorted(set(self.run)) if self.run is not None else list(range(self.k))


@dataclass
class LossConfig:
    """Per-task loss weights (multi-task training) and the loss of each kind of task.

    ``va`` (continuous tasks: valence/arousal, declared dimensions), ``categorical`` (expression, declared
    categories) and ``multilabel`` (action units, declared multi-label tasks) name a loss of
    ``avpipe losses list``: a built-in one or a plug-in of the ``avpipe.losses`` entry-point group;
    ``options.<loss>`` holds a plug-in loss's own settings. The names are checked against the registry
    when training starts (``avpipe.models.losses.validate_losses``).
    """

    weights: dict[str, float] = field(default_factory=lambda: {"va": 1.0, "expr": 1.0, "au": 1.0})
    va: str = VALoss.CCC.value  # ccc | mse | a plug-in loss: the loss of continuous tasks
    categorical: str = "cross_entropy"  # cross_entropy | a plug-in loss: the loss of categorical tasks
    multilabel: str = "bce"  # bce | a plug-in loss: the loss of multi-label tasks
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # loss name -> its config keys
    ccc: CCCReduction = CCCReduction.POOLED  # the CCC loss over the batch, or per window
    variance: Moments = Moments.POPULATION  # the CCC loss's variances
    covariance: Moments = Moments.POPULATION  # the CCC loss's covariance
    mse: MSEReduction = MSEReduction.LABELLED  # va: mse only

    def __post_init__(self) -> None:
        for name, weight in self.weights.items():
            check_task_key(name, f"train.loss.weights.{name}")
            _non_negative(f"train.loss.weights.{name}", weight)
        for key in LOSS_OF_KIND.values():
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"train.loss.{key}", "must name a loss (see `avpipe losses list`)")

    def weight(self, task: Any) -> float:
        """The weight of a task (a Task, TaskSpec or key); 1 when not given."""
        return float(self.weights.get(str(getattr(task, "value", task)), 1.0))

    def loss_key(self, kind: str) -> str:
        """The key naming the loss of tasks of ``kind`` (a TaskKind value: ``continuous`` -> ``va``)."""
        return LOSS_OF_KIND[str(kind)]

    def loss_name(self, kind: str) -> str:
        """The registry name of the loss of tasks of ``kind``."""
        return str(getattr(self, self.loss_key(kind)))


@dataclass
class SelectionConfig:
    """Model selection on the validation fold (``train.selection``)."""

    mode: Selection = Selection.SUM
    missing_score: MissingScore = MissingScore.ERROR


@dataclass
class TrainConfig:
    """Everything the train, evaluate and predict stages need besides the store and the manifest."""

    preset: str | None = None
    variant: str = "demo"  # demo | paper: which of the preset's variants (module docstring)
    features: list[FeatureSpec | str] = field(
        default_factory=lambda: ["fer-minixception", "mfcc", "egemaps", "logmel"]
    )
    # task keys (avpipe.models.tasks): va | expr | au | dimension:<name> | category:<name> |
    # multilabel:<name>; None: every task the training videos' labels carry
    tasks: list[str] | None = None
    window: int = 300
    hop: int = 200
    model: ModelSpec = field(default_factory=ModelSpec)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    batch_size: int = 32
    epochs: int = 100
    patience: int = 10  # early stopping: epochs without a better validation score
    min_epochs: int = 1
    scheduler: Scheduler = Scheduler.PLATEAU
    warmup_epochs: int = 0  # linear_warmup: epochs of the warm-up
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    folds: FoldConfig = field(default_factory=FoldConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    shuffle: Shuffle = Shuffle.EVERY_EPOCH
    restore_best: bool = False  # reload the best weights after every epoch (ABAW2 load_best_at_each_epoch)
    unlabeled: UnlabeledFrames = UnlabeledFrames.MASK
    normalisation: Normalisation = Normalisation.TRAIN
    normalisation_scope: NormalisationScope = NormalisationScope.DIMENSION
    merge: MergeMethod = MergeMethod.CLIPPED  # merging the folds' valence/arousal (then clipped to [-1, 1])
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    seed: int = 0
    output_dir: str = "data/train"
    eval_dir: str = "data/evaluate"
    predictions_dir: str = "data/predictions"  # avpipe predict writes <video>.csv here
    mask_audio_by_speech: bool = False  # audio inputs invalid where the speech extractor found no speech
    table_dtype: str = "float32"  # float32 | float16: the feature table's precision (fp16 halves memory)
    table_cache: str | None = None  # a folder: the table lives there on disk, not in memory

    def __post_init__(self) -> None:
        self.features = [self._feature(item) for item in self.features]
        if not self.features:
            raise ConfigError(
                "train.features", "must list at least one feature (extractor or extractor:array)"
            )
        keys = [spec.key for spec in self.feature_specs]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ConfigError("train.features", f"{duplicates[0]!r} is listed twice")
        if self.tasks is not None:
            if not self.tasks:
                raise ConfigError(
                    "train.tasks", f"must list at least one task of {_task_names()} (or be null: the data's)"
                )
            self.tasks = [
                check_task_key(str(getattr(t, "value", t)), f"train.tasks[{i}]")
                for i, t in enumerate(self.tasks)
            ]
            if len(set(self.tasks)) != len(self.tasks):
                raise ConfigError("train.tasks", "lists a task twice")
        _at_least("train.window", self.window, 1)
        _at_least("train.hop", self.hop, 1)
        if self.hop > self.window:
            raise ConfigError(
                "train.hop", f"must be <= window ({self.window}) so that every frame is predicted"
            )
        for key in ("batch_size", "epochs", "min_epochs"):
            _at_least(f"train.{key}", getattr(self, key), 1)
        _at_least("train.patience", self.patience, 0)
        _at_least("train.warmup_epochs", self.warmup_epochs, 0)
        if self.scheduler is Scheduler.LINEAR_WARMUP and self.warmup_epochs >= self.epochs:
            raise ConfigError(
                "train.warmup_epochs", f"must be < epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        _at_least("train.threads", self.threads, 0)
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError("train.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.table_dtype not in ("float32", "float16"):
            raise ConfigError("train.table_dtype", f"must be float32 or float16, got {self.table_dtype!r}")
        for key in ("output_dir", "eval_dir"):
            if not getattr(self, key):
                raise ConfigError(f"train.{key}", "must be a non-empty path")
        if not self.model.name:
            raise ConfigError("train.model.name", "must name a model")
        if self.model.separate_va and self.tasks != [Task.VA.value]:
            raise ConfigError("train.model.separate_va", f"needs tasks [va] alone, got {self.tasks}")
        if self.variant not in VARIANTS:
            raise ConfigError("train.variant", f"must be one of {', '.join(VARIANTS)}, got {self.variant!r}")

    @staticmethod
    def _feature(item: FeatureSpec | str) -> FeatureSpec:
        return FeatureSpec.parse(item) if isinstance(item, str) else item

    @property
    def feature_specs(self) -> list[FeatureSpec]:
        """``features`` with the short string forms parsed (``__post_init__`` already did it)."""
        return [self._feature(item) for item in self.features]


# --------------------------------------------------------------------------- presets


def presets_dir(base_dir: Path) -> Path:
    return Path(base_dir) / PRESETS_DIR


def list_presets(base_dir: Path) -> list[str]:
    """Names of the presets next to params.yaml (``presets/*.yaml``)."""
    folder = presets_dir(base_dir)
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []


def read_preset(name: str, base_dir: Path) -> dict[str, Any]:
    """The train keys of ``presets/<name>.yaml``; ConfigError("train.preset") when there is none."""
    known = list_presets(base_dir)
    if not isinstance(name, str) or not _PRESET_NAME.match(name) or name not in known:
        listing = ", ".join(known) if known else f"none: {presets_dir(base_dir)} holds no .yaml file"
        raise ConfigError("train.preset", f"unknown preset {name!r}; presets: {listing}")
    path = presets_dir(base_dir) / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError("train.preset", f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError("train.preset", f"{path}: the top level must be a mapping of train keys")
    if "preset" in data:
        raise ConfigError("train.preset", f"{path}: a preset cannot name another preset")
    return data


def resolve_train_section(train_section: Any, base_dir: Path) -> dict[str, Any]:
    """The ``train`` section with its preset applied: explicit keys over the preset's values.

    Mappings merge key by key, other values (lists included) replace. When the explicit
    ``model.name`` differs from the preset's, the preset's ``model.config`` is dropped: it belongs to
    another model.
    """
    if train_section is None:
        return {}
    if not isinstance(train_section, Mapping):
        raise ConfigError("train", f"must be a mapping of keys to values, got {type(train_section).__name__}")
    explicit = dict(train_section)
    name = explicit.get("preset")
    if name is None:
        if explicit.get("variant", "demo") != "demo":
            raise ConfigError("train.variant", "a variant other than demo needs a train.preset")
        return explicit
    preset = apply_variant(read_preset(name, Path(base_dir)), explicit.get("variant", "demo"), name)
    explicit_model = explicit.get("model")
    preset_model = preset.get("model")
    if (
        isinstance(explicit_model, Mapping)
        and isinstance(preset_model, Mapping)
        and "name" in explicit_model
        and explicit_model["name"] != preset_model.get("name")
    ):
        preset = {**preset, "model": {key: v for key, v in preset_model.items() if key != "config"}}
    return _deep_merge(preset, explicit)


def apply_variant(preset: Mapping[str, Any], variant: Any, name: str) -> dict[str, Any]:
    """The preset's train keys for ``variant``: the top level (demo), or its paper settings over them."""
    values = {key: value for key, value in preset.items() if key != PAPER_BLOCK}
    if variant == "demo":
        return values
    if variant != "paper":
        raise ConfigError("train.variant", f"must be one of {', '.join(VARIANTS)}, got {variant!r}")
    paper = preset.get(PAPER_BLOCK)
    if not isinstance(paper, Mapping) or not isinstance(paper.get("settings"), Mapping):
        raise ConfigError("train.variant", f"preset {name!r} has no paper.settings block")
    settings = paper["settings"]
    demo_model, paper_model = values.get("model"), settings.get("model")
    if (
        isinstance(demo_model, Mapping)
        and isinstance(paper_model, Mapping)
        and paper_model.get("name", demo_model.get("name")) != demo_model.get("name")
    ):
        values["model"] = {k: v for k, v in demo_model.items() if k != "config"}  # another model's
    return _deep_merge(values, settings)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------- value checks


def _task_names() -> str:
    return ", ".join(t.value for t in Task) + ", dimension:<name>, category:<name>, multilabel:<name>"


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(key, f"must be >= {low}, got {value}")


def _positive(key: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(key, f"must be > 0, got {value}")


def _non_negative(key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(key, f"must be >= 0, got {value}")
