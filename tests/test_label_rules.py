"""Labels as they come: declared tasks, resampling of time-keyed labels onto video frames, annotation
delay, raters and gold standards. Expected per-frame labels are computed here from the documented rules
(np.interp, explicit loops, the EWE equation), never by calling the implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.adapters import create_adapter
from avpipe.pipeline.adapters.folder import read_label_csv
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.errors import ConfigError
from avpipe.pipeline.labels import UNLABELED_VA, FrameLabels, LabelTask, RawLabels, align_labels
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.timeline import video_timeline
from tests.media_factory import make_video

VIDEO_FPS = 30.0
LABEL_HZ = 10.0


@pytest.fixture(scope="module")
def clip30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s of 30 fps video: 30 frames at 0, 1/30, ... s."""
    return make_video(tmp_path_factory.mktemp("labels") / "clip.mp4", seconds=1.0, fps=VIDEO_FPS, audio=False)


@pytest.fixture(scope="module")
def frame_times(clip30: Path) -> np.ndarray:
    times = np.asarray(video_timeline(clip30).time, dtype=np.float64)
    assert times.shape[0] == 30
    return times


def labels_of(tmp_path: Path, clip: Path, text: str, config: LabelConfig) -> tuple[FrameLabels, str]:
    path = tmp_path / "clip.csv"
    path.write_text(text, encoding="utf-8")
    return align_labels(RawLabels(read_label_csv(path, config)), video_timeline(clip), config)


def ten_hz(values: np.ndarray, column: str = "valence") -> str:
    times = np.arange(values.shape[0]) / LABEL_HZ
    return f"time,{column}\n" + "".join(f"{t:.3f},{v:.6f}\n" for t, v in zip(times, values, strict=True))


SAMPLES = np.array([0.1, -0.3, 0.6, 0.2, -0.8, 0.0, 0.45, 0.9, -0.2, 0.3])  # at 0.0, 0.1, ... 0.9 s


# --------------------------------------------------------------------------- declared tasks


def test_valence_only_file_labels_valence_and_leaves_arousal_unlabeled(tmp_path: Path, clip30: Path) -> None:
    text = "frame,valence\n" + "".join(f"{i},{i / 100:.2f}\n" for i in range(30))
    labels, _ = labels_of(tmp_path, clip30, text, LabelConfig())
    np.testing.assert_allclose(labels.valence_arousal[:, 0], np.arange(30) / 100, atol=1e-7)
    assert np.all(labels.valence_arousal[:, 1] == UNLABELED_VA)
    assert labels.labeled().all()  # valence alone labels the frame
    assert not labels.task_mask(LabelTask.VA).any()  # the trainers' VA task needs both


def test_extra_dimensions_are_stored_and_read_back(tmp_path: Path, clip30: Path) -> None:
    config = LabelConfig(
        dimensions=["valence", "arousal", "dominance", "liking"],
        categorical={"expression": LabelConfig().categorical["expression"], "intensity": ["low", "high"]},
        multilabel={"au": LabelConfig().multilabel["au"], "gaze": ["left", "right"]},
    )
    text = (
        "frame,valence,arousal,dominance,liking,intensity,left,right\n"
        "0,0.5,-0.5,6.5,2,high,1,0\n"
        "2,,,,7,LOW,,1\n"
    )
    labels, _ = labels_of(tmp_path, clip30, text, config)
    np.testing.assert_allclose(labels.valence_arousal[0], [0.5, -0.5])
    assert labels.dimensions["dominance"][0] == 6.5 and np.isnan(labels.dimensions["dominance"][2])
    assert labels.dimensions["liking"][2] == 7 and np.isnan(labels.dimensions["liking"][1])
    assert labels.categories["intensity"][[0, 1, 2]].tolist() == [1, -1, 0]
    assert labels.multilabels["gaze"][[0, 2]].tolist() == [[1, 0], [-1, 1]]

    timeline = video_timeline(clip30)
    store = FeatureStore(tmp_path / "store")
    features = labels.to_feature_set(timeline)
    store.write_shard("labels", "v", [features], len(features), extractor_version="1", params_hash="h")
    back = FrameLabels.from_feature_set(store.read("labels", "v"))
    np.testing.assert_array_equal(back.dimensions["dominance"], labels.dimensions["dominance"])
    np.testing.assert_array_equal(back.categories["intensity"], labels.categories["intensity"])
    np.testing.assert_array_equal(back.multilabels["gaze"], labels.multilabels["gaze"])
    assert back.category_names["intensity"] == ["low", "high"]
    np.testing.assert_array_equal(back.valence_arousal, labels.valence_arousal)
    # the trainers' reader still finds VA, EXPR and AU in a shard that also holds other tasks
    from avpipe.models.data import read_labels

    for_training = read_labels(store, "v", np.asarray(timeline.frame_index))
    np.testing.assert_array_equal(for_training.valence_arousal, labels.valence_arousal)
    assert for_training.task_mask(LabelTask.VA).sum() == 1


