"""params.yaml -> typed, validated dataclasses, once.

``avpipe.pipeline.params.load_params(path, overrides)`` is the only place that reads params, with the helpers
here (``read_params``, ``apply_overrides``, ``build_dataclass``). Every section is a dataclass;
``build_dataclass`` fills one from a mapping and rejects unknown keys, wrong types and bad values with
a ``ConfigError`` naming the dotted key. Extractor sections (``extractors.<name>``) are validated
against the config class of the registered extractor of that name.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from avpipe.pipeline.errors import ConfigError

DEFAULT_PARAMS = "params.yaml"


class Compression(enum.StrEnum):
    NONE = "none"
    LZF = "lzf"
    GZIP = "gzip"


@dataclass
class StoreConfig:
    """Where and how feature shards are written (docs/FORMAT.md)."""

    root: str = "data/features"
    compression: Compression = Compression.LZF
    chunk_frames: int = 256
    # A shard records the dataset its video came from; one from another dataset is only replaced
    # when this is true (two datasets sharing a store and a video id would silently mix otherwise).
    replace_other_dataset: bool = False
    # Before trusting a stored shard the index cannot vouch for (changed size or mtime, unknown), read
    # every data chunk against its checksum: a damaged one is CORRUPT and recomputed. False: attributes.
    verify_data: bool = True
    # > 1: the videos of a batched task (runner.task_seconds) go into multi-video shards of up to
    # this many videos (docs/FORMAT.md); 1: one shard file per video.
    videos_per_shard: int = 1

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ConfigError("store.chunk_frames", f"must be >= 1, got {self.chunk_frames}")
        if self.videos_per_shard < 1:
            raise ConfigError("store.videos_per_shard", f"must be >= 1, got {self.videos_per_shard}")


@dataclass
class RunnerConfig:
    """How per-video work is spread over Dask workers (docs/SCALING.md)."""

    n_workers: int = 2
    threads_per_worker: int = 1
    torch_threads: int = 1
    scheduler_address: str | None = None  # e.g. tcp://host:8786; None starts a LocalCluster
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    fail_on_error: bool = False  # exit non-zero when any video failed
    reports: str = "data/reports"
    memory_limit: str = "auto"
    # Dask's statistical profiler in every LocalCluster worker (the dashboard's Profile page): it samples
    # every thread's stack each 10 ms, CPU taken from the extraction. Off unless you want that page.
    worker_profile: bool = False
    # Short videos are grouped into one Dask task of about this many seconds of media (videos as
    # long or longer run alone); 0 gives one task per video. docs/SCALING.md.
    task_seconds: float = 30.0
    # LocalCluster: worker deaths a task may witness before it is set aside and retried alone at the end
    # (Dask's allowed-failures; a cluster of your own uses its scheduler's setting).
    allowed_worker_deaths: int = 1
    # No task finished and no worker alive for this long: the remaining videos become failure rows.
    watchdog_s: float = 300.0
    # Videos whose frames have more pixels are refused (a failures row) by frame extractors: one decoded
    # RGB frame takes width x height x 3 bytes, several are in flight. Default: 8K UHD (7680 x 4320).
    max_pixels: int = 7680 * 4320
    # The LocalCluster's dashboard (bokeh) shows paths and logs: loopback only unless a host is named here.
    dashboard_address: str = "127.0.0.1:0"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.task_seconds) and self.task_seconds >= 0):
            raise ConfigError(
                "runner.task_seconds", f"must be >= 0 (0: one task per video), got {self.task_seconds}"
            )
        if self.allowed_worker_deaths < 0:
            raise ConfigError(
                "runner.allowed_worker_deaths", f"must be >= 0, got {self.allowed_worker_deaths}"
            )
        if not self.watchdog_s > 0:
            raise ConfigError("runner.watchdog_s", f"must be > 0 seconds, got {self.watchdog_s}")
        for key in ("n_workers", "threads_per_worker", "torch_threads", "max_pixels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"runner.{key}", f"must be >= 1, got {getattr(self, key)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError("runner.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.scheduler_address is not None and "://" not in self.scheduler_address:
            raise ConfigError(
                "runner.scheduler_address", f"must look like tcp://host:8786, got {self.scheduler_address!r}"
            )


@dataclass
class ResultsConfig:
    """Small files for git and DVC experiments: headline metrics, plot data, the resolved train params."""

    dir: str = "results"
    plot_points: int = 500  # per video and dimension in the prediction plots (evenly spaced frames)
    train_inputs: str = "data/train_inputs.json"

    def __post_init__(self) -> None:
        if self.plot_points < 2:
            raise ConfigError("results.plot_points", f"must be >= 2, got {self.plot_points}")
        for key in ("dir", "train_inputs"):
            if not getattr(self, key):
                raise ConfigError(f"results.{key}", "must be a non-empty path")

    @property
    def train_params(self) -> Path:
        return Path(self.dir) / "train_params.yaml"

    @property
    def metrics_dir(self) -> Path:
        return Path(self.dir) / "metrics"

    @property
    def plots_dir(self) -> Path:
        return Path(self.dir) / "plots"


@dataclass
class AudioStageConfig:
    extractors: list[str] = field(default_factory=lambda: ["logmel", "mfcc", "egemaps", "vggish"])


@dataclass
class EmbedStageConfig:
    backbones: list[str] = field(default_factory=lambda: ["fer-minixception"])


# --------------------------------------------------------------------------- generic dataclass filling


def build_dataclass(cls: type, data: Mapping[str, Any] | None, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``; every problem is a ConfigError naming ``prefix.key``."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(_join(prefix, unknown[0]), f"unknown key; known keys: {', '.join(sorted(fields))}")
    values = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in data:
            values[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "is required")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(prefix or cls.__name__, str(err)) from err


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except ConfigError as err:
                errors.append(err.problem)
        raise ConfigError(key, " or ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, Sequence, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"must be a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
        vtype = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vtype, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in hint)
            raise ConfigError(key, f"must be one of {choices}, got {value!r}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(key, f"must be a path string, got {value!r}")
        return Path(value)
    return value


# --------------------------------------------------------------------------- params.yaml + overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=3"`` -> (["a", "b", "c"], 3). The value is read as YAML, so ``null``, ``[1,2]`` work."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(text, "an override must look like key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(key, f"cannot read the value {raw!r}: {err}") from err
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    ".".join(path[: depth + 1]), "is a value, not a section; cannot set a key in it"
                )
            node = child
        node[path[-1]] = value
    return data


def read_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the top level must be a mapping of sections")
    return data
