"""Short videos grouped into Dask tasks (runner.task_seconds): the plan, and identical results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.batching import plan_batches
from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.extract import run_extractor
from avpipe.pipeline.extractors.audio import LogMelConfig
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.manifest_builder import build_manifest
from avpipe.pipeline.store import FeatureStore
from tests.media_factory import make_text_file, make_video

pytestmark = pytest.mark.timeout(180)


def test_plan_batches_packs_short_items_and_keeps_long_ones_alone() -> None:
    items = list("abcdefgh")
    durations = [40.0, 30.0, 12.0, 10.0, 9.0, 2.0, 2.0, 0.0]
    batches = [b.items for b in plan_batches(items, durations, task_seconds=30.0)]
    assert batches == [("a",), ("b",), ("c", "d", "e"), ("f", "g", "h")]
    assert [b.items for b in plan_batches(items, durations, task_seconds=0)] == [(x,) for x in items]
    capped = plan_batches(list(range(10)), [0.0] * 10, task_seconds=5.0, max_per_task=4)
    assert [len(b) for b in capped] == [4, 4, 2]
    with pytest.raises(ValueError, match="3 items but 2 durations"):
        plan_batches([1, 2, 3], [1.0, 2.0], 5.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRow]:
    folder = tmp_path_factory.mktemp("batch_media")
    rows = []
    for i in range(7):
        seconds = 1.0 + 0.3 * i  # distinct lengths, distinct tones: no two arrays alike
        path = make_video(
            folder / f"c{i}.mp4", seconds=seconds, fps=25, size=(32, 24), sample_rate=16000 + 4000 * i
        )
        rows.append(ManifestRow(video_id=f"c{i}", media_path=str(path), duration=seconds))
    broken = make_text_file(folder / "broken.mp4")  # fails on the worker, inside its batch
    # 1.5 s sorts it between c2 and c1: it shares a batch with them (see the plan assertion below).
    rows.append(ManifestRow(video_id="broken", media_path=str(broken), duration=1.5))
    return rows


@pytest.fixture(scope="module")
def threaded_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client


def test_batched_and_unbatched_runs_give_identical_arrays(tmp_path: Path, clips, threaded_client) -> None:
    reports, stores = {}, {}
    for task_seconds in (0.0, 30.0):
        root = tmp_path / f"ts{task_seconds:g}"
        runner = RunnerConfig(task_seconds=task_seconds)
        store_cfg = StoreConfig(root=str(root))
        reports[task_seconds] = run_extractor(
            "logmel", LogMelConfig(), clips, store_cfg, runner, client=threaded_client
        )
        stores[task_seconds] = FeatureStore(root)
    single, batched = reports[0.0], reports[30.0]
    durations = sorted((r.duration for r in clips), reverse=True)
    plan = plan_batches(durations, durations, task_seconds=sum(durations) / 4)  # as for 1 worker
    assert [len(b) for b in plan] == [2, 2, 3, 1] and 1.5 in plan[2].items
    assert single.tasks == len(clips) and batched.tasks <= len(clips) // 2  # grouped
    assert (batched.done, batched.failed) == (single.done, single.failed) == (len(clips) - 1, 1)
    # The broken video fails alone, with the same reason, and takes no batch-mate down.
    assert [(f.video, f.reason) for f in batched.failures] == [(f.video, f.reason) for f in single.failures]
    assert "broken.mp4" in batched.failures[0].reason
    assert batched.frames == single.frames
    for row in clips[:-1]:
        a, b = stores[0.0].read("logmel", row.video_id), stores[30.0].read("logmel", row.video_id)
        for name in ("time", "frame_index", "mask"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.arrays.keys() == b.arrays.keys()
        for name in a.arrays:
            np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
        assert (
            stores[0.0].attrs("logmel", row.video_id)["params_hash"]
            == stores[30.0].attrs("logmel", row.video_id)["params_hash"]
        )


def test_manifest_on_the_cluster_in_batches_equals_the_threaded_one(tmp_path: Path, clips) -> None:
    from distributed import LocalCluster

    dataset = DatasetConfig(adapter="folder", root=str(Path(clips[0].media_path).parent))
    results = {}
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", dashboard_address=None
    ) as cluster:
        for where, runner in (
            ("threads", RunnerConfig()),
            ("cluster", RunnerConfig(scheduler_address=cluster.scheduler_address)),
        ):
            manifest = ManifestConfig(
                path=str(tmp_path / f"{where}.csv"), failures=str(tmp_path / f"{where}_f.csv")
            )
            store = StoreConfig(root=str(tmp_path / f"{where}_store"))
            report = build_manifest(dataset, manifest, store, runner)
            results[where] = (report, Path(manifest.path).read_text(), Path(manifest.failures).read_text())
    (threaded, rows_t, fails_t), (clustered, rows_c, fails_c) = results["threads"], results["cluster"]
    assert rows_c == rows_t and fails_c == fails_t  # byte-identical manifest and failures report
    assert len(clustered.rows) == len(clips) - 1 and len(clustered.failures) == 1
    assert clustered.labels_written == threaded.labels_written == len(clips) - 1
    labels = FeatureStore(tmp_path / "cluster_store")
    assert sorted(labels.status_checker("labels").entries) == sorted(r.video_id for r in clustered.rows)
