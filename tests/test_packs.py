"""Multi-video shards (store.videos_per_shard): same reader API, resume and skip; atomic under SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.extract import run_extractor
from avpipe.pipeline.extractors.audio import LogMelConfig
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.packs import PACKS_FOLDER
from avpipe.pipeline.store import FeatureStore, ShardStatus
from tests.dask_loopback import REPO
from tests.media_factory import make_text_file, make_video
from tests.test_index import assert_index_truthful, plain_index

pytestmark = pytest.mark.timeout(180)

VICTIM = REPO / "tests" / "_index_victim.py"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRow]:
    folder = tmp_path_factory.mktemp("pack_media")
    rows = []
    for i in range(7):
        seconds = 1.0 + 0.25 * i
        path = make_video(
            folder / f"c{i}.mp4", seconds=seconds, fps=25, size=(32, 24), sample_rate=16000 + 2000 * i
        )
        rows.append(ManifestRow(video_id=f"c{i}", media_path=str(path), duration=seconds))
    broken = make_text_file(folder / "broken.mp4")
    rows.append(ManifestRow(video_id="broken", media_path=str(broken), duration=1.4))
    return rows


@pytest.fixture(scope="module")
def threaded_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client


def run(rows, root: Path, client, videos_per_shard: int):
    store_cfg = StoreConfig(root=str(root), videos_per_shard=videos_per_shard)
    return run_extractor(
        "logmel", LogMelConfig(), rows, store_cfg, RunnerConfig(task_seconds=30), client=client
    )


def test_multi_video_shards_keep_the_reader_api_resume_and_skip(tmp_path, clips, threaded_client) -> None:
    good = [r.video_id for r in clips if r.video_id != "broken"]
    single = run(clips, tmp_path / "single", threaded_client, videos_per_shard=1)
    packed = run(clips, tmp_path / "packed", threaded_client, videos_per_shard=3)
    assert (packed.done, packed.failed) == (single.done, single.failed) == (len(good), 1)
    assert [(f.video, f.reason) for f in packed.failures] == [(f.video, f.reason) for f in single.failures]
    a, b = FeatureStore(tmp_path / "single"), FeatureStore(tmp_path / "packed")
    folder = b.folder("logmel")
    packs = sorted((folder / PACKS_FOLDER).glob("*.h5"))
    own = list(folder.glob("*.h5"))  # a video alone in its task (the longest) keeps its own shard
    assert len(packs) >= 1 and len(packs) + len(own) < len(good)
    assert b.videos("logmel") == a.videos("logmel") == sorted(good)
    for video_id in good:
        x, y = a.read("logmel", video_id), b.read("logmel", video_id)
        for name in ("time", "frame_index", "mask"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        np.testing.assert_array_equal(x.arrays["features"], y.arrays["features"])
        assert b.attrs("logmel", video_id)["params_hash"] == a.attrs("logmel", video_id)["params_hash"]
        np.testing.assert_array_equal(
            b.read_rows("logmel", video_id, "features", 2, 5), x.arrays["features"][2:5]
        )
    assert sorted(assert_index_truthful(b, "logmel")) == sorted(good)

    again = run(clips, tmp_path / "packed", threaded_client, videos_per_shard=3)  # resume: all stored
    assert (again.skipped, again.done, again.skipped_by_index) == (len(good), 0, len(good))
    assert sorted(b.rebuild_index("logmel")) == sorted(good)

    b.remove("logmel", good[0])
    assert b.status("logmel", good[0], "any") is ShardStatus.MISSING
    assert b.videos("logmel") == sorted(good[1:])
    assert sorted(b.rebuild_index("logmel")) == sorted(good[1:])  # removed from its pack too
    for video_id in good[1:]:
        np.testing.assert_array_equal(
            b.read("logmel", video_id).arrays["features"], a.read("logmel", video_id).arrays["features"]
        )

    # Back to one file per video: the rewritten video's own shard wins over its packed copy.
    c1 = next(r for r in clips if r.video_id == good[1])
    b.shard_path("logmel", c1.video_id).unlink(missing_ok=True)
    b.write("logmel", c1.video_id, a.read("logmel", c1.video_id), extractor_version="x", params_hash="other")
    assert b.status("logmel", c1.video_id, "other") is ShardStatus.STORED
    assert b.sync_index("logmel").added >= 1
    assert plain_index(folder)[c1.video_id]["shard"] == b.shard_path("logmel", c1.video_id).name


def test_multi_video_shard_killed_mid_write_leaves_earlier_shards_and_index_consistent(tmp_path) -> None:
    store = FeatureStore(tmp_path)
    folder = tmp_path / "feat"
    command = [sys.executable, str(VICTIM), str(tmp_path), "feat", "v", "--pack", "3", "--rows", "20000"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while True:  # a pack committed, and the next one half written
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the victim wrote no pack"
            temps = (
                list((folder / PACKS_FOLDER).glob(".*.tmp.h5")) if (folder / PACKS_FOLDER).is_dir() else []
            )
            done = list((folder / PACKS_FOLDER).glob("p*.h5")) if temps else []
            if done and any(t.stat().st_size > 1 << 20 for t in temps if t.exists()):
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    recorded = assert_index_truthful(store, "feat")  # every entry readable, right stat
    assert recorded and all(entry["shard"].startswith(f"{PACKS_FOLDER}/") for entry in recorded.values())
    for video_id in recorded:
        assert store.read("feat", video_id).arrays["features"][0, 0] == int(video_id.split("-")[1])
    store.sync_index("feat")
    store.cleanup_temp("feat", max_age_s=0)
    videos = assert_index_truthful(store, "feat")
    committed = {p.name for p in (folder / PACKS_FOLDER).glob("p*.h5")}
    assert {entry["shard"].split("/")[1] for entry in videos.values()} == committed
    assert len(videos) == 3 * len(committed)  # whole packs only: nothing of the killed one
    assert not list((folder / PACKS_FOLDER).glob(".*"))
