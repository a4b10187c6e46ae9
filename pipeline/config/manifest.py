"""``manifest`` section: where the manifest and its failures report are written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avpipe.pipeline.errors import ConfigError


@dataclass
class ManifestConfig:
    """``manifest`` section: where the manifest and its failures report are written."""

    path: str = "data/manifest.csv"
    failures: str = "data/manifest_failures.csv"

    def __post_init__(self) -> None:
        for key in ("path", "failures"):
            if not getattr(self, key):
                raise ConfigError(f"manifest.{key}", "must be a non-empty path")
        if Path(self.path) == Path(self.failures):
            raise ConfigError("manifest.failures", f"must differ from manifest.path ({self.path})")
