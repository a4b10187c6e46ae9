"""Writes one shard through FeatureStore in its own process, for the crash and concurrency tests.

    python tests/_store_writer_victim.py ROOT EXTRACTOR VIDEO_ID ROWS COLS COMPRESSION [--record]

Random float32 features do not compress, so a large ROWS x COLS with gzip takes seconds to write:
long enough for a test to SIGKILL the process while the temp file is half written.
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
    parser.add_argument("video_id")
    parser.add_argument("rows", type=int)
    parser.add_argument("cols", type=int)
    parser.add_argument("compression")
    parser.add_argument("--record", action="store_true", help="also add the video to the index")
    args = parser.parse_args(argv)
    rng = np.random.default_rng()
    features = FeatureSet(
        time=np.arange(args.rows) / 25.0,
        frame_index=np.arange(args.rows),
        mask=np.full(args.rows, MaskValue.VALID, dtype=np.uint8),
        arrays={"features": rng.random((args.rows, args.cols), dtype=np.float32)},
    )
    store = FeatureStore(args.root, compression=args.compression)
    store.write(args.extractor, args.video_id, features, extractor_version="1", params_hash="victim")
    if args.record:
        store.record(args.extractor, args.video_id)


if __name__ == "__main__":
    main(sys.argv[1:])
