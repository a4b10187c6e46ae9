"""Dataset recipes on small mocks of each corpus's published layout, built here: rows, labels, splits,
subject groups and failures, and one manifest run that writes the clip labels into the labels shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.adapters import create_adapter
from avpipe.pipeline.config import StoreConfig
from avpipe.pipeline.config.dataset import DatasetConfig
from avpipe.pipeline.config.labels import LabelConfig
from avpipe.pipeline.config.manifest import ManifestConfig
from avpipe.pipeline.errors import ConfigError, LabelError
from avpipe.pipeline.labels import EXPRESSION_NAMES, LABELS_EXTRACTOR, FrameLabels
from avpipe.pipeline.manifest import Split
from avpipe.pipeline.manifest_builder import build_manifest
from avpipe.pipeline.store import FeatureStore
from tests.media_factory import make_audio_only, make_video


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recipe_media")
    return {
        "flv": make_video(folder / "clip.flv", seconds=0.4, fps=10.0, audio=False),
        "mp4": make_video(folder / "clip.mp4", seconds=0.4, fps=10.0, audio=False),
        "wav": make_audio_only(folder / "clip.wav", seconds=0.4, sample_rate=16000),
    }


def place(source: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def run_manifest(tmp_path: Path, root: Path, adapter: str, **dataset: object):
    config = DatasetConfig(adapter=adapter, root=str(root), **dataset)
    manifest = ManifestConfig(path=str(tmp_path / "m.csv"), failures=str(tmp_path / "f.csv"))
    store = StoreConfig(root=str(tmp_path / "features"))
    return build_manifest(config, manifest, store), FeatureStore(store.root)


# --------------------------------------------------------------------------- CREMA-D

CREMA_CLIPS = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TIE_SAD_LO", "1091_WSI_NEU_MD"]
CREMA_BAD = {
    "1001_DFA_JOY_XX": "unknown emotion code 'JOY'",
    "0999_DFA_ANG_XX": "actor 0999 is outside 1001-1091",
    "1001_ABC_ANG_XX": "unknown sentence code 'ABC'",
    "1001-DFA-ANG-XX": "not <ActorID>_<Sentence>_<Emotion>_<Level>",
}


@pytest.fixture
def crema_tree(tmp_path: Path, media: dict[str, Path]) -> Path:
    root = tmp_path / "CREMA-D"
    for stem in [*CREMA_CLIPS, *CREMA_BAD]:
        place(media["flv"], root / "VideoFlash" / f"{stem}.flv")
    for stem in CREMA_CLIPS[:2]:
        place(media["wav"], root / "AudioWAV" / f"{stem}.wav")
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
    )
    (root / "VideoFlash" / "README.txt").write_text("not a clip\n")
    return root


def test_crema_d_rows_labels_subjects_and_splits(crema_tree: Path) -> None:
    adapter = create_adapter("crema_d", crema_tree, speaker_splits={"test": [1002]})
    scan = adapter.scan()
    by_id = {c.video_id: c for c in scan.candidates}
    assert sorted(by_id) == CREMA_CLIPS
    assert {c.subject for c in scan.candidates} == {"1001", "1002", "1091"}
    assert by_id["1002_TIE_SAD_LO"].split is Split.TEST and by_id["1001_DFA_ANG_XX"].split is Split.TRAIN
    failures = {Path(f.path).stem: f.reason for f in scan.failures}
    assert set(failures) == set(CREMA_BAD)
    for stem, problem in CREMA_BAD.items():
        assert problem in failures[stem]
    expected = {  # emotion index in ANG, DIS, FEA, HAP, NEU, SAD; intensity LO, MD, HI (XX: none)
        "1001_DFA_ANG_XX": ("anger", None, "Anger"),
        "1001_IEO_HAP_HI": ("happy", "high", "Happiness"),
        "1002_TIE_SAD_LO": ("sad", "low", "Sadness"),
        "1091_WSI_NEU_MD": ("neutral", "medium", "Neutral"),
    }
    for video_id, (emotion, intensity, expression) in expected.items():
        tracks = {t.name: t for t in adapter.read_labels(by_id[video_id]).tracks}
        assert tracks["emotion"].class_names[int(tracks["emotion"].values[0])] == emotion
        level = int(tracks["intensity"].values[0])
        assert (None if level == -1 else tracks["intensity"].class_names[level]) == intensity
        assert EXPRESSION_NAMES[int(tracks["expression"].values[0])] == expression


def test_crema_d_audio_files_and_bad_options(crema_tree: Path) -> None:
    scan = create_adapter("crema_d", crema_tree, media="audio").scan()
    assert [c.media_path.suffix for c in scan.candidates] == [".wav", ".wav"]
    with pytest.raises(ConfigError, match=r"dataset\.options\.media"):
        create_adapter("crema_d", crema_tree, media="both")
    with pytest.raises(ConfigError, match="speaker '1001' is in validation and test"):
        create_adapter("crema_d", crema_tree, speaker_splits={"validation": [1001], "test": ["1001"]})


def test_crema_d_manifest_writes_clip_labels_on_every_frame(tmp_path: Path, crema_tree: Path) -> None:
    report, store = run_manifest(tmp_path, crema_tree, "crema_d", video_extensions=[".flv"])
    assert sorted(r.video_id for r in report.rows) == CREMA_CLIPS
    assert len(report.failures) == len(CREMA_BAD)
    labels = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "1002_TIE_SAD_LO"))
    assert len(labels) == 4
    assert np.all(labels.categories["emotion"] == 5) and np.all(labels.categories["intensity"] == 0)
    assert np.all(labels.expression == EXPRESSION_NAMES.index("Sadness"))
    assert labels.category_names["emotion"][5] == "sad"
    row = next(r for r in report.rows if r.video_id == "1002_TIE_SAD_LO")
    assert row.labeled_frames == 4 and row.label_rows == {"emotion": 1, "intensity": 1, "expression": 1}
    assert report.label_actions["emotion: frames given the clip label"] == 4 * len(CREMA_CLIPS)


# --------------------------------------------------------------------------- RAVDESS

RAVDESS_FILES = {
    # modality-channel-emotion-intensity-statement-repetition-actor
    "Video_Speech_Actor_01/Actor_01/01-01-03-02-01-01-01.mp4": "full-AV speech, happy strong",
    "Video_Speech_Actor_01/Actor_01/02-01-03-02-01-01-01.mp4": "video-only twin",
    "Video_Song_Actor_02/Actor_02/01-02-02-01-02-02-02.mp4": "full-AV song, calm",
    "Audio_Speech_Actors_01-24/Actor_01/03-01-05-01-01-02-01.wav": "audio-only angry",
}
RAVDESS_BAD = {
    "Video_Speech_Actor_02/Actor_02/01-01-01-02-01-01-02.mp4": "neutral has no strong intensity",
    "Video_Speech_Actor_02/Actor_02/01-01-05-01-01-01-04.mp4": "actor 04 in the name, but the file is in",
    "Video_Speech_Actor_02/Actor_02/01-01-09-01-01-01-02.mp4": "emotion 09 is outside 01-08",
    "Video_Speech_Actor_02/Actor_02/01-01-05-01-01.mp4": "not seven two-digit identifiers",
}


@pytest.fixture
def ravdess_tree(tmp_path: Path, media: dict[str, Path]) -> Path:
    root = tmp_path / "RAVDESS"
    for relative in [*RAVDESS_FILES, *RAVDESS_BAD]:
        place(media["wav" if relative.endswith(".wav") else "mp4"], root / relative)
    return root


def test_ravdess_rows_labels_subjects_and_modalities(ravdess_tree: Path) -> None:
    adapter = create_adapter("ravdess", ravdess_tree, speaker_splits={"validation": ["2"]})
    scan = adapter.scan()
    by_id = {c.video_id: c for c in scan.candidates}
    assert sorted(by_id) == ["01-01-03-02-01-01-01", "01-02-02-01-02-02-02"]  # full-AV only by default
    assert by_id["01-01-03-02-01-01-01"].subject == "Actor_01"
    assert by_id["01-02-02-01-02-02-02"].split is Split.VALIDATION
    happy = {t.name: t for t in adapter.read_labels(by_id["01-01-03-02-01-01-01"]).tracks}
    names = {name: t.class_names[int(t.values[0])] for name, t in happy.items()}
    assert names == {
        "emotion": "happy",
        "intensity": "strong",
        "vocal_channel": "speech",
        "statement": "kids",
        "expression": "Happiness",
    }
    calm = {t.name: t for t in adapter.read_labels(by_id["01-02-02-01-02-02-02"]).tracks}
    assert calm["emotion"].class_names[int(calm["emotion"].values[0])] == "calm"
    assert int(calm["expression"].values[0]) == -1  # calm has no Aff-Wild2 class
    assert "calm has no Aff-Wild2 expression class" in by_id["01-02-02-01-02-02-02"].notes[0]
    failures = {f.path: f.reason for f in scan.failures}
    for relative, problem in RAVDESS_BAD.items():
        assert problem in failures[str(ravdess_tree / relative)]


def test_ravdess_modality_and_channel_options(ravdess_tree: Path) -> None:
    audio = create_adapter("ravdess", ravdess_tree, modality="audio_only").scan()
    assert [c.video_id for c in audio.candidates] == ["03-01-05-01-01-02-01"]
    songs = create_adapter("ravdess", ravdess_tree, vocal_channel="song").scan()
    assert [c.video_id for c in songs.candidates] == ["01-02-02-01-02-02-02"]
    with pytest.raises(ConfigError, match=r"dataset\.options\.modality"):
        create_adapter("ravdess", ravdess_tree, modality="av")


def test_ravdess_audio_only_manifest(tmp_path: Path, ravdess_tree: Path) -> None:
    report, store = run_manifest(
        tmp_path, ravdess_tree, "ravdess", audio_fps=25.0, options={"modality": "audio_only"}
    )
    assert [r.video_id for r in report.rows] == ["03-01-05-01-01-02-01"]
    labels = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "03-01-05-01-01-02-01"))
    assert len(labels) == 10 and np.all(labels.categories["emotion"] == 4)  # angry, on a 25 Hz grid
    assert np.all(labels.expression == EXPRESSION_NAMES.index("Anger"))


# --------------------------------------------------------------------------- RECOLA (AVEC 2016)

RECOLA_RATERS = ["FM1", "FM2", "FM3", "FF1", "FF2", "FF3"]
N_RECOLA = 25  # 1 s of 40 ms ratings on 1 s of 25 fps video


def recola_gold(seed: int) -> np.ndarray:
    return np.round(np.random.default_rng(seed).uniform(-0.5, 0.5, N_RECOLA), 4)


def recola_raters(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.normal(0, 0.05, N_RECOLA))
    return np.round(base[:, None] + rng.normal(0, 0.05, (N_RECOLA, 6)) + rng.uniform(-0.2, 0.2, 6), 4)


def write_arff(path: Path, recording: str, values: np.ndarray) -> None:
    head = "@relation GoldStandard\n\n@attribute Instance_name string\n@attribute frameTime numeric\n"
    head += "@attribute GoldStandard numeric\n\n@data\n\n"
    rows = "".join(f"'{recording}',{k * 0.04:.6f},{v:.6f}\n" for k, v in enumerate(values))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + rows)


def write_individual(path: Path, ratings: np.ndarray) -> None:
    rows = "".join(
        f"{k * 0.04:.2f};" + ";".join(f"{v:.4f}" for v in row) + "\n" for k, row in enumerate(ratings)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("time;" + ";".join(RECOLA_RATERS) + "\n" + rows)


@pytest.fixture(scope="module")
def recola_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("recola") / "clip.mp4", seconds=1.0, fps=25.0, audio=False)


@pytest.fixture
def recola_tree(tmp_path: Path, recola_clip: Path) -> Path:
    root = tmp_path / "AVEC_2016"
    for recording in ("train_1", "train_2", "dev_1", "test_1", "session_9"):
        place(recola_clip, root / "recordings_video" / f"{recording}.mp4")
    for seed, recording in enumerate(("train_1", "train_2", "dev_1")):
        for offset, dimension in enumerate(("arousal", "valence")):
            write_arff(
                root / "ratings_gold_standard" / dimension / f"{recording}.arff",
                recording,
                recola_gold(seed * 2 + offset),
            )
    for offset, dimension in enumerate(("arousal", "valence")):
        write_individual(root / "ratings_individual" / dimension / "train_1.csv", recola_raters(10 + offset))
    return root


def test_recola_rows_splits_and_40ms_gold_standard_on_the_frames(tmp_path: Path, recola_tree: Path) -> None:
    report, store = run_manifest(tmp_path, recola_tree, "recola")
    rows = {r.video_id: r for r in report.rows}
    assert sorted(rows) == ["dev_1", "test_1", "train_1", "train_2"]
    assert [Path(f.path).name for f in report.failures] == ["session_9.mp4"]
    assert {v: r.split for v, r in rows.items()} == {
        "dev_1": Split.VALIDATION,
        "test_1": Split.TEST,
        "train_1": Split.TRAIN,
        "train_2": Split.TRAIN,
    }
    assert {r.subject for r in rows.values()} == set(rows)  # one participant per recording
    train_1 = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "train_1"))
    np.testing.assert_allclose(train_1.valence_arousal[:, 1], recola_gold(0), atol=1e-5)  # arousal
    np.testing.assert_allclose(train_1.valence_arousal[:, 0], recola_gold(1), atol=1e-5)  # valence
    np.testing.assert_allclose(train_1.raters["arousal"], recola_raters(10), atol=1e-5)
    assert train_1.rater_names["arousal"] == RECOLA_RATERS
    assert "arousal" not in FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "train_2")).raters
    assert rows["test_1"].labeled_frames == 0 and rows["test_1"].notes == ""


def test_recola_gold_standard_from_individual_ratings(tmp_path: Path, recola_tree: Path) -> None:
    from tests.test_label_rules import avec2016_reference

    labels = LabelConfig(gold_standard="avec2016")
    adapter = create_adapter("recola", recola_tree, labels=labels, labels_from="individual")
    scan = adapter.scan()
    train_1 = next(c for c in scan.candidates if c.video_id == "train_1")
    tracks = {t.name: t for t in adapter.read_labels(train_1).tracks}
    np.testing.assert_allclose(tracks["arousal"].values, avec2016_reference(recola_raters(10)), atol=1e-5)
    train_2 = next(c for c in scan.candidates if c.video_id == "train_2")
    assert "no individual ratings for arousal, valence" in train_2.notes[0]


def test_recola_delay_shifts_the_gold_standard(tmp_path: Path, recola_tree: Path) -> None:
    _, store = run_manifest(tmp_path, recola_tree, "recola", labels=LabelConfig(delay=0.08))
    arousal = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "dev_1")).valence_arousal[:, 1]
    np.testing.assert_allclose(arousal[:-2], recola_gold(4)[2:], atol=1e-5)  # 80 ms = 2 frames at 25 fps
    assert np.all(arousal[-2:] == -5.0)


def test_recola_bad_gold_file_is_a_labels_failure(tmp_path: Path, recola_tree: Path) -> None:
    path = recola_tree / "ratings_gold_standard" / "arousal" / "train_2.arff"
    path.write_text(path.read_text().replace("@data", "@dat"))
    report, _ = run_manifest(tmp_path, recola_tree, "recola")
    failure = next(f for f in report.failures if f.path == str(path))
    assert "no @data line" in failure.reason and failure.stage == "labels"


# --------------------------------------------------------------------------- MSP-Podcast

MSP_ROWS = [
    # FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
    ("MSP-PODCAST_0001_0008.wav", "H", "5.4", "6.0", "4.2", "127", "Female", "Train"),
    ("MSP-PODCAST_0001_0012.wav", "C", "3.0", "2.5", "4.0", "127", "Female", "Development"),
    ("MSP-PODCAST_0002_0033.wav", "X", "4.0", "4.0", "4.0", "Unknown", "Unknown", "Test2"),
    ("MSP-PODCAST_0003_0001.wav", "A", "6.0", "1.0", "7.0", "30", "Male", "Test1"),
]


@pytest.fixture
def msp_tree(tmp_path: Path, media: dict[str, Path]) -> Path:
    root = tmp_path / "MSP-Podcast"
    for row in MSP_ROWS[:3]:
        place(media["wav"], root / "Audios" / row[0])
    place(media["wav"], root / "Audios" / "MSP-PODCAST_0009_0001.wav")  # unlabeled segment
    header = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
    (root / "Labels").mkdir()
    (root / "Labels" / "labels_consensus.csv").write_text(
        header + "".join(",".join(r) + "\n" for r in MSP_ROWS)
    )
    return root


def test_msp_podcast_rows_partitions_speakers_and_consensus_labels(msp_tree: Path) -> None:
    adapter = create_adapter("msp_podcast", msp_tree)
    scan = adapter.scan()
    by_id = {c.video_id: c for c in scan.candidates}
    assert sorted(by_id) == ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0012", "MSP-PODCAST_0002_0033"]
    assert [Path(f.path).name for f in scan.failures] == ["MSP-PODCAST_0003_0001.wav"]  # listed, no audio
    assert [by_id[v].split for v in sorted(by_id)] == [Split.TRAIN, Split.VALIDATION, Split.TEST]
    assert by_id["MSP-PODCAST_0001_0008"].subject == by_id["MSP-PODCAST_0001_0012"].subject == "speaker_127"
    assert by_id["MSP-PODCAST_0002_0033"].subject == "MSP-PODCAST_0002_0033"  # unknown speaker
    assert "test set Test2" in by_id["MSP-PODCAST_0002_0033"].notes
    happy = {t.name: t for t in adapter.read_labels(by_id["MSP-PODCAST_0001_0008"]).tracks}
    assert happy["emotion"].class_names[int(happy["emotion"].values[0])] == "happy"
    assert EXPRESSION_NAMES[int(happy["expression"].values[0])] == "Happiness"
    for name, rating in (("arousal", 5.4), ("valence", 6.0), ("dominance", 4.2)):
        assert float(happy[name].values[0]) == pytest.approx((rating - 4) / 3, abs=1e-6)
    contempt = adapter.read_labels(by_id["MSP-PODCAST_0001_0012"]).tracks
    assert {t.name: int(t.values[0]) for t in contempt if t.kind == "categorical"} == {
        "emotion": 6,
        "expression": -1,
    }
    no_agreement = adapter.read_labels(by_id["MSP-PODCAST_0002_0033"]).tracks
    assert int(next(t for t in no_agreement if t.name == "emotion").values[0]) == -1


def test_msp_podcast_raw_scale_and_audio_only_manifest(tmp_path: Path, msp_tree: Path) -> None:
    report, store = run_manifest(
        tmp_path, msp_tree, "msp_podcast", audio_fps=25.0, options={"dimension_scale": "raw"}
    )
    assert len(report.rows) == 3
    labels = FrameLabels.from_feature_set(store.read(LABELS_EXTRACTOR, "MSP-PODCAST_0001_0008"))
    assert len(labels) == 10  # 0.4 s on a 25 Hz grid
    np.testing.assert_allclose(labels.dimensions["EmoAct"], 5.4, atol=1e-6)
    np.testing.assert_allclose(labels.dimensions["EmoDom"], 4.2, atol=1e-6)
    assert np.all(labels.valence_arousal == -5.0)  # raw 1-7 ratings stay out of the VA task
    assert np.all(labels.categories["emotion"] == 2)


def test_msp_podcast_bad_consensus_file_names_the_line(msp_tree: Path) -> None:
    path = msp_tree / "Labels" / "labels_consensus.csv"
    path.write_text(path.read_text().replace("Development", "Dev2"))
    with pytest.raises(LabelError) as err:
        create_adapter("msp_podcast", msp_tree).scan()
    assert err.value.path == str(path) and "line 3: unknown Split_Set 'Dev2'" in err.value.reason


# --------------------------------------------------------------------------- SEWA (AVEC 2019 CES)


def ces_rows(recording: str, seed: int, step: float = 0.1) -> tuple[np.ndarray, str]:
    ratings = np.round(np.random.default_rng(seed).uniform(-0.6, 0.6, (11, 3)), 4)  # 0.0 .. 1.0 s
    lines = "".join(
        f"{recording};{k * step:.1f};" + ";".join(f"{v:.4f}" for v in row) + "\n"
        for k, row in enumerate(ratings)
    )
    return ratings, "name;timestamp;arousal;valence;liking\n" + lines


@pytest.fixture
def ces_tree(tmp_path: Path, recola_clip: Path) -> Path:
    root = tmp_path / "AVEC2019_CES"
    for recording in ("Train_DE_01", "Train_HU_02", "Devel_DE_01", "Test_CN_01", "Train_FR_01"):
        place(recola_clip, root / "video" / f"{recording}.mp4")
    for seed, recording in enumerate(("Train_DE_01", "Train_HU_02", "Devel_DE_01")):
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{recording}.csv").write_text(ces_rows(recording, seed)[1])
    return root


def test_avec2019_ces_rows_and_100ms_labels_on_25_fps(tmp_path: Path, ces_tree: Path) -> None:
    report, store = run_manifest(tmp_path, ces_tree, "avec2019_ces")
    rows = {r.video_id: r for r in report.rows}
    assert sorted(rows) == ["Devel_DE_01", "Test_CN_01", "Train_DE_01", "Train_HU_02"]
    assert [Path(f.path).name for f in report.failures] == ["Train_FR_01.mp4"]
    assert rows["Devel_DE_01"].split is Split.VALIDATION and rows["Test_CN_01"].split is Split.TEST
    assert rows["Train_HU_02"].notes.startswith("culture HU; arousal: 1 of 11 timed rows lie outside")
    assert rows["Test_CN_01"].notes == "culture CN" and rows["Test_CN_01"].labeled_frames == 0
    ratings, _ = ces_rows("Train_HU_02", 1)
    shard = store.read(LABELS_EXTRACTOR, "Train_HU_02")
    labels = FrameLabels.from_feature_set(shard)
    stamps = np.arange(11) * 0.1
    t = shard.time
    np.testing.assert_allclose(labels.valence_arousal[:, 1], np.interp(t, stamps, ratings[:, 0]), atol=1e-5)
    np.testing.assert_allclose(labels.valence_arousal[:, 0], np.interp(t, stamps, ratings[:, 1]), atol=1e-5)
    np.testing.assert_allclose(labels.dimensions["liking"], np.interp(t, stamps, ratings[:, 2]), atol=1e-5)


def test_avec2019_ces_refuses_timestamps_not_in_seconds(tmp_path: Path, ces_tree: Path) -> None:
    path = ces_tree / "labels" / "Train_DE_01.csv"
    path.write_text(ces_rows("Train_DE_01", 0, step=100.0)[1])
    report, _ = run_manifest(tmp_path, ces_tree, "avec2019_ces")
    failure = next(f for f in report.failures if f.path == str(path))
    assert "expected seconds" in failure.reason


def test_speaker_splits_naming_an_absent_speaker_is_a_warning(
    crema_tree: Path, ravdess_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    create_adapter("crema_d", crema_tree, speaker_splits={"test": [1002, 1077]}).scan()
    assert "speaker_splits names speakers not found: 1077" in caplog.text
    caplog.clear()
    scan = create_adapter("ravdess", ravdess_tree, speaker_splits={"test": [1, "05"]}).scan()
    assert "speakers not found: 05" in caplog.text and "01," not in caplog.text
    assert {c.subject: c.split for c in scan.candidates}["Actor_01"] is Split.TEST
