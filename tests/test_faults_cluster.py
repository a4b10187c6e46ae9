"""Fault battery, the cluster: remote workers in another working folder, memory blow-ups, hangs."""

from __future__ import annotations

from pathlib import Path

import pytest

from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.extract import run_extractor
from avpipe.pipeline.extractors.audio import LogMelConfig
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.store import FeatureStore
from tests.dask_loopback import REPO, start_loopback_cluster
from tests.media_factory import make_video

pytestmark = pytest.mark.timeout(240)


def test_relative_store_root_with_remote_workers_lands_in_the_drivers_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = []
    for index in range(2):
        path = make_video(tmp_path / f"clip {index}.mp4", seconds=1.0 + index, fps=10, size=(32, 32))
        rows.append(ManifestRow(video_id=f"clip {index}", media_path=str(path), duration=1.0 + index))
    cluster = start_loopback_cluster(tmp_path / "cluster", n_workers=1)  # workers run in the repository
    try:
        monkeypatch.chdir(tmp_path)
        runner = RunnerConfig(scheduler_address=cluster.address)
        store_cfg = StoreConfig(root="features")  # relative: the driver's working folder
        first = run_extractor("logmel", LogMelConfig(), rows, store_cfg, runner)
        assert (first.done, first.failed) == (2, 0), first.failures
        again = run_extractor("logmel", LogMelConfig(), rows, store_cfg, runner)
        assert (again.done, again.skipped) == (0, 2)
    finally:
        cluster.close()
    assert FeatureStore(tmp_path / "features").videos("logmel") == ["clip 0", "clip 1"]
    assert not (REPO / "features").exists()


# --------------------------------------------------------------------------- memory blow-ups


@pytest.fixture(scope="module")
def frame_clips(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRow]:
    """Three small clips and one of 8000x8000 frames: decoding it needs ~1 GB (ru_maxrss 1.07 GB)."""
    from tests.media_factory import run_ffmpeg

    folder = tmp_path_factory.mktemp("frames")
    rows = []
    for index in range(3):
        path = make_video(folder / f"small {index}.mp4", seconds=1.0, fps=10, size=(64, 48), audio=False)
        rows.append(ManifestRow(video_id=f"small {index}", media_path=str(path), duration=1.0))
    huge = folder / "huge.mp4"
    run_ffmpeg(
        [
            *("-f", "lavfi", "-i", "testsrc2=size=8000x8000:rate=5", "-t", "1", "-c:v", "libx264"),
            *("-preset", "ultrafast", "-pix_fmt", "yuv420p", str(huge)),
        ]
    )
    rows.append(ManifestRow(video_id="huge", media_path=str(huge), duration=2.0))  # longest: starts first
    return rows


def _frame_stats(rows: list[ManifestRow], tmp_path: Path, **runner: object):
    from tests.test_bad_inputs import FrameStatsConfig, frame_stats_registry

    cfg = RunnerConfig(n_workers=1, device="cpu", **runner)
    store_cfg = StoreConfig(root=str(tmp_path / "features"))
    return run_extractor(
        "frame-stats", FrameStatsConfig(), rows, store_cfg, cfg, registry=frame_stats_registry()
    )


def test_a_video_over_the_memory_limit_fails_alone_and_charges_no_other(
    frame_clips: list[ManifestRow], tmp_path: Path
) -> None:
    report = _frame_stats(
        frame_clips, tmp_path, memory_limit="450MB", max_pixels=10**8, allowed_worker_deaths=0
    )
    assert report.done == 3, report.failures
    (failure,) = report.failures
    assert failure.video == "huge"
    assert "also when it ran alone" in failure.reason and "runner.memory_limit" in failure.reason
    assert "GiB per worker" in failure.reason


def test_max_pixels_refuses_huge_frames_before_decoding(
    frame_clips: list[ManifestRow], tmp_path: Path
) -> None:
    report = _frame_stats(frame_clips, tmp_path)  # default max_pixels: 8K UHD
    assert report.done == 3
    (failure,) = report.failures
    assert failure.video == "huge" and "8000x8000" in failure.reason and "runner.max_pixels" in failure.reason


# --------------------------------------------------------------------------- the watchdog


def _never_runs(payload: int) -> int:
    return payload


@pytest.mark.timeout(120)
def test_the_watchdog_ends_a_stage_whose_workers_are_all_gone(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from distributed import Client

    from avpipe.pipeline.runner import run_tasks
    from avpipe.pipeline.supervise import Supervision, live_workers

    cluster = start_loopback_cluster(tmp_path / "cluster", n_workers=1)
    try:
        with Client(cluster.address, timeout="30s") as client:
            for process in [*cluster.worker_processes(), *(psutil_process(n.pid) for n in cluster.nannies)]:
                os.kill(process.pid, signal.SIGKILL)  # the nanny and its worker, by PID: nobody restarts it
            deadline = time.monotonic() + 30
            while live_workers(client) and time.monotonic() < deadline:
                time.sleep(0.2)
            started = time.monotonic()
            tasks = [(f"v{i}", i) for i in range(5)]
            outcomes = run_tasks(client, _never_runs, tasks, desc="orphans", supervision=Supervision(3.0))
            waited = time.monotonic() - started
    finally:
        cluster.close()
    assert [o.key for o in outcomes] == [f"v{i}" for i in range(5)]
    assert all(not o.ok and "no Dask worker was alive" in o.reason for o in outcomes)
    assert 3.0 <= waited < 20.0


def psutil_process(pid: int):
    import psutil

    return psutil.Process(pid)


def test_a_worker_that_cannot_see_the_store_says_so(tmp_path: Path) -> None:
    from avpipe.pipeline.errors import StoreError
    from avpipe.pipeline.extract import ExtractionJob, check_paths
    from avpipe.pipeline.extractors.audio import LogMelExtractor

    job = ExtractionJob.create(
        "logmel", LogMelExtractor, LogMelConfig(), StoreConfig(root=str(tmp_path / "x"))
    )
    with pytest.raises(StoreError, match=r"must see the driver's store\.root at the same path"):
        check_paths(job, str(tmp_path / "clip.mp4"))
    relative = ExtractionJob.create("logmel", LogMelExtractor, LogMelConfig(), StoreConfig(root="features"))
    with pytest.raises(StoreError, match="must be absolute"):
        check_paths(relative, str(tmp_path / "clip.mp4"))
    (tmp_path / "x" / "logmel").mkdir(parents=True)
    check_paths(job, str(tmp_path / "clip.mp4"))
