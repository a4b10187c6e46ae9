"""``store`` section: where and how feature shards are written (docs/FORMAT.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from avpipe.pipeline.errors import ConfigError


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