def test_folder_adapter_rejects_an_undeclared_dimension_and_accepts_it_declared(
    tmp_path: Path, clip30: Path
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.mp4").write_bytes(clip30.read_bytes())
    (root / "a.csv").write_text("frame,valence,dominance\n0,0.1,5\n")
    plain = create_adapter("folder", root)
    candidate = plain.scan().candidates[0]
    with pytest.raises(Exception, match=r"unknown column 'dominance'.*dataset\.labels"):
        plain.read_labels(candidate)
    declared = create_adapter("folder", root, labels=LabelConfig(dimensions=["valence", "dominance"]))
    candidate = declared.scan().candidates[0]
    assert set(candidate.labels) == {"valence", "dominance"}
    assert [t.name for t in declared.read_labels(candidate).tracks] == ["valence", "dominance"]


def test_clip_label_without_key_column_labels_every_frame(tmp_path: Path, clip30: Path) -> None:
    config = LabelConfig(categorical={"emotion": ["neutral", "happy", "sad"]})
    labels, _ = labels_of(tmp_path, clip30, "emotion,valence\nsad,-0.4\n", config)
    assert np.all(labels.categories["emotion"] == 2)
    np.testing.assert_allclose(labels.valence_arousal[:, 0], -0.4)
    assert labels.actions["emotion: frames given the clip label"] == 30


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"resample": {"dominance": "linear"}}, "dataset.labels.resample.dominance"),
        ({"resample": {"valence": "cubic"}}, "dataset.labels.resample.valence"),
        ({"delay": -0.1}, "dataset.labels.delay"),
        ({"delays": {"valence": -1.0}}, "dataset.labels.delays.valence"),
        ({"delays": {"mood": 1.0}}, "dataset.labels.delays.mood"),
        ({"max_gap": 0}, "dataset.labels.max_gap"),
        ({"gold_standard": "median"}, "dataset.labels.gold_standard"),
        ({"dimensions": ["valence", "valence"]}, "dataset.labels.dimensions"),
        ({"categorical": {"expression": ["a", "b"]}}, "dataset.labels.categorical.expression"),
        ({"dimensions": ["AU1"]}, "dataset.labels.multilabel.au"),
    ],
)
def test_label_config_errors_name_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        LabelConfig(**options)
    assert err.value.key == key


# --------------------------------------------------------------------------- 10 Hz labels on 30 fps video


def test_ten_hz_labels_are_linearly_interpolated_onto_30_fps(
    tmp_path: Path, clip30: Path, frame_times: np.ndarray
) -> None:
    labels, note = labels_of(tmp_path, clip30, ten_hz(SAMPLES), LabelConfig())
    sample_times = np.arange(10) / LABEL_HZ
    expected = np.interp(frame_times, sample_times, SAMPLES)
    # frames past the last sample (0.9 s) within half a sample interval (0.05 s) take its value
    past = frame_times > 0.9
    expected[past & (frame_times - 0.9 <= 0.05)] = SAMPLES[-1]
    labeled = ~past | (frame_times - 0.9 <= 0.05)
    np.testing.assert_allclose(labels.valence_arousal[labeled, 0], expected[labeled], atol=1e-6)
    assert np.all(labels.valence_arousal[~labeled, 0] == UNLABELED_VA)
    on_sample = np.isclose(frame_times[:, None], sample_times[None, :], atol=1e-9).any(axis=1)
    assert labels.actions["valence: interpolated_linear (linear)"] == int((~on_sample & ~past).sum())
    assert note == ""


def test_ten_hz_labels_hold_and_nearest(tmp_path: Path, clip30: Path, frame_times: np.ndarray) -> None:
    sample_times = np.arange(10) / LABEL_HZ
    for rule in ("hold", "nearest"):
        config = LabelConfig(resample={"valence": rule})
        labels, _ = labels_of(tmp_path, clip30, ten_hz(SAMPLES), config)
        expected = np.full(30, UNLABELED_VA)
        for i, f in enumerate(frame_times):
            if rule == "hold":
                before = np.flatnonzero(sample_times <= f + 1e-9)
                if before.size and f - sample_times[before[-1]] <= 0.2 + 1e-9:  # max gap: 2 x 0.1 s
                    expected[i] = SAMPLES[before[-1]]
            else:
                j = int(np.argmin(np.abs(sample_times - f)))
                if abs(sample_times[j] - f) <= 0.1 + 1e-9:
                    expected[i] = SAMPLES[j]
        np.testing.assert_allclose(labels.valence_arousal[:, 0], expected, atol=1e-6, err_msg=rule)


