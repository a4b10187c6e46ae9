"""The model registry and every model: shapes, heads, gradients, causality, masking, config errors."""

from __future__ import annotations

import pytest
import torch

from avpipe.models.base import InputSpec
from avpipe.models.jca import JointCrossAttention
from avpipe.models.registry import create_model, model_names
from avpipe.models.tcn import TemporalConvNet
from avpipe.pipeline.config.train import Modality, Task
from avpipe.pipeline.errors import ConfigError

INPUTS = [
    InputSpec("face", 10, Modality.VISUAL),
    InputSpec("face:logits", 7, Modality.VISUAL),
    InputSpec("mfcc", 6, Modality.AUDIO),
    InputSpec("vggish", 9, Modality.AUDIO),
]
ALL_TASKS = [Task.VA, Task.EXPR, Task.AU]
SMALL = {
    "tcn": {"channels": [8, 8]},
    "lfan": {"visual_channels": [8, 8], "audio_channels": [8, 8], "modal_dim": 4},
    "jca": {"encoder_dim": 8, "attention_dim": 4, "head_hidden": 8},
    "rnn": {"hidden": 8, "layers": 2},
    "transformer": {"d_model": 8, "heads": 2, "layers": 1, "feedforward": 16},
    "aim3": {
        "hidden": 8,
        "heads": 2,
        "task_layers": 1,
        "task_head_dim": 4,
        "feedforward": 16,
        "head_layers": [8],
    },
}
WINDOW = 24


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def batch(batch_size: int = 3, length: int = WINDOW) -> dict[str, torch.Tensor]:
    return {spec.key: torch.randn(batch_size, length, spec.dim) for spec in INPUTS}


def build(name: str, tasks=ALL_TASKS, inputs=INPUTS, **overrides):
    return create_model(name, inputs=inputs, tasks=tasks, window=WINDOW, **{**SMALL[name], **overrides})


def test_registry_lists_the_models():
    assert model_names() == ["aim3", "jca", "lfan", "rnn", "tcn", "transformer"]


def test_aim3_feeds_detached_source_features_into_the_target_branch():
    model = build("aim3", feedback_sources=["v", "au"], feedback_targets=["a"]).eval()
    assert model.branches["a"].head.hidden[1].in_features == 8 + 2 * 8  # shared + v and au features
    inputs = batch()
    before = model(inputs)
    with torch.no_grad():
        model.branches["au"].head.hidden[1].weight.mul_(3.0)  # changes the au features only
    after = model(inputs)
    assert torch.allclose(before["va"][..., 0], after["va"][..., 0])  # valence has no feedback
    assert not torch.allclose(before["va"][..., 1], after["va"][..., 1])  # arousal reads au's features
    after["va"][..., 1].sum().backward()
    assert model.branches["au"].head.hidden[1].weight.grad is None  # detached: no gradient to the source
    with pytest.raises(ConfigError, match="feedback_sources"):
        build("aim3", tasks=[Task.VA], feedback_sources=["au"], feedback_targets=["a"])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_predicts_every_task_with_the_right_shapes(name):
    model = build(name)
    outputs = model(batch(), torch.ones(3, WINDOW, dtype=torch.bool))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "va": (3, WINDOW, 2),
        "expr": (3, WINDOW, 8),
        "au": (3, WINDOW, 12),
    }
    assert float(outputs["va"].detach().abs().max()) <= 1.0  # tanh head
    total = sum(v.sum() for v in outputs.values())
    total.backward()
    untouched = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not untouched, f"parameters without gradient: {untouched}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_models_predict_only_the_configured_tasks(name):
    outputs = build(name, tasks=[Task.AU])(batch())
    assert list(outputs) == ["au"]


def test_causal_tcn_does_not_look_ahead_and_non_causal_does():
    x = torch.randn(1, 40, 5)
    later = x.clone()
    later[:, 30:] += 3.0
    for causal, leaks in ((True, False), (False, True)):
        tcn = TemporalConvNet(5, [6, 6, 6], kernel_size=3, dropout=0.0, causal=causal).eval()
        before = tcn(x)[:, :30]
        after = tcn(later)[:, :30]
        assert bool(torch.any(torch.abs(before - after) > 1e-6)) is leaks


def test_transformer_ignores_padded_positions():
    model = build("transformer", tasks=[Task.VA], dropout=0.0).eval()
    x = batch(1)
    valid = torch.ones(1, WINDOW, dtype=torch.bool)
    valid[0, 16:] = False
    changed = {k: v.clone() for k, v in x.items()}
    for value in changed.values():
        value[0, 16:] = 50.0
    a = model(x, valid)["va"][0, :16]
    b = model(changed, valid)["va"][0, :16]
    torch.testing.assert_close(a, b)


def test_jca_shapes_with_unequal_modalities_and_its_window_check():
    block = JointCrossAttention(audio_dim=5, visual_dim=11, length=20, attention_dim=4)
    fused = block(torch.randn(2, 5, 20), torch.randn(2, 11, 20))
    assert fused.shape == (2, 16, 20)
    with pytest.raises(ValueError, match="windows of 20 frames"):
        block(torch.randn(2, 5, 19), torch.randn(2, 11, 19))


def test_lfan_followers_change_the_prediction():
    model = build("lfan", tasks=[Task.VA], dropout=0.0).eval()
    x = batch(1)
    louder = {**x, "mfcc": x["mfcc"] * 4.0}
    assert not torch.allclose(model(x)["va"], model(louder)["va"])


def test_feature_sizes_come_from_the_inputs():
    wide = [InputSpec("face", 300, Modality.VISUAL), InputSpec("mfcc", 2, Modality.AUDIO)]
    model = create_model("lfan", inputs=wide, tasks=[Task.VA], window=WINDOW, **SMALL["lfan"])
    out = model({"face": torch.randn(2, WINDOW, 300), "mfcc": torch.randn(2, WINDOW, 2)})
    assert out["va"].shape == (2, WINDOW, 2)


@pytest.mark.parametrize(
    ("name", "config", "inputs", "key"),
    [
        ("nope", {}, INPUTS, "train.model.name"),
        ("tcn", {"bogus": 1}, INPUTS, "train.model.config.bogus"),
        ("tcn", {"channels": []}, INPUTS, "train.model.config.channels"),
        ("rnn", {"cell": "elman"}, INPUTS, "train.model.config.cell"),
        ("transformer", {"d_model": 10, "heads": 4}, INPUTS, "train.model.config.heads"),
        ("lfan", {}, [InputSpec("mfcc", 6, Modality.AUDIO)], "train.features"),
        ("jca", {}, [InputSpec("face", 6, Modality.VISUAL)], "train.features"),
    ],
)
def test_bad_model_settings_name_the_key(name, config, inputs, key):
    with pytest.raises(ConfigError) as info:
        create_model(name, inputs=inputs, tasks=[Task.VA], window=WINDOW, **config)
    assert info.value.key == key
