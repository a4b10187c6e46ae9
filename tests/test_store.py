"""The HDF5 feature store and the fingerprints it records: real shards on disk, real writer processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest

from avpipe.pipeline import store as store_module
from avpipe.pipeline.errors import MediaError, StoreError
from avpipe.pipeline.fingerprint import library_versions, media_fingerprint, params_hash, params_json
from avpipe.pipeline.store import FeatureStore, ShardStatus, shard_name, video_id_from_shard_name
from avpipe.pipeline.types import FeatureSet, MaskValue
from tests.media_factory import make_video

REPO = Path(__file__).resolve().parents[1]
VICTIM = Path(__file__).with_name("_store_writer_victim.py")

TRICKY_IDS = [
    "plain",
    "with space",
    "sub/dir/clip 1",
    "unicode é 日本 ✓",
    "100%/..",
    ".hidden",
    ".",
    "index.json",
    "SEW1101",
    "sew1101",
    "x" * 300,
]


def feature_set(n: int, dim: int = 8, seed: int = 0, **attrs: object) -> FeatureSet:
    rng = np.random.default_rng(seed)
    mask = rng.choice([MaskValue.MISSING, MaskValue.VALID, MaskValue.TRACKED, MaskValue.HELD], size=n)
    return FeatureSet(
        time=0.04 * np.arange(n) + 0.013,
        frame_index=np.arange(n) * 2,
        mask=mask.astype(np.uint8),
        arrays={"features": rng.standard_normal((n, dim)).astype(np.float32)},
        attrs=dict(attrs),
    )


def write(store: FeatureStore, video_id: str, features: FeatureSet, **kwargs: object) -> Path:
    options = {"extractor_version": "1", "params_hash": "p1", "media_fingerprint": "m1", **kwargs}
    return store.write("feat", video_id, features, **options)


def assert_same(a: FeatureSet, b: FeatureSet) -> None:
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_array_equal(a.frame_index, b.frame_index)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert sorted(a.arrays) == sorted(b.arrays)
    for name, arr in a.arrays.items():
        assert b.arrays[name].dtype == arr.dtype, name
        assert b.arrays[name].shape == arr.shape, name
        np.testing.assert_array_equal(b.arrays[name], arr, err_msg=name)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp.h5")]


# ---------------------------------------------------------------------------------------- round trip


def test_a_misspelled_or_missing_metadata_keyword_is_refused_and_nothing_is_written(tmp_path):
    store = FeatureStore(tmp_path)
    with pytest.raises(
        TypeError, match=r"unknown keywords \['params_hsh'\], missing keywords \['params_hash'\]"
    ):
        store.write("feat", "v", feature_set(4), extractor_version="1", params_hsh="p1")
    with pytest.raises(TypeError, match=r"missing keywords \['extractor_version'\]"):
        store.write("feat", "v", feature_set(4), params_hash="p1")
    assert not (tmp_path / "feat").exists() or not any((tmp_path / "feat").iterdir())


def test_round_trip_of_every_dtype_and_attr(tmp_path):
    n = 37
    rng = np.random.default_rng(1)
    structured = np.zeros(n, dtype=[("x", "<f4"), ("label", "<i2")])
    structured["x"] = rng.random(n)
    structured["label"] = np.arange(n)
    arrays = {
        "features": rng.standard_normal((n, 5)).astype(np.float32),
        "f16": rng.standard_normal((n, 2)).astype(np.float16),
        "f64": rng.standard_normal(n),
        "i8": rng.integers(-128, 127, (n, 3), dtype=np.int8),
        "u16": rng.integers(0, 2**16 - 1, n, dtype=np.uint16),
        "i64": rng.integers(-(2**62), 2**62, n, dtype=np.int64),
        "u64": rng.integers(0, 2**63, n, dtype=np.uint64),
        "flag": rng.random(n) > 0.5,
        "c64": (rng.random((n, 2)) + 1j * rng.random((n, 2))).astype(np.complex64),
        "crops_4": rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8),
        "text": np.array([f"é{i}日本" * (i % 3) for i in range(n)]),
        "raw": np.array([bytes([65 + i % 26]) * (i % 4) for i in range(n)]),
        "when": (np.arange(n) * 40).astype("datetime64[ms]"),
        "gap": (np.arange(n) * 3).astype("timedelta64[s]"),
        "record": structured,
    }
    attrs = {
        "fps": 25.0,
        "n_faces": 2,
        "huge_int": 2**70,
        "detector": "mtcnn",
        "is_vfr": True,
        "np_float": np.float32(0.5),
        "sizes": [112, 48],
        "nested": {"a": [1, 2.5, None], "b": "é"},
        "missing": None,
        "matrix": np.eye(2),
        "nan": float("nan"),
    }
    features = FeatureSet(
        time=np.linspace(0.5, 2.0, n),
        frame_index=np.arange(n, dtype=np.int32),
        mask=np.ones(n, dtype=np.int64),
        arrays=arrays,
        attrs=attrs,
    )
    store = FeatureStore(tmp_path)
    path = write(store, "unicode é/clip 1", features, params_json='{"a": 1}', library_versions={"torch": "9"})
    back = store.read("feat", "unicode é/clip 1")

    assert_same(features, back)
    assert (
        back.time.dtype == np.float64 and back.frame_index.dtype == np.int64 and back.mask.dtype == np.uint8
    )
    assert back.attrs["sizes"] == [112, 48] and back.attrs["nested"] == attrs["nested"]
    assert back.attrs["huge_int"] == 2**70 and back.attrs["matrix"] == [[1.0, 0.0], [0.0, 1.0]]
    assert back.attrs["is_vfr"] is True and back.attrs["missing"] is None and np.isnan(back.attrs["nan"])
    assert {k: back.attrs[k] for k in ("fps", "n_faces", "detector", "np_float")} == {
        "fps": 25.0,
        "n_faces": 2,
        "detector": "mtcnn",
        "np_float": 0.5,
    }
    meta = store.attrs("feat", "unicode é/clip 1")
    assert meta["video_id"] == "unicode é/clip 1" and meta["extractor"] == "feat"
    assert (
        meta["params_hash"] == "p1"
        and meta["media_fingerprint"] == "m1"
        and meta["params_json"] == '{"a": 1}'
    )
    assert meta["n_frames"] == n and meta["extractor_version"] == "1"
    assert meta["library_versions"]["torch"] == "9" and meta["library_versions"]["h5py"] == h5py.__version__
    assert "created" not in meta and meta["sizes"] == [112, 48]
    assert path == store.shard_path("feat", "unicode é/clip 1") and path.parent == tmp_path / "feat"


@pytest.mark.parametrize("video_id", TRICKY_IDS)
def test_tricky_video_ids_round_trip_with_safe_file_names(tmp_path, video_id):
    store = FeatureStore(tmp_path)
    features = feature_set(20, seed=len(video_id))
    path = write(store, video_id, features)
    name = path.name
    assert path.parent == tmp_path / "feat"
    assert len(name.encode()) <= 200 and not name.startswith(".") and name.endswith(".h5")
    assert all(c.isascii() and (c.isalnum() or c in "%_-.~") for c in name), name
    assert_same(features, store.read("feat", video_id))
    assert store.videos("feat") == [video_id]
    decoded = video_id_from_shard_name(name)
    assert decoded in (video_id, None)


def test_distinct_ids_get_distinct_shards_even_case_folded(tmp_path):
    store = FeatureStore(tmp_path)
    names = {shard_name(v).lower() for v in TRICKY_IDS}
    assert len(names) == len(TRICKY_IDS)
    for i, video_id in enumerate(TRICKY_IDS):
        write(store, video_id, feature_set(5, seed=i))
    assert store.videos("feat") == sorted(TRICKY_IDS)
    for i, video_id in enumerate(TRICKY_IDS):
        assert_same(feature_set(5, seed=i), store.read("feat", video_id))


def test_empty_video_round_trips(tmp_path):
    store = FeatureStore(tmp_path)
    empty = FeatureSet(
        time=np.zeros(0),
        frame_index=np.zeros(0, np.int64),
        mask=np.zeros(0, np.uint8),
        arrays={"features": np.zeros((0, 16), np.float32), "none_wide": np.zeros((0, 0))},
    )
    write(store, "empty", empty)
    assert_same(empty, store.read("feat", "empty"))
    assert store.status("feat", "empty", "p1") is ShardStatus.STORED


@pytest.mark.parametrize("compression", ["lzf", "gzip", "none"])
def test_layout_is_readable_with_plain_h5py(tmp_path, compression):
    store = FeatureStore(tmp_path, compression=compression, chunk_frames=200)
    features = feature_set(300, dim=12)
    features.arrays["crops_224"] = np.zeros((300, 224, 224, 3), np.uint8)
    path = write(store, "a/b", features)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["format"] == "avpipe-shard" and h5.attrs["format_version"] == 1
        assert h5.attrs["extractor"] == "feat"
        assert list(h5) == ["a%2Fb"]
        group = h5["a%2Fb"]
        assert group.attrs["video_id"] == "a/b" and group.attrs["n_frames"] == 300
        assert json.loads(group.attrs["library_versions"])["numpy"] == np.__version__
        assert group["time"].dtype == np.float64 and group["frame_index"].dtype == np.int64
        assert group["mask"].dtype == np.uint8
        np.testing.assert_array_equal(group["features"][10:20], features.arrays["features"][10:20])
        assert group["features"].chunks == (200, 12)
        # Big rows get fewer rows per chunk so that reading one row never inflates a huge chunk.
        crop_rows = store_module.MAX_CHUNK_BYTES // (224 * 224 * 3)
        assert group["crops_224"].chunks == (crop_rows, 224, 224, 3) and crop_rows < 200
        expected = {"lzf": "lzf", "gzip": "gzip", "none": None}[compression]
        assert group["features"].compression == expected and group["features"].fletcher32


def test_write_rejects_bad_input_with_the_shard_path(tmp_path):
    store = FeatureStore(tmp_path)
    bad_name = feature_set(4)
    bad_name.arrays["mask"] = np.zeros(4)
    with pytest.raises(StoreError, match=r"feat/x\.h5: array name 'mask' is reserved"):
        write(store, "x", bad_name)
    objects = feature_set(4)
    objects.arrays["objs"] = np.array([{}, {}, {}, {}], dtype=object)
    with pytest.raises(StoreError, match="'objs' has dtype object"):
        write(store, "x", objects)
    short = feature_set(4)
    short.arrays["late"] = np.zeros(3)  # changed after the FeatureSet checked its rows
    with pytest.raises(StoreError, match=r"'late' has shape \(3,\), expected 4 rows"):
        write(store, "x", short)
    with pytest.raises(StoreError, match="'dataset' collides"):
        write(store, "x", feature_set(4, dataset="mine"))
    with pytest.raises(StoreError, match="'blob' cannot be stored"):
        write(store, "x", feature_set(4, blob=object()))
    with pytest.raises(StoreError, match="non-empty string"):
        write(store, "", feature_set(4))
    with pytest.raises(StoreError, match="cannot name a store folder"):
        store.write("../up", "x", feature_set(4), extractor_version="1", params_hash="p")
    with pytest.raises(StoreError, match="compression must be one of"):
        FeatureStore(tmp_path, compression="zstd")
    assert not store.shard_path("feat", "x").exists()


def test_a_write_failing_part_way_leaves_no_shard_and_no_temp_file(tmp_path):
    store = FeatureStore(tmp_path)
    write(store, "v", feature_set(6, seed=1))
    features = feature_set(6, seed=2)
    # A structured dtype holding Python objects passes the dtype check but HDF5 fails to write it.
    features.arrays["zz_bad"] = np.zeros(6, dtype=[("obj", object)])
    with pytest.raises((TypeError, ValueError)):
        write(store, "v", features)
    assert temp_files(tmp_path / "feat") == []
    assert_same(feature_set(6, seed=1), store.read("feat", "v"))


# ---------------------------------------------------------------------------------------- window reads


def test_window_reads_match_the_full_array(tmp_path):
    store = FeatureStore(tmp_path, chunk_frames=256)
    features = feature_set(1000, dim=40)
    write(store, "long", features)
    full = features.arrays["features"]
    for start, stop in [(0, 300), (200, 500), (255, 257), (700, 1000), (1000, 1000), (0, 1000)]:
        np.testing.assert_array_equal(
            store.read_rows("feat", "long", "features", start, stop), full[start:stop]
        )
    np.testing.assert_array_equal(store.read_rows("feat", "long", "time", 10, 20), features.time[10:20])
    np.testing.assert_array_equal(store.read_rows("feat", "long", "mask", 990, 1000), features.mask[990:])
    time_, values, mask = store.get("feat", "long")
    np.testing.assert_array_equal(time_, features.time)
    np.testing.assert_array_equal(values, full)
    np.testing.assert_array_equal(mask, features.mask)
    with pytest.raises(StoreError, match=r"long\.h5: rows 900:1001 of 'features' are outside 0:1000"):
        store.read_rows("feat", "long", "features", 900, 1001)
    with pytest.raises(
        StoreError,
        match=r"long\.h5: no array 'crops_112' in this shard \(arrays: features, frame_index, mask, time\)",
    ):
        store.get("feat", "long", "crops_112")
    with pytest.raises(StoreError, match="no array 'landmarks'"):
        store.read("feat", "long", names=["features", "landmarks"])
    assert list(store.read("feat", "long", names=[]).arrays) == []


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_a_window_reads_only_the_chunks_that_hold_it(tmp_path):
    store = FeatureStore(tmp_path, compression="none", chunk_frames=256)
    features = feature_set(2560, dim=64)
    path = write(store, "long", features)
    with h5py.File(path, "r") as h5:
        dset = h5["long/features"]
        chunks = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
    assert len(chunks) == 10
    # Damage every chunk outside rows 1000:1300; the checksums would fail any read that touched them.
    outside = [c for c in chunks if not (1000 - 256 < c.chunk_offset[0] < 1300)]
    assert len(outside) == 7
    for chunk in outside:
        flip_byte(path, chunk.byte_offset + 8)
    window = store.read_rows("feat", "long", "features", 1000, 1300)
    np.testing.assert_array_equal(window, features.arrays["features"][1000:1300])
    with pytest.raises(StoreError, match="cannot read array 'features'"):
        store.read_rows("feat", "long", "features", 700, 1000)


def test_reading_a_missing_video_names_the_shard(tmp_path):
    store = FeatureStore(tmp_path)
    with pytest.raises(StoreError, match=r"feat/nope\.h5: no shard for video 'nope' of extractor 'feat'"):
        store.read("feat", "nope")


# ---------------------------------------------------------------------------------------- status


def test_status_transitions(tmp_path):
    store = FeatureStore(tmp_path)
    assert store.status("feat", "v", "p1", "m1") is ShardStatus.MISSING
    write(store, "v", feature_set(50))
    assert store.status("feat", "v", "p1", "m1") is ShardStatus.STORED
    assert store.status("feat", "v", "p1") is ShardStatus.STORED
    assert store.status("feat", "v", "p2", "m1") is ShardStatus.STALE
    assert store.status("feat", "v", "p1", "other-media") is ShardStatus.STALE
    write(store, "v", feature_set(50), params_hash="p2")
    assert store.status("feat", "v", "p2", "m1") is ShardStatus.STORED
    assert store.status("feat", "v", "p1", "m1") is ShardStatus.STALE
    store.remove("feat", "v")
    assert store.status("feat", "v", "p2", "m1") is ShardStatus.MISSING


def test_truncated_shard_is_corrupt_and_never_read(tmp_path):
    store = FeatureStore(tmp_path)
    path = write(store, "v", feature_set(2000, dim=64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert store.status("feat", "v", "p1", "m1") is ShardStatus.CORRUPT
    with pytest.raises(StoreError, match=r"v\.h5: corrupt shard"):
        store.read("feat", "v")
    write(store, "v", feature_set(2000, dim=64))
    assert store.status("feat", "v", "p1", "m1") is ShardStatus.STORED


def test_garbage_or_incomplete_files_are_corrupt(tmp_path):
    store = FeatureStore(tmp_path)
    store.shard_path("feat", "text").parent.mkdir(parents=True)
    store.shard_path("feat", "text").write_text("not hdf5")
    assert store.status("feat", "text", "p1") is ShardStatus.CORRUPT
    path = write(store, "nomask", feature_set(10))
    with h5py.File(path, "a") as h5:
        del h5["nomask/mask"]
    assert store.status("feat", "nomask", "p1") is ShardStatus.CORRUPT
    with pytest.raises(StoreError, match=r"lacks required datasets \['mask'\]"):
        store.get("feat", "nomask")
    path = write(store, "short", feature_set(10))
    with h5py.File(path, "a") as h5:
        del h5["short/features"]
        h5["short"].create_dataset("features", data=np.zeros((7, 8)))
    assert store.status("feat", "short", "p1") is ShardStatus.CORRUPT
    with pytest.raises(StoreError, match=r"'features' has shape \(7, 8\), expected 10 rows"):
        store.read("feat", "short")
    path = write(store, "alien", feature_set(10))
    with h5py.File(path, "a") as h5:
        h5.attrs["format"] = "something-else"
    assert store.status("feat", "alien", "p1") is ShardStatus.CORRUPT


def test_flipped_bytes_in_a_chunk_are_caught_by_the_checksum(tmp_path):
    store = FeatureStore(tmp_path, compression="none")
    path = write(store, "v", feature_set(600, dim=32))
    with h5py.File(path, "r") as h5:
        info = h5["v/features"].id.get_chunk_info(1)
    flip_byte(path, info.byte_offset + 100)
    with pytest.raises(StoreError, match=r"v\.h5: corrupt shard: cannot read array 'features'"):
        store.read("feat", "v")
    np.testing.assert_array_equal(
        store.read_rows("feat", "v", "features", 0, 256), feature_set(600, dim=32).arrays["features"][:256]
    )


# ---------------------------------------------------------------------------------------- index


def read_index(root: Path, extractor: str = "feat") -> dict:
    """The index as a plain reader sees it: index.json, then index.log's JSON lines in order."""
    payload = json.loads((root / extractor / "index.json").read_text())
    assert payload["format"] == "avpipe-index" and payload["extractor"] == extractor
    videos = payload["videos"]
    log_file = root / extractor / "index.log"
    for line in log_file.read_text().splitlines() if log_file.exists() else []:
        record = json.loads(line)
        if record["entry"] is None:
            videos.pop(record["video"], None)
        else:
            videos[record["video"]] = record["entry"]
    return videos


