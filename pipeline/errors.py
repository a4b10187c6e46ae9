"""Errors avpipe raises for bad input. Each names the file or key and the problem."""

from __future__ import annotations

from pathlib import Path


class AvpipeError(Exception):
    """Base class: an error about the user's input or setup, shown without a traceback."""


class ConfigError(AvpipeError):
    """A bad key, type or value in params.yaml or a ``--set`` override."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config key {key!r}: {problem}")


class MediaError(AvpipeError):
    """A media file that cannot be probed or decoded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class LabelError(AvpipeError):
    """An annotation file that cannot be parsed."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class StoreError(AvpipeError):
    """A missing, stale or unreadable shard in the feature store."""


class ExtractorError(AvpipeError):
    """An unknown extractor, or one that cannot run (e.g. missing model weights)."""
