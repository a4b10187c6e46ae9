"""Config validation: unknown keys, wrong types and bad values name the key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from avpipe.pipeline.config import (
    Compression,
    RunnerConfig,
    StoreConfig,
    apply_overrides,
    build_dataclass,
    parse_override,
)
from avpipe.pipeline.errors import ConfigError


@dataclass
class Inner:
    size: int = 3
    rate: float = 1.0


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=lambda: [1])
    path: str | None = None
    mode: Compression = Compression.LZF


def test_builds_nested_with_defaults_and_coercion():
    cfg = build_dataclass(Outer, {"inner": {"rate": 2}, "sizes": [112, 48], "mode": "gzip"}, prefix="sec")
    assert cfg.inner.size == 3
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.sizes == [112, 48]
    assert cfg.mode is Compression.GZIP
    assert cfg.path is None


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"bogus": 1}, "sec.bogus", "unknown key"),
        ({"inner": {"size": "big"}}, "sec.inner.size", "integer"),
        ({"inner": {"size": True}}, "sec.inner.size", "integer"),
        ({"sizes": [1, "a"]}, "sec.sizes[1]", "integer"),
        ({"sizes": 5}, "sec.sizes", "list"),
        ({"mode": "zip"}, "sec.mode", "one of"),
        ({"path": 3}, "sec.path", "string"),
        ({"inner": 7}, "sec.inner", "mapping"),
    ],
)
def test_bad_values_name_the_key(data, key, fragment):
    with pytest.raises(ConfigError) as info:
        build_dataclass(Outer, data, prefix="sec")
    assert info.value.key == key
    assert fragment in info.value.problem


def test_value_checks_in_sections():
    with pytest.raises(ConfigError, match=r"runner.n_workers"):
        build_dataclass(RunnerConfig, {"n_workers": 0}, prefix="runner")
    with pytest.raises(ConfigError, match=r"runner.scheduler_address"):
        build_dataclass(RunnerConfig, {"scheduler_address": "localhost"}, prefix="runner")
    with pytest.raises(ConfigError, match=r"store.chunk_frames"):
        build_dataclass(StoreConfig, {"chunk_frames": -1}, prefix="store")


def test_overrides_are_yaml_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=[112, 48]") == (["a"], [112, 48])
    data = apply_overrides({"runner": {"n_workers": 2}}, ["runner.n_workers=4", "new.key=x"])
    assert data == {"runner": {"n_workers": 4}, "new": {"key": "x"}}
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")
    with pytest.raises(ConfigError, match=r"runner.n_workers"):
        apply_overrides({"runner": {"n_workers": 2}}, ["runner.n_workers.x=1"])
