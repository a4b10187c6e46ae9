"""The runner's pieces: task outcomes and cancellation, the run report, devices and GPU resources,
worker threads, and the failures report files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.errors import AvpipeError, ExtractorError, MediaError
from avpipe.pipeline.extract import ExtractionJob, run_extractor, task_resources, uses_device, write_report
from avpipe.pipeline.extractors.audio import LogMelConfig, LogMelExtractor
from avpipe.pipeline.extractors.embeddings import EmbeddingExtractor
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.registry import ExtractorRegistry
from avpipe.pipeline.runner import (
    GPU_RESOURCE,
    ClusterInfo,
    Failure,
    RunReport,
    TaskOutcome,
    describe_error,
    open_client,
    run_tasks,
    visible_gpu_count,
    worker_device,
)
from tests.dask_loopback import REPO

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def threaded_client():
    """An in-process cluster (threads): enough to exercise the task loop in a fraction of a second."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client


def _square_or_fail(value: int) -> int:
    if value == 3:
        raise MediaError("/data/three.mp4", "video decoding failed near t=1.200s")
    if value == 5:
        raise ValueError("five is not welcome")
    return value * value


def _sleep_then_mark(args: tuple[str, int]) -> int:
    folder, index = args
    time.sleep(0.3)
    (Path(folder) / f"ran-{index}").touch()
    return index


# --------------------------------------------------------------------------- run_tasks


def test_run_tasks_captures_each_failure_and_reports_every_task(threaded_client) -> None:
    tasks = [(f"video {i}", i) for i in range(7)]
    seen: list[TaskOutcome] = []
    outcomes = run_tasks(threaded_client, _square_or_fail, tasks, desc="squares", on_done=seen.append)
    assert seen == outcomes and len(outcomes) == len(tasks)
    by_key = {o.key: o for o in outcomes}
    assert {k for k, o in by_key.items() if not o.ok} == {"video 3", "video 5"}
    assert by_key["video 3"].reason == "/data/three.mp4: video decoding failed near t=1.200s"
    assert by_key["video 5"].reason == "ValueError: five is not welcome"
    assert {k: o.result for k, o in by_key.items() if o.ok} == {f"video {i}": i * i for i in (0, 1, 2, 4, 6)}


def test_tasks_start_in_the_order_given(threaded_client) -> None:
    # One thread: the completion order is the start order, which follows the list (longest first).
    tasks = [(key, 0) for key in ("c", "a", "d", "b")]
    outcomes = run_tasks(threaded_client, _square_or_fail, tasks, desc="order")
    assert [o.key for o in outcomes] == ["c", "a", "d", "b"]


def test_driver_leaving_early_cancels_its_pending_tasks(threaded_client, tmp_path) -> None:
    tasks = [(str(i), (str(tmp_path), i)) for i in range(6)]

    def stop(outcome: TaskOutcome) -> None:
        raise KeyboardInterrupt  # the user pressing Ctrl-C after the first video

    with pytest.raises(KeyboardInterrupt):
        run_tasks(threaded_client, _sleep_then_mark, tasks, desc="interrupted", on_done=stop)
    time.sleep(1.5)  # long enough for every task to have run, had it not been cancelled
    assert len(list(tmp_path.glob("ran-*"))) <= 2


def test_describe_error_names_our_errors_plainly_and_others_with_their_type() -> None:
    from distributed.scheduler import KilledWorker

    assert (
        describe_error(MediaError("/x.mp4", "file is empty (0 bytes)")) == "/x.mp4: file is empty (0 bytes)"
    )
    assert describe_error(KeyError("boxes")) == "KeyError: 'boxes'"
    assert "worker process died" in describe_error(KilledWorker("task-1", "tcp://w", allowed_failures=3))


# --------------------------------------------------------------------------- report


def test_run_report_speed_summary_and_dict() -> None:
    report = RunReport(stage="logmel", done=3, skipped=2, failed=1, frames=900, seconds=12.0)
    report.processing_seconds, report.workers = 4.5, 2
    report.videos_per_worker = {"tcp://b": 1, "tcp://a": 2}
    assert report.frames_per_second == pytest.approx(200.0)
    assert report.summary().startswith("logmel: 3 done, 2 skipped (already stored), 1 failed; 900 frames")
    assert "200.0 frames/s" in report.summary() and "stage took 12.0 s" in report.summary()
    data = report.to_dict()
    assert (data["done"], data["skipped"], data["failed"], data["frames_per_second"]) == (3, 2, 1, 200.0)
    assert list(data["videos_per_worker"]) == ["tcp://a", "tcp://b"]
    assert json.loads(json.dumps(data)) == data
    assert RunReport(stage="x").frames_per_second == 0.0


def test_write_report_round_trips_awkward_text(tmp_path) -> None:
    report = RunReport(stage="frame-stats", done=1, failed=2)
    report.failures = [
        Failure("sub dir/ünï 日本", "frame-stats", '/d/ünï 日本.mp4: truncated, "moov" missing'),
        Failure("two", "frame-stats", "line one\nline two"),
    ]
    path = write_report(report, tmp_path / "reports")
    assert json.loads(path.read_text(encoding="utf-8"))["failed"] == 2
    with (tmp_path / "reports" / "frame-stats_failures.csv").open(newline="", encoding="utf-8") as fh:
        rows = [tuple(r.values()) for r in csv.DictReader(fh)]
    assert rows == [(f.video, f.stage, f.reason) for f in report.failures]
    write_report(RunReport(stage="frame-stats"), tmp_path / "reports")  # a clean re-run clears the rows
    assert (tmp_path / "reports" / "frame-stats_failures.csv").read_text().splitlines() == [
        "video,stage,reason"
    ]
    assert not list((tmp_path / "reports").glob("*.tmp"))


