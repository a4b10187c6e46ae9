"""A CREMA-D-style folder of real clips trains an expression model end to end through the ``avpipe`` CLI:
manifest (the crema_d recipe parses the emotion from each file name) -> faces -> embed fer-minixception
and audio mfcc -> train -> evaluate -> predict.

The clips are made distinguishable by construction: each emotion is played by another real face (the
carphone talking head for anger, scikit-image's astronaut for happy, Grace Hopper for sad) pasted on a
real background, with an espeak-ng voice of its own saying the clip's CREMA-D sentence. Actors are the
folds' subjects: three train, one validates, one is the held-out test actor whose accuracy must beat
chance (1/3).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from avpipe.cli import main as cli_main
from avpipe.models.checkpoint import load_checkpoint
from avpipe.pipeline.adapters.crema_d import EMOTION_NAMES
from avpipe.pipeline.tools import ffmpeg_binary
from tests.face_scenes import CANVAS, FPS, background, tile
from tests.media_factory import espeak_binary

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SENTENCES = {
    "DFA": "Don't forget a jacket.",
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
}
# emotion code -> (real face, espeak-ng voice and pitch)
CLASSES = {
    "ANG": ("carphone", "en+m3", 35),
    "HAP": ("astronaut", "en+f3", 70),
    "SAD": ("hopper", "en+m1", 20),
}
TRAIN_ACTORS, VALIDATION_ACTOR, TEST_ACTOR = ("1001", "1003"), "1004", "1005"
SENTENCE_OF = {"1001": "DFA", "1002": "IEO", "1003": "TIE", "1004": "DFA", "1005": "IEO"}


def speak(text: str, voice: str, pitch: int, wav: Path) -> float:
    subprocess.run(
        [shutil.which("espeak-ng"), "-v", voice, "-p", str(pitch), "-s", "170", "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    import wave

    with wave.open(str(wav)) as handle:
        return handle.getnframes() / handle.getframerate()


def clip_frames(person: str, n: int, actor: int) -> np.ndarray:
    """The person's tile on the background, placed per actor and swaying a little from frame to frame."""
    rng = np.random.default_rng(actor)
    x0, y0 = int(rng.integers(60, 200)), int(rng.integers(0, 20))
    frames = []
    for row in range(n):
        image = background().copy()
        face = tile(person, row)
        x = x0 + int(6 * np.sin(row / 5.0))
        h, w = min(face.shape[0], CANVAS[1] - y0), min(face.shape[1], CANVAS[0] - x)
        image[y0 : y0 + h, x : x + w] = face[:h, :w]
        frames.append(image)
    return np.stack(frames)


def write_clip(path: Path, frames: np.ndarray, wav: Path) -> None:
    """An FLV (H.264 + AAC, as CREMA-D's VideoFlash files are Flash video) of ``frames`` with ``wav``."""
    command = [
        ffmpeg_binary(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{CANVAS[0]}x{CANVAS[1]}", "-r", str(FPS), "-i", "-", "-i", str(wav),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
        str(path),
    ]  # fmt: skip
    subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), check=True, capture_output=True)


@pytest.fixture(scope="module")
def crema_d(tmp_path_factory) -> Path:
    espeak_binary()
    root = tmp_path_factory.mktemp("crema_d")
    folder = root / "VideoFlash"
    folder.mkdir()
    for actor in (*TRAIN_ACTORS, VALIDATION_ACTOR, TEST_ACTOR):
        sentence = SENTENCE_OF[actor]
        for emotion, (person, voice, pitch) in CLASSES.items():
            stem = f"{actor}_{sentence}_{emotion}_XX"
            wav = root / f"{stem}.wav"
            seconds = speak(SENTENCES[sentence], voice, pitch, wav)
            write_clip(folder / f"{stem}.flv", clip_frames(person, int(seconds * FPS) + 1, int(actor)), wav)
            wav.unlink()
    return root