def test_gap_longer_than_max_gap_stays_unlabeled(
    tmp_path: Path, clip30: Path, frame_times: np.ndarray
) -> None:
    text = "time,valence\n0.0,0.2\n0.1,0.4\n0.2,0.0\n0.8,0.6\n0.9,0.8\n"  # 0.6 s without a sample
    labels, _ = labels_of(tmp_path, clip30, text, LabelConfig(max_gap=0.25))
    gap = (frame_times > 0.2 + 1e-9) & (frame_times < 0.8 - 1e-9)
    assert np.all(labels.valence_arousal[gap, 0] == UNLABELED_VA)
    assert labels.actions["valence: unlabeled_in_gap (linear)"] == int(gap.sum())
    inside = frame_times <= 0.2 + 1e-9
    expected = np.interp(frame_times[inside], [0.0, 0.1, 0.2], [0.2, 0.4, 0.0])
    np.testing.assert_allclose(labels.valence_arousal[inside, 0], expected, atol=1e-6)


def test_categorical_ten_hz_labels_take_the_nearest_sample(
    tmp_path: Path, clip30: Path, frame_times: np.ndarray
) -> None:
    classes = [3, 3, 1, 1, 0, 5, 5, 2, 2, 4]
    text = "time,expression\n" + "".join(f"{k / 10:.1f},{c}\n" for k, c in enumerate(classes))
    labels, _ = labels_of(tmp_path, clip30, text, LabelConfig())
    nearest = np.rint(frame_times * LABEL_HZ).astype(int).clip(0, 9)
    np.testing.assert_array_equal(labels.expression, np.asarray(classes)[nearest])


# --------------------------------------------------------------------------- annotation delay


def test_delay_shifts_time_keyed_labels_back(tmp_path: Path, clip30: Path, frame_times: np.ndarray) -> None:
    delay = 0.2
    labels, _ = labels_of(tmp_path, clip30, ten_hz(SAMPLES), LabelConfig(delay=delay))
    # the label rated at t describes the frame at t - delay: frame f takes the rating at f + delay
    rated_at = frame_times + delay
    covered = rated_at <= 0.9 + 0.05
    expected = np.interp(rated_at, np.arange(10) / LABEL_HZ, SAMPLES)
    np.testing.assert_allclose(labels.valence_arousal[covered, 0], expected[covered], atol=1e-6)
    assert np.all(labels.valence_arousal[~covered, 0] == UNLABELED_VA)
    assert labels.actions["valence: samples shifted back 0.2s (delay)"] == 10


def test_delay_per_task_overrides_the_common_delay(tmp_path: Path, clip30: Path) -> None:
    text = "frame,valence,arousal\n" + "".join(f"{i},{i / 100:.2f},{-i / 100:.2f}\n" for i in range(30))
    labels, _ = labels_of(tmp_path, clip30, text, LabelConfig(delay=0.1, delays={"arousal": 0.0}))
    np.testing.assert_allclose(labels.valence_arousal[:27, 0], np.arange(3, 30) / 100, atol=1e-7)
    np.testing.assert_allclose(labels.valence_arousal[:, 1], -np.arange(30) / 100, atol=1e-7)


def test_delay_shifts_frame_keyed_labels_by_whole_frames(tmp_path: Path, clip30: Path) -> None:
    text = "frame,valence\n" + "".join(f"{i},{i / 100:.2f}\n" for i in range(30))
    labels, _ = labels_of(tmp_path, clip30, text, LabelConfig(delay=0.1))  # 3 frames at 30 fps
    np.testing.assert_allclose(labels.valence_arousal[:27, 0], np.arange(3, 30) / 100, atol=1e-7)
    assert np.all(labels.valence_arousal[27:, 0] == UNLABELED_VA)


# --------------------------------------------------------------------------- raters


