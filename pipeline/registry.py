"""The extractor registry: built-in extractors, in-repo ones (decorator) and plug-ins (entry points).

A plug-in package declares, in its own packaging metadata::

    [options.entry_points]
    avpipe.extractors =
        my-feature = my_package.module:MyExtractor

and the class then appears in ``avpipe extractors list`` and runs with ``avpipe extract my-feature``.
Loading follows the rules of every plug-in kind (``avpipe.pipeline.plugins``): a plug-in that cannot be
used is refused and listed with its problem, and never hides the others.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from avpipe.pipeline.errors import AvpipeError, ExtractorError
from avpipe.pipeline.plugins import PluginGroup, PluginRegistry, builtin_origin
from avpipe.pipeline.types import FeatureSet, Timeline, VideoContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PluginGroup.EXTRACTORS.value

# Modules whose import registers the built-in extractors. Imported lazily so that listing config
# keys or reading the store does not pull in torch.
BUILTIN_MODULES = (
    "avpipe.pipeline.extractors.faces",
    "avpipe.pipeline.extractors.audio",
    "avpipe.pipeline.extractors.audio.vggish",
    "avpipe.pipeline.extractors.embeddings",
)


class InputKind(StrEnum):
    """What an extractor consumes for one video."""

    FRAMES = "frames"  # an iterator of decoded Frame objects on the video timeline
    AUDIO = "audio"  # an AudioTrack (or None when the video has no audio stream)
    FACES = "faces"  # warped face crops read from the face shard


class Extractor(ABC):
    """Base class of every extractor. Subclasses set the class attributes and implement ``extract``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    input_kind: ClassVar[InputKind]
    config_class: ClassVar[type]
    description: ClassVar[str] = ""

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Width of the main ``features`` array (0 when the extractor stores no such array)."""

    @property
    def frame_shift(self) -> float | None:
        """Native hop in seconds before alignment to video frames; None means one value per frame."""
        return None

    @classmethod
    def column_names(
        cls, array: str, row_shape: tuple[int, ...], attrs: Mapping[str, Any]
    ) -> list[str] | None:
        """Table column names of ``array`` (one per value of a row, C order) in ``avpipe.extract``'s
        DataFrames and ``avpipe export``; None: the default rule (``<name>_names`` attributes, else
        numbered columns, docs/API.md)."""
        return None

    def preflight(self) -> None:  # noqa: B027 - optional hook, most extractors need nothing
        """Cheap checks on the driver before any task runs (e.g. that a weights file exists).

        Raise ``ExtractorError`` naming the problem: the stage then stops before touching any video.
        """

    def setup(self, device: str) -> None:  # noqa: B027 - optional hook, most extractors need nothing
        """Load models once per worker process before the first ``extract``."""

    def extract_blocks(self, source: Any, timeline: Timeline, context: VideoContext) -> Iterator[FeatureSet]:
        """The features as consecutive blocks of rows, so that a long video never sits in memory whole.

        The runner stores what this yields. The default is one block, ``extract``'s result; extractors
        with large per-frame outputs (face crops) override it.
        """
        yield self.extract(source, timeline, context)

    @abstractmethod
    def extract(self, source: Any, timeline: Timeline, context: VideoContext) -> FeatureSet:
        """Compute the features of one video on ``timeline`` (the returned set uses its time and indices)."""


def _check_extractor_class(cls: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Extractor)):
        raise ExtractorError(f"{cls!r} is not a subclass of avpipe.pipeline.registry.Extractor")
    for attr in ("name", "input_kind", "config_class"):
        if not hasattr(cls, attr):
            raise ExtractorError(f"extractor class {cls.__qualname__} must set the class attribute {attr!r}")
    if not dataclasses.is_dataclass(cls.config_class):
        raise ExtractorError(f"extractor {cls.name!r}: config_class must be a dataclass")


@dataclass
class ExtractorRegistry(PluginRegistry[type[Extractor]]):
    """Name -> extractor class. One instance per process is built by ``default_registry``."""

    kind: str = "extractor"
    group: str = ENTRY_POINT_GROUP
    check: Callable[[Any], None] = _check_extractor_class
    error: Callable[[str], AvpipeError] = ExtractorError


# Classes registered by the decorator while their module is imported; collected into a registry by
# ``default_registry``. Append-only and filled at import time, like Python's own codec registry.
_DECORATED: list[type[Extractor]] = []


def register_extractor(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    _check_extractor_class(cls)
    _DECORATED.append(cls)
    return cls


def default_registry(builtin_modules: tuple[str, ...] = BUILTIN_MODULES) -> ExtractorRegistry:
    """Built-in extractors, every class registered by decorator so far, and the entry-point plug-ins."""
    for module in builtin_modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            log.debug("built-in extractor module %s is not present", module)
    registry = ExtractorRegistry()
    for cls in _DECORATED:
        registry.add(cls, origin=builtin_origin(cls.__module__))
    registry.load()  # a refused plug-in is listed with its problem; its name raises ExtractorError
    return registry


def create_extractor(name: str, registry: ExtractorRegistry | None = None, **config: Any) -> Extractor:
    """Build an extractor from its name and keyword config (timm's ``create_model`` shape)."""
    from avpipe.pipeline.config import build_dataclass

    registry = registry or default_registry()
    cls = registry.get(name)
    return cls(build_dataclass(cls.config_class, config, prefix=f"extractors.{name}"))
