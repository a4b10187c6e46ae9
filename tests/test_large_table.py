"""Training on features larger than memory: fp16 tables, rows on disk read a window at a time,
statistics accumulated block by block, standardisation applied per batch."""

from __future__ import annotations

import numpy as np
import pytest

from avpipe.models import stats as stats_module
from avpipe.models.data import VideoData
from avpipe.models.experiment import run_training
from avpipe.models.stats import compute_stats
from avpipe.models.table import FrameTable, WindowBatches
from avpipe.pipeline.labels import FrameLabels
from tests.test_train import config_for, tiny  # noqa: F401  (fixture)


def video(video_id: str, n: int, rng: np.random.Generator) -> VideoData:
    values = (rng.standard_normal((n, 5)) * 3 + 7).astype(np.float32)
    valid = rng.random(n) > 0.1
    labels = FrameLabels.unlabeled(n)
    labels.valence_arousal[:] = rng.uniform(-1, 1, (n, 2))
    return VideoData(video_id, np.arange(n) / 25.0, np.arange(n), {"x": values}, {"x": valid}, labels)


@pytest.fixture()
def videos() -> list[VideoData]:
    rng = np.random.default_rng(0)
    return [video(f"v{i}", n, rng) for i, n in enumerate((120, 45, 300, 17))]


def test_disk_fp16_table_gathers_what_the_memory_table_does(videos, tmp_path) -> None:
    memory = FrameTable(videos, ["x"])
    disk = FrameTable(iter(videos), ["x"], dtype=np.float16, cache_dir=tmp_path / "table")
    assert (tmp_path / "table" / "x.rows").stat().st_size == memory.n_rows * 5 * 2
    windows, _ = memory.windows(["v0", "v1", "v2", "v3"], 50, 30)  # v1 and v3 are padded windows
    np.testing.assert_array_equal(disk.windows(["v0", "v1", "v2", "v3"], 50, 30)[0], windows)
    np.testing.assert_array_equal(disk.valid["x"], memory.valid["x"])
    gathered = disk.features["x"][windows]
    assert gathered.dtype == np.float16 and gathered.shape == (windows.shape[0], 50, 5)
    np.testing.assert_allclose(gathered, memory.features["x"][windows], rtol=1e-3)


def test_stats_by_blocks_and_per_batch_standardisation(videos, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(stats_module, "STATS_BLOCK_VALUES", 35)  # blocks of 7 rows, merged
    train = ["v0", "v2", "v3"]
    disk = FrameTable(videos, ["x"], dtype=np.float16, cache_dir=tmp_path / "table")
    stats = compute_stats(disk, train)
    # independent: numpy over the valid training rows, at the precision the table holds
    rows = np.concatenate([v.features["x"][v.valid["x"]] for v in videos if v.video_id in train])
    rows = rows.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(stats.mean["x"], rows.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.std["x"], rows.std(axis=0), rtol=1e-5)
    windows, _ = disk.windows(train, 40, 40)
    batch = WindowBatches(stats.view(disk), {}, windows, 8).gather(np.arange(8))
    expected = (disk.features["x"][windows[:8]].astype(np.float32) - rows.mean(axis=0)) / rows.std(axis=0)
    expected[~disk.valid["x"][windows[:8]]] = 0.0
    np.testing.assert_allclose(batch.inputs["x"].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert batch.inputs["x"].dtype.is_floating_point and batch.inputs["x"].element_size() == 4


def test_training_from_a_disk_fp16_table_matches_memory(tiny, tmp_path) -> None:  # noqa: F811
    _, store, rows = tiny
    memory = run_training(config_for("jca", tmp_path / "memory"), store, rows)
    disk_config = config_for("jca", tmp_path / "disk", table_dtype="float16", table_cache=str(tmp_path / "t"))
    disk = run_training(disk_config, store, rows)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == sorted(
        f"{spec.key}.rows" for spec in disk_config.feature_specs
    )
    for a, b in zip(memory["folds"], disk["folds"], strict=True):
        assert b["best_score"] == pytest.approx(a["best_score"], abs=0.05)  # fp16 inputs, same training


def test_wavlm_jca_preset_trains_on_timm_and_hf_speech_features(tiny, tmp_path) -> None:  # noqa: F811
    import shutil

    from avpipe.pipeline.store import FeatureStore
    from avpipe.pipeline.types import FeatureSet

    _, store, rows = tiny
    shutil.copytree(store.root, tmp_path / "store")
    copy = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(3)
    for row in rows:  # the tiny store's face and voice features under the preset's extractor names
        for source, target in (("fer-minixception", "timm"), ("mfcc", "hf-speech")):
            stored = copy.read(source, row.video_id, ["features"])
            copy.write(target, row.video_id, stored, extractor_version="1", params_hash="p")
        speaking = (rng.random(len(stored)) < 0.7).astype(np.uint8)
        arrays = {"features": speaking[:, None].astype(np.float32), "speech": speaking}
        speech = FeatureSet(stored.time, stored.frame_index, np.ones(len(stored), np.uint8), arrays)
        copy.write("speech", row.video_id, speech, extractor_version="1", params_hash="p")
    config = config_for("wavlm-jca", tmp_path, table_cache=str(tmp_path / "table"))
    assert config.mask_audio_by_speech and config.table_dtype == "float16"
    summary = run_training(config, copy, rows)
    assert [spec["modality"] for spec in summary["inputs"]] == ["visual", "audio"]
    assert summary["folds"][0]["best_score"] is not None


def test_feature_scope_statistics_and_row_masks_on_a_disk_table(videos, tmp_path, monkeypatch) -> None:
    from avpipe.models.normalisation import scalar_stats

    monkeypatch.setattr(stats_module, "STATS_BLOCK_VALUES", 40)  # blocks of 8 rows
    disk = FrameTable(videos, ["x"], dtype=np.float16, cache_dir=tmp_path / "table")
    train = ["v0", "v1"]
    values = np.concatenate([v.features["x"][v.valid["x"]] for v in videos if v.video_id in train])
    values = values.astype(np.float16).astype(np.float64).ravel()  # independent: numpy over every value
    stats = scalar_stats(disk, train)
    np.testing.assert_allclose(stats.mean["x"], values.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats.std["x"], values.std(ddof=1), rtol=1e-5)
    mask = disk.rows_of(["v2"])  # a row mask reads the rows it selects, as numpy's indexing does
    np.testing.assert_array_equal(disk.features["x"][mask], disk.features["x"][np.flatnonzero(mask)])
    assert disk.features["x"][mask].shape == (300, 5)
