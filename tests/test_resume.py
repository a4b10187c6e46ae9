"""Crash safety: the stage's driver, then a worker, killed with SIGKILL part-way; the re-run completes
with results identical to an uninterrupted computation, without recomputing finished shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from avpipe.pipeline.config import StoreConfig, load_params
from avpipe.pipeline.extract import ExtractionJob, process_video
from avpipe.pipeline.extractors.audio import LogMelConfig, LogMelExtractor
from avpipe.pipeline.fingerprint import media_fingerprint
from avpipe.pipeline.manifest import ManifestRow, write_manifest
from avpipe.pipeline.store import FeatureStore, ShardStatus
from avpipe.stages import extract as extract_stage
from tests.dask_loopback import REPO, LoopbackCluster, start_loopback_cluster
from tests.media_factory import make_video

pytestmark = pytest.mark.timeout(300)

EXTRACTOR = "logmel"
N_VIDEOS = 10
STAGE_TIMEOUT_S = 180.0
POLL_S = 0.01
CLI = "import sys; from avpipe.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRow]:
    folder = tmp_path_factory.mktemp("resume_media")
    rows = []
    for index in range(N_VIDEOS):
        seconds = 3.0 + 0.2 * index  # distinct lengths: a shard cannot pass for another video's
        path = make_video(folder / f"clip {index:02d}.mp4", seconds=seconds, fps=25, size=(48, 32))
        rows.append(ManifestRow(video_id=f"clip {index:02d}", media_path=str(path), duration=seconds))
    return rows


@pytest.fixture(scope="module")
def reference(dataset: list[ManifestRow], tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """Every video computed in this process, without Dask: what any run must reproduce."""
    store_cfg = StoreConfig(root=str(tmp_path_factory.mktemp("reference")))
    config = LogMelConfig()
    job = ExtractionJob.create(EXTRACTOR, LogMelExtractor, config, store_cfg)
    extractor = LogMelExtractor(config)
    for row in dataset:
        video = {"video_id": row.video_id, "media_path": row.media_path}
        process_video(extractor, job, video, media_fingerprint(row.media_path))
    return FeatureStore(store_cfg.root)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCluster:
    cluster = start_loopback_cluster(tmp_path_factory.mktemp("resume_cluster"), n_workers=2)
    yield cluster
    cluster.close()


def write_params(folder: Path, rows: list[ManifestRow], **runner: object) -> Path:
    write_manifest(rows, folder / "manifest.csv")
    params = {
        "dataset": {"adapter": "folder", "root": str(folder)},
        "manifest": {"path": str(folder / "manifest.csv"), "failures": str(folder / "manifest_failures.csv")},
        "store": {"root": str(folder / "features")},
        "runner": {"n_workers": 2, "reports": str(folder / "reports"), **runner},
        "results": {"dir": str(folder / "results")},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def start_stage(params: Path) -> subprocess.Popen:
    """``avpipe -p PARAMS extract logmel`` as its own process (the driver)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", CLI, "-p", str(params), "extract", EXTRACTOR]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_shards(
    running: Callable[[], bool], store: FeatureStore, rows: list[ManifestRow], count: int
) -> None:
    """Poll until ``count`` shards exist; meanwhile every shard a reader can see must be whole."""
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        present = [r.video_id for r in rows if store.shard_path(EXTRACTOR, r.video_id).exists()]
        for video_id in present:
            assert store.status(EXTRACTOR, video_id, "any") is not ShardStatus.CORRUPT, video_id
        if len(present) >= count:
            return
        if not running():
            pytest.fail(f"the stage ended before {count} shards were stored")
        time.sleep(POLL_S)
    pytest.fail(f"fewer than {count} shards after {STAGE_TIMEOUT_S:.0f} s")


