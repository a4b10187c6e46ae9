"""The store index (snapshot + append-only log): O(1) records, SIGKILL at any moment, concurrent
writers, a full disk during the driver's index writes, shards a killed driver never recorded."""

from __future__ import annotations

import errno
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline import index as index_module
from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.extract import ExtractionJob, process_video, run_extractor
from avpipe.pipeline.extractors.audio import LogMelConfig, LogMelExtractor
from avpipe.pipeline.fingerprint import media_fingerprint
from avpipe.pipeline.index import INDEX_FILE, INDEX_LOG_FILE, ShardIndex
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.runner import RunReport
from avpipe.pipeline.store import FeatureStore, ShardStatus
from avpipe.pipeline.types import FeatureSet
from tests.dask_loopback import REPO
from tests.media_factory import make_video

pytestmark = pytest.mark.timeout(180)

VICTIM = REPO / "tests" / "_index_victim.py"
EXTRACTOR = "logmel"


def plain_index(folder: Path) -> dict[str, dict]:
    """The index as `jq`/`cat` see it: index.json's videos, then index.log's JSON lines in order
    (lines that do not parse are torn appends and are skipped)."""
    videos = {}
    snapshot = folder / INDEX_FILE
    if snapshot.exists():
        payload = json.loads(snapshot.read_text(encoding="utf-8"))
        assert payload["format"] == "avpipe-index"
        videos = payload["videos"]
    log_file = folder / INDEX_LOG_FILE
    for line in log_file.read_bytes().split(b"\n") if log_file.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["entry"] is None:
            videos.pop(record["video"], None)
        else:
            videos[record["video"]] = record["entry"]
    return videos


def shard_names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.h5") if not p.name.startswith(".")}


def index_temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".index.json.*.tmp"))


def assert_index_truthful(store: FeatureStore, extractor: str) -> dict[str, dict]:
    """Every entry the index holds names an existing, readable shard of that video with that stat."""
    folder = store.folder(extractor)
    videos = plain_index(folder)
    for video_id, entry in videos.items():
        path = folder / entry["shard"]
        if not entry["shard"].startswith("packs/"):  # else a multi-video shard (tests/test_packs.py)
            assert path == store.shard_path(extractor, video_id)
        stat = path.stat()
        assert (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns), video_id
        assert store.status(extractor, video_id, entry["params_hash"]) is ShardStatus.STORED
    assert ShardIndex(folder, extractor).load().entries == videos
    return videos


