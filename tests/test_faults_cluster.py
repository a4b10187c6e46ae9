"""Fault battery, the cluster: remote workers in another working folder, memory blow-ups, hangs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import RunnerConfig, StoreConfig
from pipeline.extract import run_extractor
from pipeline.extractors.audio import LogMelConfig
from pipeline.manifest import ManifestRow
from pipeline.store import FeatureStore
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
