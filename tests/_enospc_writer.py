"""Child process of the full-disk test: a shard that does not fit, then many that do, in one process.

Exits 0 when the big write failed with a clear StoreError and every later shard reads back intact;
a broken HDF5 state shows as another exit code or signal 11.
"""

from __future__ import annotations

import sys

import numpy as np

from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.types import FeatureSet


def features(rows: int, seed: int) -> FeatureSet:
    values = np.random.default_rng(seed).random((rows, 64), dtype=np.float32)
    return FeatureSet(
        time=np.arange(rows) / 100.0,
        frame_index=np.arange(rows),
        mask=np.ones(rows, np.uint8),
        arrays={"features": values},
    )


def main(root: str) -> int:
    store = FeatureStore(root, compression="none", chunk_frames=64)
    try:
        store.write("x", "too big", features(20000, 0), extractor_version="1", params_hash="h")
    except StoreError as err:
        print("refused:", err, flush=True)
    else:
        print("the 5 MB shard fitted on the small disk?", flush=True)
        return 3
    for index in range(40):
        store.write("x", f"v{index}", features(50, index), extractor_version="1", params_hash="h")
        assert np.array_equal(
            store.read("x", f"v{index}").arrays["features"], features(50, index).arrays["features"]
        )
    print("40 shards written after the full disk", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
