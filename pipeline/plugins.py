"""Plug-ins: classes that installed packages declare under one of avpipe's entry-point groups.

Every kind of plug-in follows the same rules (docs/EXTENDING.md):

- a package declares ``<name> = <module>:<Class>`` under the kind's group (``PluginGroup``); the
  entry-point name must equal the class's ``name``;
- a plug-in that cannot be used (its import fails, it is not a subclass of the kind's base class, its
  names differ) is *refused*: the other plug-ins and the built-ins stay usable, the listing commands
  show it with the problem, and asking for its name raises an error naming the entry point and the
  distribution that declares it;
- a name claimed twice (a plug-in named like a built-in, or two plug-ins with one name) is refused the
  same way: asking for that name raises an error naming both claimants, never picks one silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from avpipe.pipeline.errors import AvpipeError

log = logging.getLogger(__name__)

BUILTIN_ORIGIN = "built-in"

T = TypeVar("T")


class PluginGroup(StrEnum):
    """The entry-point groups avpipe reads, one per kind of plug-in."""

    EXTRACTORS = "avpipe.extractors"
    MODELS = "avpipe.models"
    ADAPTERS = "avpipe.adapters"
    LOSSES = "avpipe.losses"


@dataclass(frozen=True)
class RefusedPlugin:
    """A plug-in that is not usable, with where it comes from and why."""

    name: str
    origin: str  # distribution and entry point, as ``entry_point_origin`` writes it
    problem: str


@dataclass(frozen=True)
class ListingRow:
    """One line of ``avpipe <kind> list``: a usable class, or one that is not used (``problem`` set): a
    refused plug-in (``item`` None), or a built-in whose name a plug-in claims too."""

    name: str
    origin: str
    description: str
    item: Any = None  # the class; None for a refused plug-in
    problem: str = ""


def entry_point_origin(ep: EntryPoint) -> str:
    """``avpipe-plugin-example 0.1.0 (entry point avpipe_plugin_example.model:LateGRUModel)``."""
    dist = getattr(ep, "dist", None)
    who = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"{who} (entry point {ep.value})"


def builtin_origin(module: str) -> str:
    """``built-in`` for classes of avpipe's own modules, else the module that registered the class."""
    return BUILTIN_ORIGIN if module == "avpipe" or module.startswith("avpipe.") else module


@dataclass
class PluginRegistry(Generic[T]):
    """Name -> class for one kind of plug-in: the built-ins (``add``) and the entry points (``load``).

    ``check`` raises (any exception, its message says what is wrong) when a class is not a valid one of
    this kind; ``error`` builds the exception raised for a name that cannot be used.
    """

    kind: str  # "extractor", "model", "adapter", "loss": used in messages
    group: str
    check: Callable[[Any], None]
    error: Callable[[str], AvpipeError]
    classes: dict[str, T] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    refused: dict[str, list[RefusedPlugin]] = field(default_factory=dict)
    plugins: set[str] = field(default_factory=set)  # the names that entry points provide

    def add(self, cls: T, origin: str) -> None:
        """Register an in-repository class; a second class under a taken name is an error."""
        self.check(cls)
        name = cls.name  # type: ignore[attr-defined]
        known = self.classes.get(name)
        if known is not None and known is not cls:
            raise self.error(
                f"{self.kind} name {name!r} is registered twice: by {self.origins[name]} and by {origin}"
            )
        self.classes[name] = cls
        self.origins[name] = origin

    def load(self, found: list[EntryPoint] | None = None) -> None:
        """Add the plug-ins of ``self.group`` (or of ``found``); refuse, never raise, on a bad one."""
        eps = list(entry_points(group=self.group)) if found is None else found
        claims: dict[str, list[tuple[EntryPoint, Any]]] = {}
        for ep in eps:
            cls = self._load_one(ep)
            if cls is not None:
                claims.setdefault(ep.name, []).append((ep, cls))
        for name, claimants in claims.items():
            if name in self.classes:
                for ep, _ in claimants:
                    self._refuse(
                        ep,
                        f"its name {name!r} is taken by the {self.origins[name]} {self.kind} "
                        f"{_qualname(self.classes[name])}; rename the plug-in",
                    )
            elif len(claimants) > 1:
                others = " and ".join(entry_point_origin(ep) for ep, _ in claimants)
                for ep, _ in claimants:
                    self._refuse(ep, f"the name {name!r} is declared by {others}")
            else:
                ep, cls = claimants[0]
                self.classes[name] = cls
                self.origins[name] = entry_point_origin(ep)
                self.plugins.add(name)

    def _load_one(self, ep: EntryPoint) -> Any:
        try:
            cls = ep.load()
        except Exception as err:  # a broken plug-in must not hide the others
            self._refuse(ep, f"failed to load: {type(err).__name__}: {err}")
            return None
        if getattr(cls, "name", None) != ep.name:
            self._refuse(
                ep,
                f"points to {_qualname(cls)}, whose name is {getattr(cls, 'name', None)!r}: "
                "the entry-point name must equal the class's name",
            )
            return None
        try:
            self.check(cls)
        except Exception as err:
            self._refuse(ep, f"is not a usable {self.kind}: {err}")
            return None
        return cls

    def _refuse(self, ep: EntryPoint, problem: str) -> None:
        refused = RefusedPlugin(ep.name, entry_point_origin(ep), problem)
        self.refused.setdefault(ep.name, []).append(refused)
        log.warning("%s plug-in %r from %s is refused: %s", self.kind, ep.name, refused.origin, problem)

    def get(self, name: str) -> T:
        """The class registered as ``name``; ``error`` naming the plug-in when it is refused or unknown."""
        if name in self.refused:
            raise self.error(self.refused_message(name))
        try:
            return self.classes[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise self.error(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def refused_message(self, name: str) -> str:
        reasons = "; ".join(f"{r.origin} {r.problem}" for r in self.refused[name])
        builtin = f" (the {self.origins[name]} one is not used either)" if name in self.classes else ""
        return f"{self.kind} plug-in {name!r} is refused{builtin}: {reasons}"

    def names(self) -> list[str]:
        """The usable names, sorted."""
        return sorted(name for name in self.classes if name not in self.refused)

    def __iter__(self) -> Iterator[T]:
        return iter(self.classes[n] for n in self.names())

    def is_plugin(self, name: str) -> bool:
        return name in self.plugins

    def listing(self) -> list[ListingRow]:
        """Every class and every refused plug-in, by name (the refused ones after a usable namesake)."""
        rows = [
            ListingRow(
                name,
                self.origins[name],
                _one_line(getattr(cls, "description", "")),
                cls,
                "not used: a plug-in claims its name too (next line)" if name in self.refused else "",
            )
            for name, cls in self.classes.items()
        ]
        for refusals in self.refused.values():
            rows += [ListingRow(r.name, r.origin, "", None, r.problem) for r in refusals]
        return sorted(rows, key=lambda row: (row.name, row.item is None))


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else name


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
