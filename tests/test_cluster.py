"""A stage on a real Dask cluster reached by address (``dask scheduler`` + two ``dask worker``
processes on loopback): same shards as on a LocalCluster with another number of workers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline import runner
from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.errors import AvpipeError
from avpipe.pipeline.extract import run_extractor
from avpipe.pipeline.extractors.audio import LogMelConfig
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.runner import GPU_RESOURCE, cluster_info, run_tasks
from avpipe.pipeline.store import FeatureStore
from tests.dask_loopback import LoopbackCluster, start_loopback_cluster
from tests.media_factory import make_video

pytestmark = pytest.mark.timeout(240)

EXTRACTOR = "logmel"
# Distinct lengths, rates and audio offsets, so a video's shard cannot pass for another's.
CLIPS = {
    "clip 1": {"seconds": 2.0, "fps": 25},
    "clip-é/two": {"seconds": 2.6, "fps": 30, "audio_delay": 0.2},
    "three": {"seconds": 1.4, "fps": 15},
    "four": {"seconds": 3.2, "fps": 25, "sample_rate": 16000},
}


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCluster:
    # Worker 1 advertises a GPU resource: CPU tasks still use both workers, GPU tasks only that one.
    cluster = start_loopback_cluster(tmp_path_factory.mktemp("loopback"), n_workers=2, resources={1: "GPU=1"})
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRow]:
    folder = tmp_path_factory.mktemp("cluster_media")
    made = []
    for index, (video_id, spec) in enumerate(CLIPS.items()):
        path = make_video(folder / f"v{index}.mp4", size=(64, 48), **spec)
        made.append(ManifestRow(video_id=video_id, media_path=str(path), duration=spec["seconds"]))
    return made


@pytest.fixture(scope="module")
def remote_run(loopback: LoopbackCluster, rows: list[ManifestRow], tmp_path_factory: pytest.TempPathFactory):
    store_cfg = StoreConfig(root=str(tmp_path_factory.mktemp("remote_store")))
    report = run_extractor(
        EXTRACTOR, LogMelConfig(), rows, store_cfg, RunnerConfig(scheduler_address=loopback.address)
    )
    return store_cfg, report


def test_stage_on_cluster_by_address_matches_local_cluster(remote_run, rows, loopback, tmp_path) -> None:
    remote_cfg, remote = remote_run
    local_cfg = StoreConfig(root=str(tmp_path / "local"))
    local = run_extractor(EXTRACTOR, LogMelConfig(), rows, local_cfg, RunnerConfig(n_workers=1))

    assert (remote.done, remote.failed, remote.skipped) == (len(rows), 0, 0), remote.failures
    assert (local.done, local.failed) == (len(rows), 0), local.failures
    assert remote.cluster == loopback.address and remote.workers == 2 and local.workers == 1
    # Both workers of the real cluster did some of the videos.
    assert len(remote.videos_per_worker) == 2 and sum(remote.videos_per_worker.values()) == len(rows)
    assert (
        remote.frames
        == local.frames
        == sum(FeatureStore(local_cfg.root).attrs(EXTRACTOR, r.video_id)["n_frames"] for r in rows)
    )
    remote_store, local_store = FeatureStore(remote_cfg.root), FeatureStore(local_cfg.root)
    for row in rows:
        a, b = remote_store.read(EXTRACTOR, row.video_id), local_store.read(EXTRACTOR, row.video_id)
        assert len(a) > 0 and np.array_equal(a.time, b.time) and np.array_equal(a.frame_index, b.frame_index)
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.arrays["features"], b.arrays["features"])
        assert (
            remote_store.attrs(EXTRACTOR, row.video_id)["params_hash"]
            == local_store.attrs(EXTRACTOR, row.video_id)["params_hash"]
        )
    assert sorted(remote_store.videos(EXTRACTOR)) == sorted(r.video_id for r in rows)


def test_rerun_on_cluster_skips_every_stored_shard(remote_run, rows, loopback) -> None:
    store_cfg, _ = remote_run
    store = FeatureStore(store_cfg.root)
    before = {r.video_id: os.stat(store.shard_path(EXTRACTOR, r.video_id)) for r in rows}
    again = run_extractor(
        EXTRACTOR, LogMelConfig(), rows, store_cfg, RunnerConfig(scheduler_address=loopback.address)
    )
    assert (again.done, again.skipped, again.failed, again.frames) == (0, len(rows), 0, 0)
    for row in rows:
        after = os.stat(store.shard_path(EXTRACTOR, row.video_id))
        assert (after.st_ino, after.st_mtime_ns) == (
            before[row.video_id].st_ino,
            before[row.video_id].st_mtime_ns,
        )


def test_gpu_tasks_go_only_to_workers_with_the_gpu_resource(loopback: LoopbackCluster) -> None:
    from distributed import Client

    with Client(loopback.address, timeout="30s") as client:
        info = cluster_info(client)
        assert (info.workers, info.gpu_workers) == (2, 1)
        gpu_worker = next(
            address
            for address, worker in client.scheduler_info(n_workers=-1)["workers"].items()
            if worker.get("resources", {}).get(GPU_RESOURCE)
        )
        tasks = [(str(i), i) for i in range(6)]
        on_gpu = run_tasks(client, _worker_address, tasks, desc="gpu", resources={GPU_RESOURCE: 1})
        anywhere = run_tasks(client, _worker_address, tasks, desc="cpu")
    assert {o.result for o in on_gpu} == {gpu_worker}
    assert all(o.ok for o in anywhere) and len(anywhere) == len(tasks)


def _worker_address(_: int) -> str:
    import time

    from distributed import get_worker

    time.sleep(0.05)  # long enough that one worker cannot take every CPU task alone
    return get_worker().address


def test_unreachable_scheduler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, rows, tmp_path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", "2s")
    cfg = RunnerConfig(scheduler_address=f"tcp://127.0.0.1:{port}")
    with pytest.raises(AvpipeError, match=rf"runner.scheduler_address: cannot reach .*127.0.0.1:{port}"):
        run_extractor(EXTRACTOR, LogMelConfig(), rows, StoreConfig(root=str(tmp_path / "s")), cfg)
    assert not Path(tmp_path / "s" / EXTRACTOR).exists() or not list(
        (tmp_path / "s" / EXTRACTOR).glob("*.h5")
    )