RATINGS = np.array(  # 8 samples x 3 raters; rater C is noisy, and rater B skipped sample 5
    [
        [0.10, 0.15, 0.40],
        [0.20, 0.25, -0.10],
        [0.40, 0.35, 0.30],
        [0.30, 0.40, 0.00],
        [0.00, 0.05, 0.20],
        [-0.20, np.nan, 0.10],
        [-0.40, -0.30, -0.50],
        [-0.10, -0.05, 0.30],
    ]
)


def rater_csv(ratings: np.ndarray) -> str:
    rows = []
    for k, row in enumerate(ratings):
        cells = ["" if np.isnan(v) else f"{v:.2f}" for v in row]
        rows.append(f"{k * 2}," + ",".join(cells) + "\n")  # frames 0, 2, 4, ...
    return "frame,arousal@A,arousal@B,arousal@C\n" + "".join(rows)


def ewe_reference(ratings: np.ndarray, leave_one_out: bool) -> np.ndarray:
    """Grimm & Kroschel's estimator, written out: r_k = corr(x_k, mean of all (or other) raters)."""
    complete = ratings[~np.isnan(ratings).any(axis=1)]
    weights = []
    for k in range(ratings.shape[1]):
        others = [j for j in range(ratings.shape[1]) if j != k or not leave_one_out]
        reference = complete[:, others].mean(axis=1)
        weights.append(np.corrcoef(complete[:, k], reference)[0, 1])
    weights = np.asarray(weights)
    gold = []
    for row in ratings:
        present = ~np.isnan(row)
        gold.append(np.sum(weights[present] * row[present]) / np.sum(weights[present]))
    return np.asarray(gold)


def avec2016_reference(ratings: np.ndarray) -> np.ndarray:
    """The AVEC 2016 "CCC centring" gold standard, written out from the organisers' script; samples
    without every rater take the plain mean of those present."""
    complete = ~np.isnan(ratings).any(axis=1)
    x = ratings[complete]
    n = x.shape[1]

    def ccc(a: np.ndarray, b: np.ndarray) -> float:
        return 2 * np.cov(a, b, bias=True)[0, 1] / (np.var(a) + np.var(b) + (np.mean(a) - np.mean(b)) ** 2)

    agreement = np.array([np.mean([ccc(x[:, r], x[:, q]) for q in range(n) if q != r]) for r in range(n)])
    mean_rating = x.mean(axis=0)
    weighted_level = np.sum(mean_rating * agreement / np.sum(agreement))
    gold = np.array([np.mean(row[~np.isnan(row)]) for row in ratings])
    gold[complete] = np.mean(x - mean_rating + weighted_level, axis=1)
    return gold


@pytest.mark.parametrize(
    ("method", "reference"), [("mean", "all"), ("ewe", "all"), ("ewe", "others"), ("avec2016", "all")]
)
def test_gold_standard_of_several_raters(tmp_path: Path, clip30: Path, method: str, reference: str) -> None:
    config = LabelConfig(gold_standard=method, ewe_reference=reference)
    labels, note = labels_of(tmp_path, clip30, rater_csv(RATINGS), config)
    if method == "mean":
        expected = np.array([np.mean(row[~np.isnan(row)]) for row in RATINGS])
    elif method == "avec2016":
        expected = avec2016_reference(RATINGS)
    else:
        expected = ewe_reference(RATINGS, leave_one_out=reference == "others")
    frames = np.arange(8) * 2
    np.testing.assert_allclose(labels.valence_arousal[frames, 1], expected, atol=1e-6)
    assert np.all(labels.valence_arousal[frames + 1, 1] == UNLABELED_VA)
    np.testing.assert_allclose(labels.raters["arousal"][frames], RATINGS, atol=1e-6)
    assert labels.rater_names["arousal"] == ["A", "B", "C"]
    assert f"gold standard {method} of 3 raters" in note
    assert labels.actions["arousal: samples with a gold standard computed from raters"] == 8
    if method != "mean":  # the noisy rater weighs less, or the levels move: not the plain mean
        assert not np.allclose(expected, [np.nanmean(r) for r in RATINGS])


def test_given_gold_column_is_kept_beside_the_raters(tmp_path: Path, clip30: Path) -> None:
    text = "frame,arousal,arousal@A,arousal@B\n0,0.5,0.1,0.2\n"
    labels, note = labels_of(tmp_path, clip30, text, LabelConfig())
    assert labels.valence_arousal[0, 1] == pytest.approx(0.5)
    np.testing.assert_allclose(labels.raters["arousal"][0], [0.1, 0.2], atol=1e-7)
    assert "gold standard" not in note


# --------------------------------------------------------------------------- docs/DATASETS.md example


