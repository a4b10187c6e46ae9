"""Seed presets: each has a demo variant (its top-level keys) and a paper variant whose every value is
cited from the original code; the paper variants build the original architectures, parameter for
parameter (counts computed here from the original's layer sizes), and train end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avpipe.models.base import InputSpec
from avpipe.models.experiment import run_training
from avpipe.models.prediction import run_prediction
from avpipe.models.registry import create_model
from avpipe.pipeline.config import build_dataclass
from avpipe.pipeline.config.train import (
    Modality,
    Task,
    TrainConfig,
    list_presets,
    read_preset,
    resolve_train_section,
)
from avpipe.pipeline.errors import ConfigError
from tests.test_train import build_dataset

REPO = Path(__file__).resolve().parents[1]
AIM3_SMALL = {"hidden": 32, "heads": 4, "task_head_dim": 16, "feedforward": 64, "head_layers": [32, 16]}
VISUAL, AUDIO = Modality.VISUAL, Modality.AUDIO


def leaves(tree: dict, prefix: str = "") -> list[str]:
    """Dotted keys of the values of a settings tree (a task-weights mapping counts one per task)."""
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys += leaves(value, f"{path}.") if isinstance(value, dict) else [path]
    return keys


def paper_config(preset: str, **overrides) -> TrainConfig:
    section = resolve_train_section({"preset": preset, "variant": "paper", **overrides}, REPO)
    return build_dataclass(TrainConfig, section, "train")


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build(config: TrainConfig, dims: list[tuple[str, int, Modality]]):
    inputs = [InputSpec(key, dim, modality) for key, dim, modality in dims]
    return create_model(
        config.model.name,
        inputs=inputs,
        tasks=config.tasks,
        window=config.window,
        separate_va=config.model.separate_va,
        **config.model.config,
    )


@pytest.mark.parametrize("preset", ["abaw2-lfan", "abaw4-mtl", "jca", "lstm-fusion"])
def test_every_paper_value_is_cited_and_the_variant_is_valid(preset):
    paper = read_preset(preset, REPO)["paper"]
    assert paper["source"]
    assert sorted(leaves(paper["settings"])) == sorted(paper["cite"]), "a value without a citation"
    assert all(isinstance(c, str) and c.strip() for c in paper["cite"].values())
    config = paper_config(preset)
    assert config.variant == "paper"
    demo = build_dataclass(TrainConfig, resolve_train_section({"preset": preset}, REPO), "train")
    assert demo.variant == "demo" and demo != config


def test_separate_va_needs_the_va_task_alone():
    with pytest.raises(ConfigError, match=r"train\.model\.separate_va"):
        paper_config("abaw2-lfan", tasks=["va", "expr"])


def test_unknown_variants_and_variants_without_a_preset_are_errors():
    with pytest.raises(ConfigError, match=r"train\.variant"):
        resolve_train_section({"preset": "jca", "variant": "nope"}, REPO)
    with pytest.raises(ConfigError, match=r"needs a train\.preset"):
        resolve_train_section({"variant": "paper"}, REPO)


def test_presets_keep_their_top_level_train_keys():
    for preset in list_presets(REPO):
        data = yaml.safe_load((REPO / "presets" / f"{preset}.yaml").read_text())
        assert {"features", "tasks", "model", "optimizer"} <= set(data)


# --------------------------------------------------------------------------- parameter counts


def weight_norm_conv(c_in: int, c_out: int, k: int) -> int:
    return c_out * c_in * k + c_out + c_out  # v, g, bias


def tcn(c_in: int, channels: list[int], k: int) -> int:
    total = 0
    for c_out in channels:
        total += weight_norm_conv(c_in, c_out, k) + weight_norm_conv(c_out, c_out, k)
        total += (c_in * c_out + c_out) if c_in != c_out else 0  # 1x1 downsample
        c_in = c_out
    return total


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def test_abaw2_paper_variant_has_the_original_parameter_count():
    # sucv/ABAW2 model/model.py:124-193 with main.py's defaults: IR-50 embedding 512, vggish 128, mfcc 39
    original = (
        tcn(512, [128] * 4, 5)  # self.temporal, main.py:72-79
        + tcn(128, [32] * 4, 5)  # self.temporal1 (vggish), model.py:157-160
        + tcn(39, [32] * 4, 5)  # self.temporal2 (mfcc), model.py:161-164
        + 3 * (linear(128, 32) + linear(32, 32) + linear(32, 32))  # encoder/encoderQ/encoderV 1-3
        + 2 * 3 * 32  # LayerNorm([3, 32])
        + linear(224, 1)  # regressor, one output: one model per emotion
    )
    config = paper_config("abaw2-lfan")
    model = build(config, [("ir50", 512, VISUAL), ("vggish", 128, AUDIO), ("mfcc", 39, AUDIO)])
    assert count(model) == 2 * original  # one model per emotion (separate_va)
    joint = paper_config("abaw2-lfan", model={"separate_va": False})
    dims = [("ir50", 512, VISUAL), ("vggish", 128, AUDIO), ("mfcc", 39, AUDIO)]
    assert count(build(joint, dims)) == original + linear(224, 1)  # one model, two outputs


def test_jca_paper_variant_has_the_original_parameter_count():
    # praveena2j/JointCrossAttentional-AV-Fusion models/cam.py:16-34, the regressor's input fixed to 256
    original = (
        2 * linear(512, 128)  # encoder1, encoder2
        + 2 * linear(8, 8, bias=False)  # affine_a, affine_v
        + 2 * linear(8, 32, bias=False)  # W_a, W_v
        + 2 * linear(256, 32, bias=False)  # W_ca, W_cv
        + 2 * linear(32, 8, bias=False)  # W_ha, W_hv
        + linear(256, 128)
        + linear(128, 1)  # regressor
    )
    config = paper_config("jca")
    model = build(config, [("ir50", 512, VISUAL), ("vggish", 512, AUDIO)])
    assert count(model) == 2 * original  # one model per emotion (separate_va)


def transformer_layer(d: int, ffn: int) -> int:
    """nn.TransformerEncoderLayer: in_proj 3d x d + 3d, out_proj, two FFN linears, two LayerNorms."""
    return 3 * d * d + 3 * d + linear(d, d) + linear(d, ffn) + linear(ffn, d) + 2 * 2 * d


def test_abaw4_paper_variant_has_the_original_parameter_count():
    # AIM3-RUC/ABAW4 models/mtl_transformer_model.py:76-139 with scripts/train_mtl_transformer.sh, for a
    # 512-d input (the script leaves the feature list to the user)
    d_in, hidden, ffn = 512, 1024, 2048
    fc = lambda width, out: linear(width, 512) + linear(512, 256) + linear(256, out)  # noqa: E731
    widths = {"v": hidden, "au": hidden, "expr": hidden, "a": hidden + 2 * 256}  # a reads v's and au's
    outputs = {"v": 1, "a": 1, "expr": 8, "au": 12}
    trained = linear(d_in, hidden) + transformer_layer(hidden, ffn)  # affine + 4 - 3 shared layers
    trained += sum(3 * transformer_layer(w, ffn) + fc(w, outputs[b]) for b, w in widths.items())
    # the original's parameters() also hold, per encoder (shared + 4 branches), a frozen 512-row position
    # table and the pooled output's Linear(w, w) that no prediction uses (networks/transformer.py:105-117)
    unused = sum(512 * w + linear(w, w) for w in [hidden, *widths.values()])
    config = paper_config("abaw4-mtl")
    model = build(config, [("face", d_in, VISUAL)])
    assert count(model) == trained
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trained
    # printed by building the original's modules (TransformerEncoder, FcRegressor, FcClassifier) as
    # models/mtl_transformer_model.py:77-139 does with the script's options and a 512-d input
    assert trained + unused == 144_092_694


def test_schoneveld_paper_variant_parameter_count():
    config = paper_config("lstm-fusion")
    hidden, fused = 256, 512 + 128  # a 512-d face embedding and VGGish, concatenated
    lstm = 4 * hidden * (fused + hidden) + 8 * hidden + 4 * hidden * (2 * hidden) + 8 * hidden
    model = build(config, [("inception-resnet-v1", 512, VISUAL), ("vggish", 128, AUDIO)])
    assert count(model) == lstm + linear(hidden, 2)


# --------------------------------------------------------------------------- paper options, end to end


@pytest.mark.parametrize("preset", ["abaw2-lfan", "jca", "abaw4-mtl"])
def test_paper_variants_train_end_to_end(tmp_path, preset):
    store, rows = build_dataset(tmp_path, n_train=4, n_validation=1, n_test=1, frames=(60, 80), seed=3)
    features = {
        "abaw2-lfan": ["fer-minixception", "vggish", "mfcc"],
        "jca": ["fer-minixception", "mfcc"],
        "abaw4-mtl": ["fer-minixception", "fer-minixception:logits"],
    }[preset]
    small = {"abaw4-mtl": {"model": {"config": AIM3_SMALL}, "warmup_epochs": 1}}.get(preset, {})
    config = paper_config(
        preset,
        features=features,
        epochs=2,
        min_epochs=1,
        batch_size=4,
        threads=1,
        folds={"k": 2 if preset == "abaw2-lfan" else 1},
        output_dir=str(tmp_path / "train"),
        eval_dir=str(tmp_path / "evaluate"),
        **small,
    )
    summary = run_training(config, store, rows)
    assert all(fold["best_epoch"] >= 1 for fold in summary["folds"])
    if preset == "abaw4-mtl":
        assert set(summary["folds"][0]["task_best_epochs"]) == {
            t.value for t in (Task.VA, Task.EXPR, Task.AU)
        }
    if preset == "abaw2-lfan":
        assert summary["unlabelled_frames_deleted"] > 0
    if preset == "jca":  # a per-emotion checkpoint round trip
        written = run_prediction(config, store, rows, out_dir=tmp_path / "predictions")
        header = written[0].read_text().splitlines()[0].split(",")
        assert header[:4] == ["frame_index", "time", "valence", "arousal"]
