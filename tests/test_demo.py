"""The synthetic demo dataset: Aff-Wild2 layout, frame-exact labels, determinism, and signals
(valence on the face, arousal in the voice) that the feature extractors can pick up."""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from avpipe.pipeline.demo import DemoConfig, build_demo_dataset
from avpipe.pipeline.demo.encode import Mp4Writer
from avpipe.pipeline.demo.face_animation import FaceState, plan_motion, render_face
from avpipe.pipeline.demo.face_sources import FaceSourceName, load_face_source
from avpipe.pipeline.demo.labels import AU_NAMES, Expression
from avpipe.pipeline.demo.speech import synthesize_voice
from avpipe.pipeline.errors import ConfigError, MediaError
from avpipe.pipeline.tools import ffprobe_binary

VA_HEADER = "valence,arousal"
EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AU_HEADER = ",".join(AU_NAMES)
DETECT_EVERY = 3  # run MTCNN on every 3rd frame: enough frames, a few seconds on 2 cores
TASK_HEADERS = {
    "VA_Estimation_Challenge": VA_HEADER,
    "EXPR_Recognition_Challenge": EXPR_HEADER,
    "AU_Detection_Challenge": AU_HEADER,
}


def tiny_config(root: Path, **changes) -> DemoConfig:
    # clip 3 is the two-person clip (fewer than 7 clips) and the one validation clip
    base = DemoConfig(
        root=str(root),
        seed=3,
        n_clips=3,
        min_seconds=2.4,
        max_seconds=3.0,
        width=320,
        height=240,
        validation_clips=1,
    )
    return replace(base, **changes)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    return build_demo_dataset(tiny_config(tmp_path_factory.mktemp("demo") / "demo"))


@pytest.fixture(scope="session")
def manifest(demo_root) -> dict:
    return json.loads((demo_root / "demo.json").read_text())


