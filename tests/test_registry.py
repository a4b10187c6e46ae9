"""The extractor registry: decorator, duplicate names, bad classes, config building."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from avpipe.pipeline.errors import ConfigError, ExtractorError
from avpipe.pipeline.registry import (
    Extractor,
    ExtractorRegistry,
    InputKind,
    create_extractor,
)
from avpipe.pipeline.types import FeatureSet, Timeline, VideoContext


@dataclass
class ConstantConfig:
    value: float = 1.0
    width: int = 2

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ConfigError("extractors.constant.width", "must be >= 1")


class ConstantExtractor(Extractor):
    name = "constant"
    input_kind = InputKind.AUDIO
    config_class = ConstantConfig

    @property
    def feature_dim(self) -> int:
        return self.config.width

    def extract(self, source, timeline: Timeline, context: VideoContext) -> FeatureSet:
        n = len(timeline)
        return FeatureSet(
            time=timeline.time,
            frame_index=timeline.frame_index,
            mask=np.ones(n, np.uint8),
            arrays={"features": np.full((n, self.config.width), self.config.value, np.float32)},
        )


def make_registry() -> ExtractorRegistry:
    registry = ExtractorRegistry()
    registry.add(ConstantExtractor, origin="test")
    return registry


def test_create_extractor_builds_config_from_kwargs():
    extractor = create_extractor("constant", registry=make_registry(), value=3, width=4)
    assert isinstance(extractor, ConstantExtractor)
    assert extractor.config.value == 3.0 and extractor.feature_dim == 4
    timeline = Timeline(time=np.arange(5) / 25.0, frame_index=np.arange(5))
    out = extractor.extract(None, timeline, VideoContext("v", "v.mp4"))
    assert out.arrays["features"].shape == (5, 4)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match=r"extractors.constant.widht"):
        create_extractor("constant", registry=make_registry(), widht=3)
    with pytest.raises(ConfigError, match=r"extractors.constant.width"):
        create_extractor("constant", registry=make_registry(), width=0)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ExtractorError, match="known extractors: constant"):
        make_registry().get("nope")


def test_duplicate_name_from_another_class_is_refused():
    registry = make_registry()

    class Other(ConstantExtractor):
        pass

    with pytest.raises(ExtractorError, match="registered twice"):
        registry.add(Other, origin="elsewhere")


def test_incomplete_class_is_refused():
    class NoName(Extractor):
        input_kind = InputKind.AUDIO
        config_class = ConstantConfig

    with pytest.raises(ExtractorError, match="'name'"):
        ExtractorRegistry().add(NoName, origin="test")
