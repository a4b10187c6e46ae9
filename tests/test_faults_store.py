"""Fault battery, storage: full disks, damaged chunks, concurrent report writers.

Full disks are real (a small tmpfs mounted per test; tests skip where mounting is not allowed) or,
for the unit of pipeline/diskguard.py, injected into its write call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from avpipe.pipeline.config import Compression, RunnerConfig, StoreConfig
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.extract import run_extractor, write_report
from avpipe.pipeline.extractors.audio import LogMelConfig
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.runner import Failure as RunFailure
from avpipe.pipeline.runner import RunReport, open_client
from avpipe.pipeline.store import FeatureStore, ShardStatus
from tests.fault_disk import resize, small_disk
from tests.media_factory import make_video

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]


def _features(rows: int, seed: int = 0):
    from tests._enospc_writer import features

    return features(rows, seed)


# --------------------------------------------------------------------------- full disk, one process


def test_full_disk_during_a_shard_write_leaves_the_process_healthy(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        done = subprocess.run(
            [sys.executable, str(REPO / "tests" / "_enospc_writer.py"), str(disk / "store")],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        leftovers = sorted(p.name for p in (disk / "store" / "x").iterdir() if p.name.startswith("."))
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "No space left on device" in done.stdout and "too%20big.h5" in done.stdout
    assert "40 shards written" in done.stdout
    assert leftovers == [".index.lock"] or leftovers == []


def test_injected_write_failure_is_reported_and_the_next_write_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avpipe.pipeline import diskguard

    store = FeatureStore(tmp_path, compression="lzf", chunk_frames=64)
    real_pwrite = os.pwrite
    budget = {"bytes": 20_000}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        budget["bytes"] -= len(data)
        if budget["bytes"] < 0:
            raise OSError(errno.EIO, "Input/output error")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(diskguard.os, "pwrite", pwrite)
    with pytest.raises(StoreError, match="Input/output error"):
        store.write("x", "a", _features(5000), extractor_version="1", params_hash="h")
    assert not list((tmp_path / "x").glob(".*.tmp.h5"))
    monkeypatch.setattr(diskguard.os, "pwrite", real_pwrite)
    store.write("x", "b", _features(300, 1), extractor_version="1", params_hash="h")
    assert np.array_equal(store.read("x", "b").arrays["features"], _features(300, 1).arrays["features"])


# --------------------------------------------------------------------------- full disk, a whole stage


@pytest.fixture(scope="module")
def client():
    with open_client(RunnerConfig(n_workers=1, device="cpu")) as active:
        yield active


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRow]:
    folder = tmp_path_factory.mktemp("clips")
    rows = []
    for name, seconds in (("short a", 2.0), ("short b", 2.5), ("long", 120.0)):
        path = make_video(folder / f"{name}.mp4", seconds=seconds, fps=25, size=(32, 32))
        rows.append(ManifestRow(video_id=name, media_path=str(path), duration=seconds))
    return rows


def test_full_disk_in_a_stage_gives_failure_rows_and_the_rerun_completes(
    client, clips: list[ManifestRow], tmp_path: Path
) -> None:
    from avpipe.pipeline import atomic

    with small_disk(tmp_path / "disk", "600k") as disk:
        store_cfg = StoreConfig(root=str(disk / "features"), compression=Compression.NONE)
        report = run_extractor("logmel", LogMelConfig(), clips, store_cfg, RunnerConfig(), client=client)
        assert report.done == 2, report.failures
        (failure,) = report.failures
        assert failure.video == "long" and "No space left on device" in failure.reason
        with pytest.raises(atomic.OutputWriteError, match="No space left on device"):
            write_report(_padded(report), disk / "reports")
        assert not [p for p in (disk / "reports").iterdir() if p.name.endswith(".tmp")]
        resize(disk, "8m")
        again = run_extractor("logmel", LogMelConfig(), clips, store_cfg, RunnerConfig(), client=client)
        assert (again.done, again.skipped, again.failed) == (1, 2, 0)
        store = FeatureStore(store_cfg.root)
        assert all(store.status("logmel", r.video_id, "x") is ShardStatus.STALE for r in clips)


def _padded(report: RunReport) -> RunReport:
    """The report with a failures table too big for what is left of the disk."""
    reason = "x" * 1_000_000
    report.failures = [*report.failures, RunFailure("padding", "logmel", reason)]
    return report


# --------------------------------------------------------------------------- damaged data chunks


def _damage_first_chunk(path: Path, dataset: str = "features") -> None:
    with h5py.File(path, "r") as h5:
        (group,) = h5.values()
        info = group[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + info.size // 2)
        handle.write(b"\x00\xff" * 16)


def test_a_damaged_data_chunk_is_detected_and_recomputed(
    client, clips: list[ManifestRow], tmp_path: Path
) -> None:
    store_cfg = StoreConfig(root=str(tmp_path / "features"))
    rows = clips[:2]
    first = run_extractor("logmel", LogMelConfig(), rows, store_cfg, RunnerConfig(), client=client)
    assert first.done == 2
    store = FeatureStore(store_cfg.root)
    want = store.read("logmel", "short a").arrays["features"]
    _damage_first_chunk(store.shard_path("logmel", "short a"))
    with pytest.raises(StoreError, match="corrupt shard"):
        store.read("logmel", "short a")
    again = run_extractor("logmel", LogMelConfig(), rows, store_cfg, RunnerConfig(), client=client)
    assert (again.done, again.skipped) == (1, 1)
    assert np.array_equal(store.read("logmel", "short a").arrays["features"], want)


def test_verify_reports_then_removes_damaged_shards_and_rebuilds_the_index(tmp_path: Path) -> None:
    from avpipe.cli import main
    from avpipe.pipeline.integrity import verify_store

    store = FeatureStore(tmp_path / "features", chunk_frames=64)
    for index in range(3):
        store.write("x", f"v{index}", _features(500, index), extractor_version="1", params_hash="h")
        store.record("x", f"v{index}")
    _damage_first_chunk(store.shard_path("x", "v1"))
    (tmp_path / "features" / "x" / "not-a-shard.h5").write_bytes(b"garbage")
    params = tmp_path / "params.yaml"
    params.write_text(f"store:\n  root: {tmp_path / 'features'}\n", encoding="utf-8")
    assert main(["-p", str(params), "verify"]) == 1  # found, kept
    assert store.shard_path("x", "v1").exists()
    report = verify_store(store, ["x"], remove_corrupt=True)
    assert sorted(p.name for p, _ in report.corrupt) == ["not-a-shard.h5", "v1.h5"]
    assert "fails its checksum" in dict((p.name, r) for p, r in report.corrupt)["v1.h5"]
    assert not store.shard_path("x", "v1").exists()
    assert report.indexed == {"x": 2} and store.videos("x") == ["v0", "v2"]
    assert main(["-p", str(params), "verify", "x"]) == 0


# --------------------------------------------------------------------------- concurrent writers


def test_concurrent_report_writers_never_collide(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for round_ in range(40):
                report = RunReport(stage="logmel", done=worker * 100 + round_)
                write_report(report, tmp_path)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logmel.json", "logmel_failures.csv"]


@pytest.fixture
def face_shard(tmp_path: Path) -> tuple[FeatureStore, list[ManifestRow]]:
    """A faces shard holding crops of a real face (scikit-image's astronaut), for the QA writers."""
    from skimage import data as skdata
    from skimage.transform import resize as resize_image

    from avpipe.pipeline.types import FeatureSet

    face = (resize_image(skdata.astronaut()[30:230, 140:340], (112, 112)) * 255).astype(np.uint8)
    n = 30
    crops = np.stack([np.roll(face, shift, axis=1) for shift in range(n)])
    features = FeatureSet(
        time=np.arange(n) / 25.0,
        frame_index=np.arange(n),
        mask=np.ones(n, np.uint8),
        arrays={"prob": np.linspace(0.5, 1.0, n).astype(np.float32), "crops_112": crops},
        attrs={"sizes": [112]},
    )
    store = FeatureStore(tmp_path / "features")
    store.write("faces", "astronaut", features, extractor_version="1", params_hash="h")
    return store, [ManifestRow(video_id="astronaut", media_path="/nonexistent.mp4")]


def test_concurrent_qa_writers_never_collide(face_shard, tmp_path: Path) -> None:
    from avpipe.pipeline.extractors.faces.qa import write_qa

    store, rows = face_shard
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(5):
                write_qa(store, rows, RunReport(stage="faces"), tmp_path / "qa", tmp_path / "reports")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert [p.name for p in (tmp_path / "qa").iterdir()] == ["astronaut.png"]


def test_full_disk_costs_a_qa_sheet_not_the_stage(face_shard, tmp_path: Path) -> None:
    from avpipe.pipeline import atomic
    from avpipe.pipeline.extractors.faces.qa import write_qa

    store, rows = face_shard
    with small_disk(tmp_path / "disk", "16k") as disk:
        (disk / "filler").write_bytes(b"\0" * 8192)
        metrics = write_qa(store, rows, RunReport(stage="faces"), disk / "qa", tmp_path / "reports")
        assert metrics["qa_sheets_not_written"] == 1 and metrics["videos"] == 1
        assert not [p.name for p in (disk / "qa").iterdir()]
        (disk / "reports").mkdir()
        _fill(disk / "filler 2")
        with pytest.raises(atomic.OutputWriteError, match="No space left on device"):
            write_qa(store, rows, RunReport(stage="faces"), tmp_path / "qa", disk / "reports")


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


def test_verify_checks_multi_video_shards_too(tmp_path: Path) -> None:
    from avpipe.pipeline.integrity import verify_store
    from avpipe.pipeline.packs import PackWriter

    store = FeatureStore(tmp_path / "features", chunk_frames=64)
    with PackWriter(store, "x") as pack:
        for index in range(2):
            pack.add(f"p{index}", [_features(300, index)], 300, extractor_version="1", params_hash="h")
        pack.commit()
        path = pack.final
    assert verify_store(store, ["x"]).corrupt == []
    with h5py.File(path, "r") as h5:
        info = h5["p1"]["features"].id.get_chunk_info(0)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + info.size // 2)
        handle.write(b"\x00\xff" * 16)
    ((bad, problem),) = verify_store(store, ["x"]).corrupt
    assert bad == path and "video 'p1'" in problem and "fails its checksum" in problem