@contextmanager
def one_torch_thread():
    """On 2 shared CI cores, oversubscribed torch threads run MTCNN ~10x slower than one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def detector():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


@pytest.fixture(scope="session")
def detections(demo_root, manifest, detector) -> dict[str, dict[int, list[tuple[np.ndarray, np.ndarray]]]]:
    """MTCNN on every DETECT_EVERY-th frame of every clip: per clip, frame -> [(box, landmarks)].

    Only confident faces (p > 0.9) are kept, sorted left to right.
    """
    found = {}
    with one_torch_thread():
        for clip in manifest["clips"]:
            frames = decode_frames(demo_root / clip["video"], lambda i: i % DETECT_EVERY == 0)
            boxes, probs, points = detector.detect(list(frames.values()), landmarks=True)
            found[clip["name"]] = {
                index: _confident_faces(b, p, pts)
                for index, b, p, pts in zip(frames, boxes, probs, points, strict=True)
            }
    return found


def _confident_faces(boxes, probs, points) -> list[tuple[np.ndarray, np.ndarray]]:
    if boxes is None:
        return []
    faces = [(box, pts) for box, p, pts in zip(boxes, probs, points, strict=True) if p > 0.9]
    return sorted(faces, key=lambda face: face[0][0])


# ----------------------------------------------------------------------------------------- helpers


def annotation_path(root: Path, task: str, split: str, stem: str) -> Path:
    return root / "annotations" / task / split / f"{stem}.txt"


def read_rows(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text().splitlines()
    return lines[0], lines[1:]


def read_va(root: Path, split: str, stem: str) -> np.ndarray:
    """(T, 2) valence/arousal with NaN where the file says -5,-5 (unlabeled)."""
    _, rows = read_rows(annotation_path(root, "VA_Estimation_Challenge", split, stem))
    values = np.array([[float(x) for x in row.split(",")] for row in rows])
    values[values[:, 0] == -5] = np.nan
    return values


def count_frames(video: Path) -> int:
    result = subprocess.run(
        [ffprobe_binary(), "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(video)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout.strip())


def decode_frames(video: Path, keep) -> dict[int, np.ndarray]:
    with av.open(str(video)) as container:
        return {
            index: frame.to_ndarray(format="rgb24")
            for index, frame in enumerate(container.decode(video=0))
            if keep(index)
        }


def decode_audio(video: Path) -> tuple[np.ndarray, int]:
    with av.open(str(video)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().mean(axis=0) for frame in container.decode(stream)]
        return np.concatenate(chunks), stream.rate


def estimate_f0(window: np.ndarray, sample_rate: int) -> float | None:
    """Autocorrelation pitch of a window; None when it is not clearly periodic (unvoiced/silent)."""
    window = window - window.mean()
    energy = float(window @ window)
    if energy < 1e-8:
        return None
    corr = np.correlate(window, window, mode="full")[window.size - 1 :] / energy
    low, high = int(sample_rate / 400), int(sample_rate / 70)
    lags = corr[low:high]
    if lags.max() < 0.5:
        return None
    # the shortest lag almost as strong as the best one avoids octave-down errors
    best = int(np.argmax(lags >= 0.9 * lags.max()))
    return sample_rate / (low + best)


def mouth_geometry(points: np.ndarray) -> tuple[float, float]:
    """(mouth drop below the eye line, mouth width), both in eye distances, from MTCNN landmarks."""
    left_eye, right_eye, _, mouth_left, mouth_right = points
    across = right_eye - left_eye
    distance = float(np.linalg.norm(across))
    down = np.array([-across[1], across[0]]) / distance
    drop = float(((mouth_left + mouth_right) / 2 - (left_eye + right_eye) / 2) @ down) / distance
    width = float((mouth_right - mouth_left) @ (across / distance)) / distance
    return drop, width


def smile_score(points: np.ndarray) -> float:
    """Mouth width minus mouth drop (eye distances): higher when the corners go up and apart."""
    drop, width = mouth_geometry(points)
    return width - drop


def standardized_weights(target: np.ndarray, *predictors: np.ndarray) -> np.ndarray:
    """Least-squares weights of z-scored predictors for the z-scored target."""
    design = np.stack([(p - p.mean()) / p.std() for p in predictors], axis=1)
    weights, *_ = np.linalg.lstsq(design, (target - target.mean()) / target.std(), rcond=None)
    return weights


def single_person_clips(manifest: dict) -> list[dict]:
    return [clip for clip in manifest["clips"] if len(clip["subjects"]) == 1]


def two_person_clip(manifest: dict) -> dict:
    return next(clip for clip in manifest["clips"] if len(clip["subjects"]) == 2)


# ----------------------------------------------------------------------------------------- layout


def test_layout_and_headers_follow_affwild2(demo_root, manifest):
    names = [clip["name"] for clip in manifest["clips"]]
    assert names == ["demo_01", "demo_02", "demo_03"]
    assert [clip["split"] for clip in manifest["clips"]] == ["Train_Set", "Train_Set", "Validation_Set"]
    assert manifest["seed"] == tiny_config(demo_root).seed
    assert manifest["two_person_clip"] == "demo_03"
    stems = {"demo_01": ["demo_01"], "demo_02": ["demo_02"], "demo_03": ["demo_03_left", "demo_03_right"]}
    for clip in manifest["clips"]:
        assert (demo_root / "videos" / f"{clip['name']}.mp4").is_file()
        assert [s["annotation"] for s in clip["subjects"]] == stems[clip["name"]]
        assert {s["face_source"] for s in clip["subjects"]} <= {"astronaut", "carphone"}
        for task, header in TASK_HEADERS.items():
            for stem in stems[clip["name"]]:
                assert read_rows(annotation_path(demo_root, task, clip["split"], stem))[0] == header
    all_files = sorted(p.relative_to(demo_root).as_posix() for p in demo_root.rglob("*") if p.is_file())
    assert len(all_files) == 1 + 3 + 3 * 4  # demo.json, videos, 3 tasks x 4 annotation files
    assert [p.name for p in demo_root.parent.iterdir()] == [demo_root.name]  # no staging left over


def test_videos_are_h264_aac_and_labels_have_one_row_per_frame(demo_root, manifest):
    cfg = tiny_config(demo_root)
    for clip in manifest["clips"]:
        video = demo_root / clip["video"]
        n_frames = count_frames(video)
        assert n_frames == clip["n_frames"]
        with av.open(str(video)) as container:
            vstream, astream = container.streams.video[0], container.streams.audio[0]
            assert (vstream.codec_context.name, vstream.format.name) == ("h264", "yuv420p")
            assert (vstream.width, vstream.height) == (cfg.width, cfg.height)
            assert float(vstream.average_rate) == pytest.approx(cfg.fps)
            assert (astream.codec_context.name, astream.rate) == ("aac", cfg.sample_rate)
        for subject in clip["subjects"]:
            for task in TASK_HEADERS:
                _, rows = read_rows(annotation_path(demo_root, task, clip["split"], subject["annotation"]))
                assert len(rows) == n_frames, (task, subject["annotation"])


def test_label_values_are_well_formed_with_unlabeled_stretches(demo_root, manifest):
    unlabeled_seen = {task: 0 for task in TASK_HEADERS}
    for clip in manifest["clips"]:
        for subject in clip["subjects"]:
            stem, split = subject["annotation"], clip["split"]
            _, va_rows = read_rows(annotation_path(demo_root, "VA_Estimation_Challenge", split, stem))
            for row in va_rows:
                if row == "-5,-5":
                    continue
                valence, arousal = row.split(",")
                assert len(valence.split(".")[1]) == 3 and len(arousal.split(".")[1]) == 3, row
                assert -1.0 <= float(valence) <= 1.0 and -1.0 <= float(arousal) <= 1.0, row
            _, expr_rows = read_rows(annotation_path(demo_root, "EXPR_Recognition_Challenge", split, stem))
            assert {int(x) for x in expr_rows} <= set(range(-1, 8))
            _, au_rows = read_rows(annotation_path(demo_root, "AU_Detection_Challenge", split, stem))
            for row in au_rows:
                values = {int(x) for x in row.split(",")}
                assert len(row.split(",")) == 12 and (values <= {0, 1} or values == {-1}), row
            unlabeled_seen["VA_Estimation_Challenge"] += va_rows.count("-5,-5")
            unlabeled_seen["EXPR_Recognition_Challenge"] += expr_rows.count("-1")
            unlabeled_seen["AU_Detection_Challenge"] += au_rows.count(",".join(["-1"] * 12))
            recorded = subject["unlabeled_frames"]["VA"]
            if recorded is not None:
                assert va_rows[recorded[0] : recorded[1]] == ["-5,-5"] * (recorded[1] - recorded[0])
    assert all(count > 0 for count in unlabeled_seen.values()), unlabeled_seen


def test_valence_and_arousal_span_most_of_the_range(demo_root, manifest):
    for clip in manifest["clips"]:
        for subject in clip["subjects"]:
            va = read_va(demo_root, clip["split"], subject["annotation"])
            for curve in va.T:
                # an unlabeled stretch may hide a peak, hence the span rather than both ends
                assert np.nanmax(curve) - np.nanmin(curve) > 1.2
                assert np.nanmin(curve) < -0.3 and np.nanmax(curve) > 0.3
                steps = np.arange(curve.size)
                known = ~np.isnan(curve)
                filled = np.interp(steps, steps[known], curve[known])  # bridge the unlabeled stretch
                power = np.abs(np.fft.rfft((filled - filled.mean()) * np.hanning(filled.size))) ** 2
                fast = np.fft.rfftfreq(curve.size, 1.0 / clip["fps"]) > 2.0
                assert power[fast].sum() < 0.01 * power.sum()  # smooth: nothing above 2 Hz


def test_expressions_and_action_units_agree_with_valence_arousal(demo_root, manifest):
    pairs = []
    for clip in manifest["clips"]:
        for subject in clip["subjects"]:
            stem, split = subject["annotation"], clip["split"]
            va = read_va(demo_root, split, stem)
            _, expr = read_rows(annotation_path(demo_root, "EXPR_Recognition_Challenge", split, stem))
            _, au = read_rows(annotation_path(demo_root, "AU_Detection_Challenge", split, stem))
            for (valence, arousal), e, units in zip(va, expr, au, strict=True):
                if np.isnan(valence) or e == "-1" or units.startswith("-1"):
                    continue
                pairs.append(
                    (valence, arousal, int(e), dict(zip(AU_NAMES, map(int, units.split(",")), strict=True)))
                )
    happy = [v for v, _, e, _ in pairs if e == Expression.HAPPINESS]
    sad = [(v, a) for v, a, e, _ in pairs if e == Expression.SADNESS]
    assert happy and min(happy) >= 0.3
    assert all(v <= -0.3 and a <= -0.3 for v, a in sad)
    assert all((units["AU12"] == 1) == (v >= 0.2) for v, _, _, units in pairs)
    assert all((units["AU4"] == 1) == (v <= -0.3) for v, _, _, units in pairs)
    assert 0 < sum(units["AU25"] for *_, units in pairs) < len(pairs)  # lips part only while speaking


# ------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_files_and_frames(demo_root, tmp_path):
    again = build_demo_dataset(tiny_config(tmp_path / "again"))
    for path in sorted((demo_root / "annotations").rglob("*.txt")):
        assert (again / path.relative_to(demo_root)).read_bytes() == path.read_bytes(), path.name
    first = json.loads((demo_root / "demo.json").read_text())
    second = json.loads((again / "demo.json").read_text())
    assert first["clips"] == second["clips"]
    for video in sorted((demo_root / "videos").glob("*.mp4")):
        # one-threaded x264 and bit-exact muxing: even the container bytes repeat on one ffmpeg build
        assert (again / "videos" / video.name).read_bytes() == video.read_bytes(), video.name
        frame_a = decode_frames(video, lambda i: i == 0)[0]
        frame_b = decode_frames(again / "videos" / video.name, lambda i: i == 0)[0]
        assert np.array_equal(frame_a, frame_b), video.name
        assert decode_audio(video)[0].tobytes() == decode_audio(again / "videos" / video.name)[0].tobytes()


def test_other_seed_gives_other_labels_and_frames(demo_root, tmp_path):
    other = build_demo_dataset(tiny_config(tmp_path / "other", seed=4, n_clips=2))
    stem = "VA_Estimation_Challenge/Train_Set/demo_01.txt"
    assert (other / "annotations" / stem).read_text() != (demo_root / "annotations" / stem).read_text()
    frame_a = decode_frames(demo_root / "videos/demo_01.mp4", lambda i: i == 10)[10]
    frame_b = decode_frames(other / "videos/demo_01.mp4", lambda i: i == 10)[10]
    assert not np.array_equal(frame_a, frame_b)


def test_rebuild_replaces_a_demo_but_refuses_a_foreign_directory(tmp_path):
    cfg = tiny_config(tmp_path / "data", n_clips=2, min_seconds=1.0, max_seconds=1.0)
    build_demo_dataset(cfg)
    (tmp_path / "data" / "stale.txt").write_text("from an older build")
    build_demo_dataset(cfg)
    assert not (tmp_path / "data" / "stale.txt").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match=r"demo\.root"):
        build_demo_dataset(replace(cfg, root=str(foreign)))
    assert (foreign / "thesis.tex").read_text() == "precious"


# ------------------------------------------------------------------------------------------ signals


def test_voice_pitch_and_loudness_rise_with_arousal(demo_root, manifest):
    pitches = {"high": [], "low": []}
    loudness = {"high": [], "low": []}
    for clip in single_person_clips(manifest):
        audio, rate = decode_audio(demo_root / clip["video"])
        va = read_va(demo_root, clip["split"], clip["name"])
        half = int(0.032 * rate)
        for index, arousal in enumerate(va[:, 1]):
            group = "high" if arousal > 0.4 else "low" if arousal < -0.4 else None
            center = int(index / clip["fps"] * rate)
            if group is None or center - half < 0 or center + half > audio.size:
                continue
            window = audio[center - half : center + half]
            loudness[group].append(float(np.sqrt(np.mean(window**2))))
            f0 = estimate_f0(window, rate)
            if f0 is not None:
                pitches[group].append(f0)
    assert len(pitches["high"]) >= 5 and len(pitches["low"]) >= 5, pitches
    assert np.median(pitches["high"]) > 1.3 * np.median(pitches["low"])
    assert np.mean(loudness["high"]) > 2.0 * np.mean(loudness["low"])


def test_syllable_rate_rises_with_arousal():
    rate, fps, seconds = 16000, 25.0, 8.0
    n_frames = int(seconds * fps)

    def syllables(arousal: float) -> int:
        voice = synthesize_voice(
            np.random.default_rng(0), np.full(n_frames, arousal), fps, rate, int(seconds * rate)
        )
        speaking = voice.envelope > 0.5
        return int(np.count_nonzero(speaking[1:] & ~speaking[:-1]))

    assert syllables(0.9) > 1.8 * syllables(-0.9)


def test_rendered_smile_and_frown_differ_only_around_the_face(detector):
    """Same source frame and pose, valence +0.9 vs -0.9: the mouth changes, the background does not."""
    size = (320, 240)
    motion = plan_motion(np.random.default_rng(0), 1, 25.0, *size)
    for name in FaceSourceName:
        source = load_face_source(name)
        for index in sorted({0, source.frames.shape[0] // 2, source.frames.shape[0] - 1}):
            image, points = source.frames[index], source.landmarks[index]
            smile, frown = (
                render_face(image, points, motion, FaceState(0, valence, 0.0), size, source.style)
                for valence in (0.9, -0.9)
            )
            difference = np.abs(smile.astype(int) - frown.astype(int)).max(axis=2)
            assert difference[:20, :20].max() == 0 and difference[-20:, -20:].max() == 0  # background
            assert (difference > 40).sum() > 200, (name, index)  # a visible change on the face
            with one_torch_thread():
                found = [_confident_faces(*detector.detect(face, landmarks=True)) for face in (smile, frown)]
            assert all(len(faces) == 1 for faces in found), (name, index)
            scores = [smile_score(faces[0][1]) for faces in found]
            assert scores[0] > scores[1] + 0.1, (name, index, scores)


def test_mouth_shape_follows_valence_in_the_videos(demo_root, manifest, detections):
    for clip in single_person_clips(manifest):
        valence = read_va(demo_root, clip["split"], clip["name"])[:, 0]
        pairs = [
            (valence[index], smile_score(faces[0][1]))
            for index, faces in detections[clip["name"]].items()
            if faces and not np.isnan(valence[index])
        ]
        assert len(pairs) >= 10, clip["name"]
        correlation = np.corrcoef(np.array(pairs).T)[0, 1]
        assert correlation > 0.5, (clip["name"], correlation)


def test_mtcnn_finds_the_face_on_almost_every_frame(manifest, detections):
    for clip in single_person_clips(manifest):
        counts = [len(faces) for faces in detections[clip["name"]].values()]
        assert np.mean([count >= 1 for count in counts]) >= 0.95, (clip["name"], counts)


def test_two_person_clip_has_two_faces_each_following_its_own_labels(demo_root, manifest, detections):
    clip = two_person_clip(manifest)
    width = tiny_config(demo_root).width
    left = read_va(demo_root, clip["split"], f"{clip['name']}_left")[:, 0]
    right = read_va(demo_root, clip["split"], f"{clip['name']}_right")[:, 0]
    frames = detections[clip["name"]]
    assert np.mean([len(faces) == 2 for faces in frames.values()]) >= 0.95
    scores = {"left": [], "right": []}
    for index, faces in frames.items():
        if len(faces) != 2:
            continue
        (left_box, left_points), (right_box, right_points) = faces
        assert left_box[2] <= width / 2 + 5 and right_box[0] >= width / 2 - 5
        scores["left"].append((index, smile_score(left_points)))
        scores["right"].append((index, smile_score(right_points)))
    for side, own, other in (("left", left, right), ("right", right, left)):
        index, score = np.array(scores[side]).T
        index = index.astype(int)
        labeled = ~np.isnan(own[index]) & ~np.isnan(other[index])
        own_weight, other_weight = standardized_weights(
            score[labeled], own[index][labeled], other[index][labeled]
        )
        # two independent curves can correlate by chance over a short clip: the regression on both
        # tells which one the face actually follows
        assert own_weight > 0.5 and own_weight > abs(other_weight) + 0.2, (side, own_weight, other_weight)


def test_encoder_failure_names_the_file_and_ffmpeg_message(tmp_path):
    target = tmp_path / "no_such_dir" / "clip.mp4"
    audio = np.zeros(1600, dtype=np.float32)
    with pytest.raises(MediaError) as raised, Mp4Writer(target, (64, 64), 25.0, audio, 16000) as writer:
        for _ in range(5):
            writer.write(np.zeros((64, 64, 3), dtype=np.uint8))
    assert raised.value.path == str(target)
    assert "No such file or directory" in raised.value.reason


# ------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"fps": 0.0}, "demo.fps"),
        ({"width": 321}, "demo.width"),
        ({"height": 32}, "demo.height"),
        ({"n_clips": 0}, "demo.n_clips"),
        ({"validation_clips": 3}, "demo.validation_clips"),
        ({"min_seconds": 5.0, "max_seconds": 4.0}, "demo.max_seconds"),
        ({"sample_rate": 1000}, "demo.sample_rate"),
        ({"seed": -1}, "demo.seed"),
        ({"root": ""}, "demo.root"),
    ],
)
def test_bad_config_values_name_their_key(changes, key):
    with pytest.raises(ConfigError) as raised:
        DemoConfig(**{"n_clips": 3, "validation_clips": 1, **changes})
    assert raised.value.key == key