def test_the_worked_example_of_docs_datasets(tmp_path: Path, clip30: Path, frame_times: np.ndarray) -> None:
    """The folder-adapter example of docs/DATASETS.md gives the labels the document promises."""
    from avpipe.pipeline.config import StoreConfig
    from avpipe.pipeline.config.dataset import DatasetConfig
    from avpipe.pipeline.config.manifest import ManifestConfig
    from avpipe.pipeline.manifest_builder import build_manifest

    root = tmp_path / "clips"
    root.mkdir()
    for stem in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TIE_SAD_LO"):
        (root / f"{stem}.mp4").write_bytes(clip30.read_bytes())
    (root / "1001_DFA_ANG_XX.csv").write_text("expression,intensity,valence\nAnger,,-0.6\n")
    (root / "1002_TIE_SAD_LO.csv").write_text(
        "time,valence@r1,valence@r2,dominance\n0.0,-0.20,-0.30,4\n0.1,-0.25,-0.30,4\n0.2,-0.40,-0.35,3\n"
    )
    (root / "splits.csv").write_text(
        "video_id,split,subject\n1001_DFA_ANG_XX,train,1001\n1001_IEO_HAP_HI,train,1001\n"
        "1002_TIE_SAD_LO,validation,1002\n"
    )
    labels = LabelConfig(
        dimensions=["valence", "arousal", "dominance"],
        categorical={
            "expression": list(LabelConfig().categorical["expression"]),
            "intensity": ["low", "medium", "high"],
        },
        gold_standard="ewe",
    )
    dataset = DatasetConfig(adapter="folder", root=str(root), labels=labels)
    manifest = ManifestConfig(path=str(tmp_path / "m.csv"), failures=str(tmp_path / "f.csv"))
    report = build_manifest(dataset, manifest, StoreConfig(root=str(tmp_path / "features")))
    assert not report.failures
    store = FeatureStore(tmp_path / "features")

    angry = FrameLabels.from_feature_set(store.read("labels", "1001_DFA_ANG_XX"))
    assert np.all(angry.expression == 1) and np.all(angry.categories["intensity"] == -1)
    np.testing.assert_allclose(angry.valence_arousal[:, 0], -0.6, atol=1e-7)

    sad = FrameLabels.from_feature_set(store.read("labels", "1002_TIE_SAD_LO"))
    ratings = np.array([[-0.20, -0.30], [-0.25, -0.30], [-0.40, -0.35]])
    gold = ewe_reference(ratings, leave_one_out=False)
    covered = frame_times <= 0.25 + 1e-9  # the last sample and half a sample interval after it
    expected = np.interp(frame_times[covered], [0.0, 0.1, 0.2], gold)
    np.testing.assert_allclose(sad.valence_arousal[covered, 0], expected, atol=1e-6)
    np.testing.assert_allclose(
        sad.dimensions["dominance"][covered],
        np.interp(frame_times[covered], [0, 0.1, 0.2], [4, 4, 3]),
        atol=1e-6,
    )
    assert sad.raters["valence"].shape == (30, 2)
    assert report.label_actions["valence: interpolated_linear (linear)"] > 0
    from avpipe.pipeline.label_report import write_label_report

    written = json.loads(write_label_report(report.label_actions_by_video, tmp_path / "reports").read_text())
    assert written["total"] == dict(report.label_actions)
    assert written["videos"]["1001_DFA_ANG_XX"] == {
        "expression: frames given the clip label": 30,
        "intensity: frames given the clip label": 30,
        "valence: frames given the clip label": 30,
    }
    rows = {r.video_id: r for r in report.rows}
    assert (
        rows["1002_TIE_SAD_LO"].subject == "1002"
        and "gold standard ewe of 2 raters" in rows["1002_TIE_SAD_LO"].notes
    )


def test_params_yaml_carries_dataset_labels_and_options() -> None:
    from avpipe.pipeline.config import load_params

    params = load_params(
        "params.yaml",
        overrides=[
            "dataset.labels.dimensions=[valence, dominance]",
            "dataset.labels.delays={valence: 1.5}",
            "dataset.options={media: audio}",
        ],
    )
    assert params.dataset.labels.dimensions == ["valence", "dominance"]
    assert (
        params.dataset.labels.delay_of("valence") == 1.5 and params.dataset.labels.delay_of("dominance") == 0
    )
    assert params.dataset.options == {"media": "audio"}
    with pytest.raises(ConfigError) as err:
        load_params("params.yaml", overrides=["dataset.labels.resample={valence: cubic}"])
    assert err.value.key == "dataset.labels.resample.valence"