def write_params(work: Path, root: Path, **train) -> Path:
    params = {
        "dataset": {
            "adapter": "crema_d",
            "root": str(root),
            "fps": 10.0,  # the frames the stages extract: 10 a second (CREMA-D's video is 30)
            "options": {"speaker_splits": {"validation": [VALIDATION_ACTOR], "test": [TEST_ACTOR]}},
        },
        "manifest": {"path": str(work / "manifest.csv"), "failures": str(work / "failures.csv")},
        "store": {"root": str(work / "features")},
        "runner": {"reports": str(work / "reports"), "n_workers": 1},
        "results": {"dir": str(work / "results"), "train_inputs": str(work / "train_inputs.json")},
        "audio": {"extractors": ["mfcc"]},
        "embed": {"backbones": ["fer-minixception"]},
        "extractors": {"faces": {"sizes": [112, 48], "detect_every": 10}},
        "train": {
            "tasks": ["category:emotion"],
            "features": ["fer-minixception", "mfcc"],
            "model": {"name": "rnn", "config": {"hidden": 16}},
            "folds": {"k": 1},
            "window": 16,
            "hop": 8,
            "batch_size": 8,
            "epochs": 15,
            "patience": 15,
            "optimizer": {"lr": 0.005},
            "threads": 1,
            "output_dir": str(work / "train"),
            "eval_dir": str(work / "evaluate"),
            "predictions_dir": str(work / "predictions"),
            **train,
        },
    }
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_crema_d_folder_trains_an_emotion_model_that_beats_chance(crema_d, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the faces stage writes its contact sheets under data/qa
    params = str(write_params(tmp_path, crema_d))
    for command in (["manifest"], ["faces"], ["embed", "fer-minixception"], ["audio", "mfcc"]):
        assert cli_main(["-p", params, *command]) == 0, command
    assert cli_main(["-p", params, "train"]) == 0
    assert cli_main(["-p", params, "evaluate"]) == 0

    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    (task,) = summary["tasks"]
    assert (task["key"], task["kind"], task["names"]) == (
        "category:emotion",
        "categorical",
        list(EMOTION_NAMES),
    )
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    pool = [row for row in rows if row["split"] in ("train", "validation")]
    assert task["labelled_frames"] == sum(int(row["n_frames"]) for row in pool)  # a clip label: every frame
    assert task["partially_labelled_frames"] == 0
    assert summary["test"] == [f"{TEST_ACTOR}_{SENTENCE_OF[TEST_ACTOR]}_{e}_XX" for e in CLASSES]
    loaded = load_checkpoint(tmp_path / "train" / "fold_0" / "model.pt")
    assert loaded.tasks[0].names == EMOTION_NAMES  # the dataset's classes, not Aff-Wild2's

    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    test = metrics["test"]
    assert {"f1_emotion_anger", "f1_emotion_happy", "f1_emotion_sad"} <= set(test)
    assert test["f1_emotion_fear"] is None  # no fearful clip: no F1 to report
    assert test["n_frames_emotion"] > 0
    # the held-out actor's clips: each class another face and voice, so well above chance (1/3)
    assert test["accuracy_emotion"] >= 0.6, test
    fold = summary["folds"][0]
    assert fold["beat_untrained"] and fold["best_score"] > fold["untrained_score"], fold

    assert cli_main(["-p", params, "predict", "--split", "test"]) == 0
    predicted = {}
    for path in sorted((tmp_path / "predictions").glob("*.csv")):
        rows = list(csv.DictReader(path.open()))
        assert {"emotion", "emotion_name", "p_emotion_anger", "p_emotion_sad"} <= set(rows[0])
        names, counts = np.unique([row["emotion_name"] for row in rows], return_counts=True)
        predicted[path.stem.split("_")[2]] = names[np.argmax(counts)]
    assert set(predicted) == set(CLASSES)
    hits = sum(
        predicted[code] == EMOTION_NAMES[("ANG", "DIS", "FEA", "HAP", "NEU", "SAD").index(code)]
        for code in CLASSES
    )
    assert hits >= 2, predicted


def test_a_valence_preset_on_crema_d_names_the_missing_task_and_the_dataset(
    crema_d, tmp_path, monkeypatch, caplog
):
    """abaw2-lfan trains va; CREMA-D has no valence: the error names the task and the dataset."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "presets", tmp_path / "presets")
    params = str(write_params(tmp_path, crema_d, preset="abaw2-lfan", tasks=None))
    assert cli_main(["-p", params, "manifest"]) == 0
    assert cli_main(["-p", params, "train"]) == 2
    message = caplog.text
    assert "task 'va' is not in the labels of dataset 'crema_d'" in message, message
    assert "category:emotion" in message  # what the labels carry