def test_record_and_rebuild_index(tmp_path):
    store = FeatureStore(tmp_path)
    for i, video_id in enumerate(["a", "b c", "D/e"]):
        write(store, video_id, feature_set(10 + i), params_hash=f"p{i}")
    assert not (tmp_path / "feat" / "index.json").exists()
    store.record("feat", "b c")
    # The first record starts the index from every readable shard already on disk.
    assert sorted(read_index(tmp_path)) == ["D/e", "a", "b c"]
    stat = store.shard_path("feat", "b c").stat()
    assert read_index(tmp_path)["b c"] == {
        "shard": "b%20c.h5",
        "params_hash": "p1",
        "media_fingerprint": "m1",
        "n_frames": 11,
        "extractor_version": "1",
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    store.shard_path("feat", "a").unlink()
    store.shard_path("feat", "D/e").write_bytes(b"broken")
    write(store, "f", feature_set(3), params_hash="pf")
    assert store.videos("feat") == ["D/e", "b c", "f"]
    rebuilt = store.rebuild_index("feat")
    assert sorted(rebuilt) == ["b c", "f"] and rebuilt["f"]["params_hash"] == "pf"
    assert read_index(tmp_path) == rebuilt
    store.remove("feat", "f")
    # The broken shard left the index, and its hashed name alone does not say which video it was.
    assert sorted(read_index(tmp_path)) == ["b c"] and store.videos("feat") == ["b c"]
    store.remove("feat", "never-written")
    with pytest.raises(StoreError, match="no shard for video 'gone'"):
        store.record("feat", "gone")


def test_listing_works_without_and_with_a_broken_index(tmp_path):
    store = FeatureStore(tmp_path)
    assert store.videos("feat") == [] and store.extractors() == []
    ids = ["UPPER case", "x" * 250, "ok"]
    for video_id in ids:
        write(store, video_id, feature_set(4))
    store.write("other", "ok", feature_set(4), extractor_version="1", params_hash="p")
    (tmp_path / "not-a-store-folder").mkdir()
    assert store.videos("feat") == sorted(ids)
    assert store.extractors() == ["feat", "other"]
    store.rebuild_index("feat")
    (tmp_path / "feat" / "index.json").write_text("{ half written")
    assert store.videos("feat") == sorted(ids)
    # A stage starts with sync_index, which re-reads the shards the broken index no longer names.
    assert store.sync_index("feat").added == len(ids)
    assert sorted(read_index(tmp_path)) == sorted(ids)


# ---------------------------------------------------------------------------------------- processes


def run_victim(
    root: Path, video_id: str, rows: int, cols: int, compression: str, *extra: str
) -> subprocess.Popen:
    command = [
        sys.executable,
        str(VICTIM),
        str(root),
        "feat",
        video_id,
        str(rows),
        str(cols),
        compression,
        *extra,
    ]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_growing_temp_file(folder: Path, proc: subprocess.Popen, min_bytes: int, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"writer ended before it could be killed: {proc.communicate()[1][-2000:]}"
        for path in temp_files(folder) if folder.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):  # renamed away between listing and stat
                if path.stat().st_size >= min_bytes:
                    return path
        time.sleep(0.01)
    raise AssertionError(f"no temp file of {min_bytes} bytes appeared in {folder} within {timeout} s")


def test_writer_killed_mid_shard_leaves_nothing_visible(tmp_path):
    store = FeatureStore(tmp_path)
    # 64 MiB of random floats through gzip takes seconds: plenty of time to kill it half-way.
    proc = run_victim(tmp_path, "big one", 4096, 4096, "gzip")
    try:
        temp = wait_for_growing_temp_file(tmp_path / "feat", proc, 4 << 20, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert temp.exists() and str(proc.pid) in temp.name
    assert not store.shard_path("feat", "big one").exists()
    assert store.status("feat", "big one", "victim") is ShardStatus.MISSING
    assert store.videos("feat") == []
    assert store.rebuild_index("feat") == {}

    rerun = run_victim(tmp_path, "big one", 512, 256, "lzf", "--record")
    assert rerun.wait(timeout=60) == 0, rerun.communicate()[1]
    assert store.status("feat", "big one", "victim") is ShardStatus.STORED
    assert store.read("feat", "big one").arrays["features"].shape == (512, 256)
    assert store.cleanup_temp("feat") == 1
    assert temp_files(tmp_path / "feat") == []
    assert sorted(read_index(tmp_path)) == ["big one"]


def test_two_processes_write_the_same_extractor_at_once(tmp_path):
    store = FeatureStore(tmp_path)
    procs = [run_victim(tmp_path, video_id, 2048, 1024, "gzip", "--record") for video_id in ("left", "right")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.communicate()[1]
    for video_id in ("left", "right"):
        assert store.status("feat", video_id, "victim") is ShardStatus.STORED
        assert store.read_rows("feat", video_id, "features", 2000, 2048).shape == (48, 1024)
    assert sorted(read_index(tmp_path)) == ["left", "right"]
    assert temp_files(tmp_path / "feat") == []


def test_cleanup_temp_keeps_live_and_foreign_writers(tmp_path):
    store = FeatureStore(tmp_path)
    folder = tmp_path / "feat"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = store_module._this_host_tag()
    live = folder / f".v.{os.getpid()}.{here}0123abcd.tmp.h5"
    gone = folder / f".v.{dead.pid}.{here}0123abcd.tmp.h5"
    foreign = folder / f".v.{dead.pid}.{'0' * 8 if here != '0' * 8 else '1' * 8}0123abcd.tmp.h5"
    unrelated = folder / "notes.tmp"
    for path in (live, gone, foreign, unrelated):
        path.write_bytes(b"partial")
    assert store.cleanup_temp("feat") == 1
    assert not gone.exists() and live.exists() and foreign.exists() and unrelated.exists()
    old = time.time() - 7200
    os.utime(foreign, (old, old))
    assert store.cleanup_temp("feat") == 1 and not foreign.exists() and live.exists()
    assert store.cleanup_temp("feat", max_age_s=0) == 1 and not live.exists() and unrelated.exists()
    assert store.cleanup_temp("no-such-extractor") == 0


# ---------------------------------------------------------------------------------------- fingerprints


@dataclass
class DemoConfig:
    hop: float = 0.01
    sizes: list[int] = field(default_factory=lambda: [112, 48])
    path: Path = Path("models/w.pt")


def test_params_hash_is_canonical_and_versioned():
    as_dict = {"sizes": (112, 48), "path": "models/w.pt", "hop": 0.01}
    digest = params_hash(DemoConfig(), "1")
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert params_hash(as_dict, "1") == digest
    assert params_hash(DemoConfig(), "2") != digest
    assert params_hash(DemoConfig(hop=0.02), "1") != digest
    assert params_hash(DemoConfig(sizes=[48, 112]), "1") != digest
    assert params_json(DemoConfig()) == '{"hop":0.01,"path":"models/w.pt","sizes":[112,48]}'
    assert params_json(as_dict) == params_json(DemoConfig())
    with pytest.raises(TypeError, match="cannot serialise a object"):
        params_hash({"x": object()}, "1")


@pytest.fixture(scope="session")
def small_video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=1.0, fps=10)


def test_media_fingerprint_follows_content_not_name(tmp_path, small_video):
    original = media_fingerprint(small_video)
    size = small_video.stat().st_size
    assert original.startswith(f"{size}:") and len(original.split(":")[1]) == 32
    copy = tmp_path / "renamed copy.mp4"
    copy.write_bytes(small_video.read_bytes())
    assert media_fingerprint(copy) == original
    data = bytearray(small_video.read_bytes())
    data[-1] ^= 0x01
    copy.write_bytes(bytes(data))
    assert media_fingerprint(copy) != original
    copy.write_bytes(small_video.read_bytes() + b"\0")
    assert media_fingerprint(copy) != original


def test_media_fingerprint_reads_only_the_ends_of_big_files(tmp_path):
    big = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 255, 5 << 20, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    before = media_fingerprint(big)
    data[len(data) // 2] ^= 0xFF  # the middle is not hashed: the price of fingerprinting cheaply
    big.write_bytes(bytes(data))
    assert media_fingerprint(big) == before
    data[10] ^= 0xFF
    big.write_bytes(bytes(data))
    assert media_fingerprint(big) != before
    with pytest.raises(MediaError, match=r"missing\.mp4: cannot fingerprint: no such file"):
        media_fingerprint(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="it is a directory"):
        media_fingerprint(tmp_path)


def test_library_versions_names_the_stack_and_extras():
    versions = library_versions(["h5py", "pyyaml", "no-such-distribution-avpipe"])
    assert versions["numpy"] == np.__version__ and versions["h5py"] == h5py.__version__
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["avpipe"] and versions["hdf5"] == h5py.version.hdf5_version
    assert versions["pyyaml"][0].isdigit() and versions["no-such-distribution-avpipe"] == "not installed"


def test_identical_rewrite_gives_identical_bytes(tmp_path: Path) -> None:
    """Same features, same parameters: the same bytes (DVC sees the shard unchanged)."""
    store = FeatureStore(tmp_path)
    first = write(store, "clip", feature_set(300, sizes=[112, 48]), dataset="/data/a").read_bytes()
    time.sleep(1.1)  # a write time stored to the second would differ now
    second = write(store, "clip", feature_set(300, sizes=[112, 48]), dataset="/data/a").read_bytes()
    assert first == second
    third = write(store, "clip", feature_set(300, seed=1, sizes=[112, 48]), dataset="/data/a").read_bytes()
    assert third != first  # the comparison can fail


def test_a_shard_of_another_dataset_is_not_replaced_unless_asked(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    write(store, "clip", feature_set(4), dataset="/data/a")
    store.check_dataset("feat", "clip", "/data/a")  # same dataset: fine
    store.check_dataset("feat", "other", "/data/b")  # no shard: fine
    with pytest.raises(
        StoreError, match=r"stored from dataset /data/a, not from /data/b.*replace_other_dataset"
    ):
        store.check_dataset("feat", "clip", "/data/b")
    store.check_dataset("feat", "clip", "/data/b", replace=True)
    assert store.attrs("feat", "clip")["dataset"] == "/data/a"