def start_victim(root: Path, prefix: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, str(VICTIM), str(root), "feat", prefix, *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_log(folder: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / INDEX_LOG_FILE).exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the victim never recorded a shard"
        time.sleep(0.005)


# ------------------------------------------------------------------------------ kills and concurrency


def test_index_updates_survive_sigkill_at_any_moment(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    folder = tmp_path / "feat"
    rng = random.Random(1716)
    for trial in range(6):
        before = shard_names(folder) if folder.exists() else set()
        proc = start_victim(tmp_path, f"t{trial}", "--compact-every", str(3 + trial))
        try:
            wait_for_log(folder, proc)
            time.sleep(rng.uniform(0.0, 0.4))  # somewhere in write / record / append / compaction
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        # Right after the kill: the index is readable and never lies; at most the shard whose
        # record the kill interrupted is missing from it.
        videos = assert_index_truthful(store, "feat")
        new = shard_names(folder) - before
        unlisted = new - {entry["shard"] for entry in videos.values()}
        assert len(unlisted) <= 1, unlisted
    # The next run's start: every shard listed, nothing left over, later records still land.
    store.sync_index("feat")
    store.cleanup_temp("feat", max_age_s=0)
    videos = assert_index_truthful(store, "feat")
    assert {entry["shard"] for entry in videos.values()} == shard_names(folder)
    assert index_temp_files(folder) == [] and not list(folder.glob(".*.tmp.h5"))
    assert (folder / INDEX_LOG_FILE).read_bytes() == b""  # compacted
    done = start_victim(tmp_path, "after", "--count", "4", "--compact-every", "100")
    assert done.wait(timeout=60) == 0, done.communicate()[1]
    assert {f"after-{i:05d}" for i in range(4)} <= set(assert_index_truthful(store, "feat"))


def test_index_keeps_every_record_of_concurrent_stages(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    count = 60
    procs = [start_victim(tmp_path, prefix, "--count", str(count), "--compact-every", "9") for prefix in "ab"]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.communicate()[1]
    videos = assert_index_truthful(store, "feat")
    assert sorted(videos) == sorted(f"{p}-{i:05d}" for p in "ab" for i in range(count))
    assert index_temp_files(tmp_path / "feat") == []


def test_torn_log_line_is_skipped_and_closed_by_the_next_append(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.write("feat", "a", _features(), extractor_version="1", params_hash="p")
    store.record("feat", "a")
    store.write("feat", "b", _features(), extractor_version="1", params_hash="p")
    log_file = tmp_path / "feat" / INDEX_LOG_FILE
    with log_file.open("ab") as handle:
        handle.write(b'{"entry": {"shard": "b.h5", "params_ha')  # a writer killed mid-append
    assert sorted(ShardIndex(tmp_path / "feat", "feat").load().entries) == ["a"]
    store.record("feat", "b")
    assert sorted(plain_index(tmp_path / "feat")) == ["a", "b"]
    loaded = ShardIndex(tmp_path / "feat", "feat").load()
    assert sorted(loaded.entries) == ["a", "b"] and loaded.bad_lines == 1
    store.compact_index("feat")
    assert log_file.read_bytes() == b"" and sorted(plain_index(tmp_path / "feat")) == ["a", "b"]


def test_record_cost_does_not_grow_with_the_index(tmp_path: Path) -> None:
    """O(1): recording into a 20,000-entry index appends as many bytes as into an empty one."""
    store = FeatureStore(tmp_path)
    big = {f"v{i:06d}": {"shard": f"v{i:06d}.h5", "params_hash": "p", "n_frames": 1} for i in range(20000)}
    ShardIndex(tmp_path / "feat", "feat").replace(big)
    snapshot_bytes = (tmp_path / "feat" / INDEX_FILE).stat().st_size
    store.write("feat", "new", _features(), extractor_version="1", params_hash="p")
    store.record("feat", "new")
    assert (tmp_path / "feat" / INDEX_FILE).stat().st_size == snapshot_bytes  # not rewritten
    assert (tmp_path / "feat" / INDEX_LOG_FILE).stat().st_size < 400
    assert "new" in store.status_checker("feat").entries


def test_record_with_the_writers_entry_checks_it_still_describes_the_shard(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    first = store.write_shard("feat", "v", [_features()], 4, extractor_version="1", params_hash="old")
    time.sleep(0.01)
    store.write("feat", "v", _features(), extractor_version="1", params_hash="new")  # another writer
    store.record("feat", "v", first.entry)  # stale entry: the shard is read instead
    assert plain_index(tmp_path / "feat")["v"]["params_hash"] == "new"
    assert_index_truthful(store, "feat")
    with pytest.raises(StoreError, match="no shard for video 'gone'"):
        store.record("feat", "gone", {**first.entry, "shard": "gone.h5"})


def _features() -> FeatureSet:
    return FeatureSet(
        time=np.arange(4) / 25.0,
        frame_index=np.arange(4),
        mask=np.ones(4, np.uint8),
        arrays={"f": np.ones((4, 2))},
    )


# ------------------------------------------------------------------------------ the stage (issue 17)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRow]:
    folder = tmp_path_factory.mktemp("index_media")
    rows = []
    for i in range(5):
        seconds = 1.0 + 0.2 * i
        path = make_video(folder / f"clip{i}.mp4", seconds=seconds, fps=25, size=(32, 24))
        rows.append(ManifestRow(video_id=f"clip{i}", media_path=str(path), duration=seconds))
    return rows


@pytest.fixture(scope="module")
def threaded_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client


def run_logmel(rows: list[ManifestRow], root: Path, client) -> RunReport:
    return run_extractor(
        EXTRACTOR, LogMelConfig(), rows, StoreConfig(root=str(root)), RunnerConfig(), client=client
    )


def test_index_survives_enospc_on_driver_write(tmp_path, clips, threaded_client, monkeypatch) -> None:
    real_write_all = index_module._write_all
    calls = {"n": 0}

    def disk_fills_up(fd: int, data: bytes) -> None:
        # The first index write lands; from then on the disk is full, after half of each write.
        calls["n"] += 1
        if calls["n"] <= 1:
            return real_write_all(fd, data)
        real_write_all(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_module, "_write_all", disk_fills_up)
    report = run_logmel(clips, tmp_path, threaded_client)  # must not raise
    assert report.done + report.failed == len(clips) and report.failed >= len(clips) - 1
    assert report.index_errors >= report.failed
    assert all("No space left on device" in f.reason and "shard is kept" in f.reason for f in report.failures)
    store = FeatureStore(tmp_path)
    folder = store.folder(EXTRACTOR)
    assert index_temp_files(folder) == []  # the failed snapshot writes removed their temp files
    assert_index_truthful(store, EXTRACTOR)  # valid: no torn line left, every entry true
    for row in clips:  # every shard was kept
        assert store.read(EXTRACTOR, row.video_id).arrays["features"].shape[0] > 0

    monkeypatch.setattr(index_module, "_write_all", real_write_all)  # space freed
    again = run_logmel(clips, tmp_path, threaded_client)
    assert (again.skipped, again.done, again.failed, again.index_errors) == (len(clips), 0, 0, 0)
    assert again.index_synced == report.failed
    assert sorted(assert_index_truthful(store, EXTRACTOR)) == sorted(r.video_id for r in clips)


def test_index_lists_shards_written_before_driver_kill(tmp_path, clips, threaded_client) -> None:
    store_cfg = StoreConfig(root=str(tmp_path))
    store = FeatureStore(tmp_path)
    first = run_logmel(clips[:2], tmp_path, threaded_client)
    assert first.done == 2
    # Workers finished three more videos, then the driver was killed before it recorded them.
    job = ExtractionJob.create(EXTRACTOR, LogMelExtractor, LogMelConfig(), store_cfg)
    extractor = LogMelExtractor(LogMelConfig())
    for row in clips[2:]:
        video = {"video_id": row.video_id, "media_path": row.media_path}
        process_video(extractor, job, video, media_fingerprint(row.media_path))
    assert sorted(plain_index(store.folder(EXTRACTOR))) == ["clip0", "clip1"]
    stamps = {r.video_id: store.shard_path(EXTRACTOR, r.video_id).stat().st_mtime_ns for r in clips}

    report = run_logmel(clips, tmp_path, threaded_client)  # the next run
    assert (report.index_synced, report.skipped, report.done) == (3, len(clips), 0)
    assert report.skipped_by_index == len(clips)  # synced at the start, so no shard was opened
    assert sorted(assert_index_truthful(store, EXTRACTOR)) == sorted(stamps)
    assert {r.video_id: store.shard_path(EXTRACTOR, r.video_id).stat().st_mtime_ns for r in clips} == stamps


def test_no_index_temp_files_left(tmp_path, clips, threaded_client) -> None:
    store = FeatureStore(tmp_path)
    assert run_logmel(clips[:2], tmp_path, threaded_client).done == 2
    folder = store.folder(EXTRACTOR)
    # What a driver killed inside a snapshot write leaves (today's and the old writer's names).
    leftovers = [folder / ".index.json.4242.0badc0de.tmp", folder / ".index.json.1.ffff0000.tmp"]
    for path in leftovers:
        path.write_text('{"format": "avpipe-index", "vid')
    report = run_logmel(clips, tmp_path, threaded_client)
    assert (report.skipped, report.done, report.failed) == (2, len(clips) - 2, 0)
    assert index_temp_files(folder) == []
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.endswith(".tmp.h5")]
    assert sorted(assert_index_truthful(store, EXTRACTOR)) == sorted(r.video_id for r in clips)


def test_a_compaction_that_fails_does_not_fail_the_record(tmp_path: Path, monkeypatch, caplog) -> None:
    store = FeatureStore(tmp_path)
    store.write("feat", "a", _features(), extractor_version="1", params_hash="p")
    store.record("feat", "a")
    monkeypatch.setattr(index_module, "COMPACT_MIN_LOG_BYTES", 0)  # every append wants to compact

    def disk_full(path: Path, payload: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_module, "write_json_atomically", disk_full)
    store.write("feat", "b", _features(), extractor_version="1", params_hash="p")
    store.record("feat", "b")  # the line is appended: no error although compaction failed
    assert "could not compact the index log" in caplog.text
    assert sorted(plain_index(tmp_path / "feat")) == ["a", "b"]