def shard_stats(store: FeatureStore, rows: list[ManifestRow]) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every shard present: a recomputed shard gets a new inode (atomic rename)."""
    stats = {}
    for row in rows:
        path = store.shard_path(EXTRACTOR, row.video_id)
        if path.exists():
            st = path.stat()
            stats[row.video_id] = (st.st_ino, st.st_mtime_ns)
    return stats


def assert_matches_reference(store: FeatureStore, reference: FeatureStore, rows: list[ManifestRow]) -> None:
    for row in rows:
        got, want = store.read(EXTRACTOR, row.video_id), reference.read(EXTRACTOR, row.video_id)
        assert np.array_equal(got.time, want.time) and np.array_equal(got.frame_index, want.frame_index)
        assert np.array_equal(got.mask, want.mask)
        assert np.array_equal(got.arrays["features"], want.arrays["features"]), row.video_id
    assert store.videos(EXTRACTOR) == sorted(r.video_id for r in rows)
    assert not [p.name for p in store.folder(EXTRACTOR).iterdir() if p.name.endswith(".tmp.h5")]


def read_report(folder: Path) -> dict:
    return json.loads((folder / "reports" / f"{EXTRACTOR}.json").read_text(encoding="utf-8"))


def rerun_stage(params: Path, loopback: LoopbackCluster) -> dict:
    """The stage again, in this process, on the loopback cluster (no second LocalCluster start-up)."""
    loaded = load_params(params, [f"runner.scheduler_address={loopback.address}"])
    assert extract_stage.run(loaded, EXTRACTOR) == 0
    return read_report(params.parent)


def test_driver_killed_part_way_then_rerun(dataset, reference, loopback, tmp_path) -> None:
    params = write_params(tmp_path, dataset)
    store = FeatureStore(tmp_path / "features")
    driver = start_stage(params)  # `avpipe extract logmel` on its own LocalCluster
    try:
        wait_for_shards(lambda: driver.poll() is None, store, dataset, count=2)
        descendants = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == -signal.SIGKILL
    # The LocalCluster's worker processes notice their parent is gone and exit on their own.
    _, alive = psutil.wait_procs(descendants, timeout=30)
    for orphan in alive:
        orphan.kill()
    assert not alive, f"worker processes outlived the killed driver: {[p.pid for p in alive]}"

    statuses = {r.video_id: store.status(EXTRACTOR, r.video_id, "any") for r in dataset}
    assert set(statuses.values()) <= {ShardStatus.STALE, ShardStatus.MISSING}  # "any" hash: whole shards
    kept = shard_stats(store, dataset)
    assert 2 <= len(kept) < len(dataset), "the kill must land part-way through the stage"

    report = rerun_stage(params, loopback)
    assert (report["skipped"], report["done"], report["failed"]) == (len(kept), len(dataset) - len(kept), 0)
    after = shard_stats(store, dataset)
    assert {video_id: after[video_id] for video_id in kept} == kept  # finished shards were not rewritten
    assert_matches_reference(store, reference, dataset)
    # The index lists every shard, those the killed driver never recorded included, and no temp file.
    folder = store.folder(EXTRACTOR)
    assert sorted(store.status_checker(EXTRACTOR).entries) == sorted(r.video_id for r in dataset)
    assert not [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".tmp.h5"))]


def test_worker_killed_part_way_then_rerun(dataset, reference, loopback, tmp_path) -> None:
    from distributed import Client

    params = write_params(tmp_path, dataset, scheduler_address=loopback.address)
    store = FeatureStore(tmp_path / "features")
    outcome: dict[str, object] = {}

    def drive() -> None:
        try:
            outcome["exit"] = extract_stage.run(load_params(params), EXTRACTOR)
        except BaseException as err:  # surfaced by the assertions below
            outcome["error"] = err

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    wait_for_shards(driver.is_alive, store, dataset, count=1)
    with Client(loopback.address, timeout="30s") as client:
        victim_pid = busy_worker_pid(client)
        os.kill(victim_pid, signal.SIGKILL)
        driver.join(STAGE_TIMEOUT_S)
    assert not driver.is_alive(), "the stage did not finish after a worker was killed"
    assert outcome == {"exit": 0}, outcome
    # The scheduler gave the dead worker's video to a live one, and the nanny started a new worker.
    report = read_report(tmp_path)
    assert (report["done"], report["failed"]) == (len(dataset), 0)
    assert_matches_reference(store, reference, dataset)
    loopback.wait_for_workers(2, timeout=60)
    assert victim_pid not in {p.pid for p in loopback.worker_processes()}

    kept = shard_stats(store, dataset)
    report = rerun_stage(params, loopback)
    assert (report["skipped"], report["done"], report["failed"]) == (len(dataset), 0, 0)
    assert shard_stats(store, dataset) == kept


def busy_worker_pid(client) -> int:
    """The pid of a worker that is running one of the stage's tasks right now."""
    deadline = time.monotonic() + 30
    pids = client.run(os.getpid)
    while time.monotonic() < deadline:
        busy = [address for address, keys in client.processing().items() if keys]
        if busy:
            return pids[busy[0]]
        time.sleep(POLL_S)
    pytest.fail("no worker was running a task")
