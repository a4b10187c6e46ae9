"""A driver-like process for the index crash tests: writes small shards and records them, forever.

    python tests/_index_victim.py ROOT EXTRACTOR PREFIX [--compact-every K] [--count N]
                                  [--pack V --rows R]

Each loop writes the shard ``PREFIX-<i>`` (as a worker would) and records it in the index (as the
driver does), compacting the log every K records, so that a SIGKILL at a random moment can land
inside a shard write, between a write and its record, inside an append or inside a compaction.
With ``--pack V`` the videos go V at a time into multi-video shards of R random rows each (random
floats through gzip: slow enough to be killed mid-pack), recorded when their pack is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet, MaskValue


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("extractor")
    parser.add_argument("prefix")
    parser.add_argument("--compact-every", type=int, default=7)
    parser.add_argument("--count", type=int, default=10**9)
    parser.add_argument("--pack", type=int, default=0)
    parser.add_argument("--rows", type=int, default=0)
    args = parser.parse_args(argv)
    if args.pack:
        write_packs(args)
        return
    store = FeatureStore(args.root)
    for index in range(args.count):
        rows = 5 + index % 11
        features = FeatureSet(
            time=np.arange(rows) / 25.0,
            frame_index=np.arange(rows),
            mask=np.full(rows, MaskValue.VALID, dtype=np.uint8),
            arrays={"features": np.full((rows, 3), index, dtype=np.float32)},
        )
        video_id = f"{args.prefix}-{index:05d}"
        store.write(args.extractor, video_id, features, extractor_version="1", params_hash="victim")
        store.record(args.extractor, video_id)
        if (index + 1) % args.compact_every == 0:
            store.compact_index(args.extractor)
    print("done", flush=True)


def write_packs(args: argparse.Namespace) -> None:
    from avpipe.pipeline.packs import PackWriter

    store = FeatureStore(args.root, compression="gzip")
    rng = np.random.default_rng()
    index = 0
    while index < args.count:
        with PackWriter(store, args.extractor) as pack:
            for _ in range(args.pack):
                features = FeatureSet(
                    time=np.arange(args.rows) / 25.0,
                    frame_index=np.arange(args.rows),
                    mask=np.full(args.rows, MaskValue.VALID, dtype=np.uint8),
                    arrays={"features": rng.random((args.rows, 256), dtype=np.float32)},
                )
                features.arrays["features"][0, 0] = index
                kwargs = {"extractor_version": "1", "params_hash": "victim"}
                pack.add(f"{args.prefix}-{index:05d}", [features], args.rows, **kwargs)
                index += 1
            entries = pack.commit()
        for video_id, entry in entries.items():
            store.record(args.extractor, video_id, entry)


if __name__ == "__main__":
    main(sys.argv[1:])