# --------------------------------------------------------------------------- devices


@pytest.mark.parametrize(
    ("requested", "name", "gpus", "expected"),
    [
        ("cuda", 0, 2, "cuda:0"),
        ("cuda", 3, 2, "cuda:1"),
        ("cuda", "tcp://10.0.0.5:3412", 2, "cuda"),
        ("cuda", 1, 1, "cuda"),
        ("cuda:1", 0, 4, "cuda:1"),
        ("cpu", 1, 2, "cpu"),
    ],
)
def test_worker_device(requested, name, gpus, expected) -> None:
    assert worker_device(requested, name, gpus) == expected


@pytest.mark.parametrize(("visible", "count"), [("0,1", 2), ("3", 1), ("", 0), ("-1", 0)])
def test_visible_gpu_count_follows_cuda_visible_devices(monkeypatch, visible, count) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpu_count() == count


def _job(extractor_class, device: str) -> ExtractionJob:
    return ExtractionJob("x", extractor_class, None, "h", "{}", StoreConfig(), None, device, 1, "p")


def test_only_model_extractors_ask_for_a_gpu() -> None:
    embedding = next(c for c in EmbeddingExtractor.__subclasses__())
    assert uses_device(embedding) and not uses_device(LogMelExtractor)
    gpu_cluster = ClusterInfo("tcp://s", workers=3, gpu_workers=2, dashboard=None)
    cpu_cluster = ClusterInfo("tcp://s", workers=3, gpu_workers=0, dashboard=None)
    assert task_resources(_job(embedding, "auto"), gpu_cluster) == {GPU_RESOURCE: 1}
    assert task_resources(_job(embedding, "cuda:0"), gpu_cluster) == {GPU_RESOURCE: 1}
    assert task_resources(_job(embedding, "cpu"), gpu_cluster) is None
    assert task_resources(_job(LogMelExtractor, "auto"), gpu_cluster) is None
    assert task_resources(_job(embedding, "auto"), cpu_cluster) is None
    with pytest.raises(AvpipeError, match=r"runner.device is 'cuda'.*none of the 3 Dask workers"):
        task_resources(_job(embedding, "cuda"), cpu_cluster)


# --------------------------------------------------------------------------- worker processes


def test_configure_worker_threads_sizes_torch_and_opencv_pools() -> None:
    code = (
        "import cv2, torch; from avpipe.pipeline.runner import configure_worker_threads; "
        "configure_worker_threads(3); print(torch.get_num_threads(), cv2.getNumThreads())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "3"]


def _thread_env() -> tuple[str, str]:
    import os

    return os.environ.get("OMP_NUM_THREADS", ""), os.environ.get("MKL_NUM_THREADS", "")


def test_local_cluster_workers_get_the_torch_thread_count_and_a_dashboard(caplog) -> None:
    cfg = RunnerConfig(n_workers=4, torch_threads=2, device="cpu")
    with caplog.at_level("INFO", logger="avpipe.pipeline.runner"), open_client(cfg, max_workers=1) as client:
        env = client.run(_thread_env)
        link = client.dashboard_link
    assert list(env.values()) == [("2", "2")]  # capped to one worker, with 2 threads for torch and BLAS
    assert link.startswith("http://") and any(link in m for m in caplog.messages)


def _profiler_state(dask_worker) -> tuple[bool, bool]:
    import dask

    # The worker's periodic callback that samples thread stacks exists only when profiling is on.
    return dask.config.get(
        "distributed.worker.profile.enabled"
    ), "profile-cycle" in dask_worker.periodic_callbacks


@pytest.mark.parametrize("enabled", [False, True])
def test_local_cluster_workers_profile_only_when_asked(enabled: bool) -> None:
    cfg = RunnerConfig(n_workers=1, device="cpu", worker_profile=enabled)
    with open_client(cfg) as client:
        states = client.run(_profiler_state)
    assert list(states.values()) == [(enabled, enabled)]


# --------------------------------------------------------------------------- run_extractor without a cluster


def test_preflight_failure_stops_the_stage_before_any_video(tmp_path) -> None:
    class NoWeights(LogMelExtractor):
        name = "no-weights"

        def preflight(self) -> None:
            raise ExtractorError("no-weights: weights file /models/none.pt does not exist")

    registry = ExtractorRegistry()
    registry.add(NoWeights, origin="test")
    rows = [ManifestRow(video_id="a", media_path=str(tmp_path / "a.mp4"))]
    with pytest.raises(ExtractorError, match=r"none\.pt does not exist"):
        run_extractor(
            "no-weights",
            LogMelConfig(),
            rows,
            StoreConfig(root=str(tmp_path)),
            RunnerConfig(),
            registry=registry,
        )
    assert not (tmp_path / "no-weights").exists()


def test_videos_that_cannot_start_fail_on_the_driver_without_a_cluster(tmp_path) -> None:
    rows = [ManifestRow(video_id="gone", media_path=str(tmp_path / "gone.mp4"))]
    report = run_extractor("logmel", LogMelConfig(), rows, StoreConfig(root=str(tmp_path)), RunnerConfig())
    assert (report.done, report.failed, report.workers) == (0, 1, 0)  # no task, so no cluster started
    assert report.failures == [
        Failure("gone", "logmel", f"{tmp_path / 'gone.mp4'}: cannot fingerprint: no such file")
    ]
    embedding = next(c for c in EmbeddingExtractor.__subclasses__())
    report = run_extractor(
        embedding.name, embedding.config_class(), rows, StoreConfig(root=str(tmp_path)), RunnerConfig()
    )
    assert (
        report.failed == 1 and "no usable faces shard, run the faces stage first" in report.failures[0].reason
    )
