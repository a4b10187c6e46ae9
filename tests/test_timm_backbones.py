"""The ``timm`` and ``hf-vision`` face-embedding extractors with small random models saved to files:
loading (state dict, safetensors, timm hub folder; a pickled model only after convert-checkpoint), the
input transform taken from the model's pretrained config, head outputs, colour order, and the errors
naming the file at fault."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from avpipe.pipeline.checkpoints import convert_checkpoint  # noqa: E402
from avpipe.pipeline.errors import ConfigError, ExtractorError  # noqa: E402
from avpipe.pipeline.registry import create_extractor  # noqa: E402
from tests.test_embeddings import context, smiling_crops  # noqa: E402, F401  (fixture)

ARCH = "test_efficientnet"  # timm's own 0.1 M-parameter test network: 256-d, input 160, bicubic
CLASSES = ["Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"]


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False, num_classes=len(CLASSES)).eval()


def reference(net: torch.nn.Module, crops: np.ndarray, mean, std, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent of TimmBackbone: resize, scale to [0, 1], normalise, run timm's own forward."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        pooled = net.forward_head(net.forward_features(x), pre_logits=True)
        logits = net(x)
    return pooled.numpy(), logits.numpy()


def embed(name: str, crops, **config):
    extractor = create_extractor(name, fp16=False, channels_last=False, **config)
    extractor.setup("cpu")
    return extractor, extractor.extract(crops, crops_timeline(crops), context())


def crops_timeline(crops):
    from avpipe.pipeline.types import Timeline

    return Timeline(time=crops.time, frame_index=crops.frame_index)


def test_state_dict_checkpoint_gives_embedding_and_named_logits(net, tmp_path, smiling_crops) -> None:  # noqa: F811
    path = tmp_path / "enet.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)  # a training script's wrapper
    extractor, out = embed("timm", smiling_crops, model=ARCH, checkpoint=str(path), logit_names=CLASSES)
    assert extractor.feature_dim == 256 and out.attrs["logit_names"] == CLASSES
    assert out.arrays["features"].shape == (3, 256) and out.arrays["logits"].shape == (3, 8)
    pooled, logits = reference(
        net, smiling_crops.crops[[0]], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 160
    )
    np.testing.assert_allclose(out.arrays["features"][0], pooled[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.arrays["logits"][0], logits[0], rtol=1e-4, atol=1e-5)
    assert not out.arrays["features"][1].any() and out.mask.tolist() == [1, 0, 1]
    # the head's width is read from the checkpoint; logits: false keeps the embedding only
    extractor, out = embed("timm", smiling_crops, model=ARCH, checkpoint=str(path), logits=False)
    assert "logits" not in out.arrays and extractor.feature_dim == 256


def test_timm_hub_folder_brings_its_architecture_and_normalisation(net, tmp_path, smiling_crops) -> None:  # noqa: F811
    from timm.models import save_for_hf

    net.pretrained_cfg = {
        **net.pretrained_cfg,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "input_size": (3, 112, 112),
    }
    save_for_hf(net, str(tmp_path / "hub"), safe_serialization=True)
    _, out = embed("timm", smiling_crops, checkpoint=str(tmp_path / "hub"))
    pooled, _ = reference(net, smiling_crops.crops[[2]], (0.5,) * 3, (0.5,) * 3, 112)
    np.testing.assert_allclose(out.arrays["features"][2], pooled[0], rtol=1e-4, atol=1e-5)
    assert out.attrs["logit_names"] == [f"class_{i}" for i in range(8)]


def test_bgr_networks_get_channels_swapped(net, tmp_path, smiling_crops) -> None:  # noqa: F811
    path = tmp_path / "enet.safetensors"
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(path))
    _, bgr = embed("timm", smiling_crops, model=ARCH, checkpoint=str(path), colour_order="bgr")
    pooled, _ = reference(
        net, smiling_crops.crops[[0], :, :, ::-1].copy(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 160
    )
    np.testing.assert_allclose(bgr.arrays["features"][0], pooled[0], rtol=1e-4, atol=1e-5)


def test_missing_mismatched_and_pickled_checkpoints(net, tmp_path) -> None:
    missing = tmp_path / "enet_b0_8_best_afew.pth"
    with pytest.raises(ExtractorError, match=re.escape(str(missing))):
        create_extractor("timm", model=ARCH, checkpoint=str(missing)).preflight()
    with pytest.raises(ExtractorError, match=r"extractors\.timm\.checkpoint is not set"):
        create_extractor("timm", model=ARCH).preflight()
    other = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), other)
    with pytest.raises(
        ExtractorError, match=r"resnet\.pth does not match the architecture: \d+ missing keys"
    ):
        create_extractor("timm", model=ARCH, checkpoint=str(other)).setup("cpu")
    pickled = tmp_path / "whole_model.pt"  # HSEmotion saves whole models with torch.save(model)
    torch.save(net, pickled)
    with pytest.raises(ExtractorError, match="convert-checkpoint --trust-pickle"):
        create_extractor("timm", model=ARCH, checkpoint=str(pickled)).setup("cpu")
    converted = tmp_path / "whole_model.safe.pt"  # the one-off, explicit conversion (RELIABILITY.md)
    convert_checkpoint(pickled, converted, trust_pickle=True)
    extractor = create_extractor("timm", model=ARCH, checkpoint=str(converted))
    assert extractor.feature_dim == 256 and len(extractor.logit_names) == 8
    with pytest.raises(ExtractorError, match="Unknown model"):
        create_extractor("timm", model="no_such_net", checkpoint=str(other)).setup("cpu")
    with pytest.raises(ConfigError, match=r"extractors\.timm\.colour_order"):
        create_extractor("timm", colour_order="rgba")


def test_hf_vision_encoder_from_a_local_folder(tmp_path, smiling_crops) -> None:  # noqa: F811
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
    )
    folder = tmp_path / "vit"
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.25] * 3
    ).save_pretrained(folder)
    extractor, out = embed("hf-vision", smiling_crops, model=str(folder), pool="cls")
    assert extractor.feature_dim == 32 and out.arrays["features"].shape == (3, 32)
    x = torch.from_numpy(smiling_crops.crops[[0]]).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False)
    net = ViTModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        cls = net(pixel_values=(x - 0.5) / 0.25).last_hidden_state[:, 0]
    np.testing.assert_allclose(out.arrays["features"][0], cls[0].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ExtractorError, match=re.escape(str(tmp_path / "nothing"))):
        create_extractor("hf-vision", model=str(tmp_path / "nothing")).preflight()


def test_iresnet100_has_arcface_torch_keys_and_loads_its_checkpoint(tmp_path, smiling_crops) -> None:  # noqa: F811
    from avpipe.pipeline.extractors.backbones import create_backbone

    model = create_backbone("iresnet100", random_init=True)
    state = model.state_dict()
    # parameter names and shapes of insightface's arcface_torch r100 backbone.pth
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "prelu.weight": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer2.12.conv2.weight": (128, 128, 3, 3),
        "layer3.29.bn3.running_var": (256,),
        "layer4.2.prelu.weight": (512,),
        "fc.weight": (512, 512 * 7 * 7),
        "features.running_mean": (512,),
    }
    assert {key: tuple(state[key].shape) for key in expected} == expected
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 13, 30, 3]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 65.2
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    extractor, out = embed("iresnet100", smiling_crops, checkpoint=str(path))
    assert extractor.feature_dim == 512 and out.arrays["features"].shape == (3, 512)
    with pytest.raises(ExtractorError, match=r"ms1mv3_arcface_r100_backbone\.pth"):
        create_extractor("iresnet100").preflight()


def test_timm_runs_through_the_embed_stage_path(net, tmp_path, smiling_crops) -> None:  # noqa: F811
    """run_extractor (what `avpipe embed timm` runs): Dask workers build the model from the config."""
    from avpipe.pipeline.config import RunnerConfig, StoreConfig
    from avpipe.pipeline.extract import run_extractor
    from avpipe.pipeline.manifest import ManifestRow
    from avpipe.pipeline.store import FeatureStore
    from tests.test_embeddings import faces_featureset

    checkpoint = tmp_path / "enet.pth"
    torch.save(net.state_dict(), checkpoint)
    store_cfg = StoreConfig(root=str(tmp_path / "features"))
    store = FeatureStore(store_cfg.root)
    store.write("faces", "astronaut", faces_featureset(smiling_crops), extractor_version="1", params_hash="f")
    config = create_extractor("timm", model=ARCH, checkpoint=str(checkpoint), logit_names=CLASSES).config
    runner_cfg = RunnerConfig(n_workers=1, threads_per_worker=1, torch_threads=1, device="cpu")
    rows = [ManifestRow(video_id="astronaut", media_path=str(tmp_path / "astronaut.mp4"))]
    report = run_extractor("timm", config, rows, store_cfg, runner_cfg)
    assert report.done == 1 and report.failed == 0
    stored = store.read("timm", "astronaut")
    _, direct = embed("timm", smiling_crops, model=ARCH, checkpoint=str(checkpoint), logit_names=CLASSES)
    np.testing.assert_allclose(stored.arrays["features"], direct.arrays["features"], rtol=1e-4, atol=1e-5)
    assert stored.attrs["logit_names"] == CLASSES and stored.mask.tolist() == [1, 0, 1]
