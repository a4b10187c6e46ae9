"""The maths of the seed systems against independent computations written here from the papers'
equations (numpy, float64, loops where that is clearer), on random inputs; and numbers quoted from
running the original code (sucv/ABAW2, praveena2j/JointCrossAttentional-AV-Fusion) on fixed examples.

Each reference is written without calling the code under test: parameters are read from the modules,
never their forward passes. Removing the tanh, the 1/sqrt(d) scaling or a residual of the joint
cross-attention, soft-maxing the wrong axis of the fusion block, or swapping a CCC divisor makes a test
here fail.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from avpipe.models.jca import JointCrossAttention
from avpipe.models.lfan import ModalityAttention
from avpipe.models.losses import MultiTaskLoss, ccc_loss
from avpipe.models.merge import merge_folds
from avpipe.models.metrics import ccc, task_metrics
from avpipe.models.tcn import Activation, DropoutKind, TCNBlockOptions, TCNInit, TemporalBlock
from avpipe.pipeline.config.train import (
    CCCReduction,
    LossConfig,
    MergeMethod,
    Moments,
    MSEReduction,
    Task,
    VALoss,
)
from avpipe.pipeline.labels import FrameLabels

RNG = np.random.default_rng(1234)

# -- fixed examples run through the original code (values printed by it, float64) ------------------
# sucv/ABAW2 base/loss_function.py:5-23 CCCLoss()(gold, pred) on windows of shape (3, 6, 1)
PRED = [[0.1, -0.4, 0.7, 0.3, -0.9, 0.5], [0.2, 0.25, 0.1, -0.3, -0.2, 0.0], [0.9, 0.8, 0.6, 0.7, 0.5, 0.4]]
GOLD = [[0.2, -0.1, 0.6, 0.0, -0.7, 0.9], [-0.5, -0.4, 0.1, 0.3, 0.2, 0.1], [0.1, 0.3, 0.2, 0.5, 0.4, 0.6]]
ABAW2_CCC_LOSS = 1.0606425697490787
# praveena2j/JointCrossAttentional-AV-Fusion losses/CCC.py:7-39 CCC()(pred, gold), the same tensors
JCA_CCC_LOSS = 0.44997067432549787
# sucv/ABAW2 base/logger.py:109-233 ConcordanceCorrelationCoefficient(folds).centered_data averaged over
# folds (script/generate_test_result.py:60-62), then clipped (:86)
MERGE_FOLDS = [[0.3, 1.0, 0.1, -0.0], [-0.8, -0.1, -0.6, 0.9], [-0.8, -0.3, 0.2, -0.2]]
MERGE_AGREEMENT = [-0.09034254908041317, 0.021188556705138598, 0.023079017333463334]
MERGE_UNCLIPPED = [0.4846656409098524, 1.1179989742431857, 0.8179989742431858, 1.1513323075765192]
# three folds inside [-1, 1] that avpipe's merge before issue 12 took to 1.1667 (no final clip)
OUT_OF_RANGE_FOLDS = [[-0.5, 0.9, -0.9, -0.6], [-0.4, -0.3, -0.1, -0.1], [0.6, 0.9, 0.8, 0.7]]
OUT_OF_RANGE_ABAW2 = [-0.9538647497192376, -0.35386474971923754, -0.9205314163859043, -0.8538647497192375]


# --------------------------------------------------------------------------- references


def ref_ccc(x: np.ndarray, y: np.ndarray, var_ddof: int = 0, cov_ddof: int = 0) -> float:
    """Lin's CCC: 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2), divisors n - ddof."""
    x, y = [float(a) for a in x], [float(b) for b in y]
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x) / (n - var_ddof)
    syy = sum((b - my) ** 2 for b in y) / (n - var_ddof)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / (n - cov_ddof)
    return 2 * sxy / (sxx + syy + (mx - my) ** 2)


def ref_ccc_loss(pred, gold, labeled, per_window: bool, var_ddof: int, cov_ddof: int) -> float:
    """Mean of 1 - CCC: per (window, dimension) over its labelled frames, or per dimension pooled."""
    losses = []
    for d in range(pred.shape[2]):
        if per_window:
            for b in range(pred.shape[0]):
                rows = np.flatnonzero(labeled[b])
                if len(rows) >= 2:
                    losses.append(1 - ref_ccc(pred[b, rows, d], gold[b, rows, d], var_ddof, cov_ddof))
        else:
            losses.append(1 - ref_ccc(pred[labeled][:, d], gold[labeled][:, d], var_ddof, cov_ddof))
    return float(np.mean(losses))


def ref_merge(folds: np.ndarray, original: bool) -> np.ndarray:
    """CCC centering of (K, T) fold predictions, then the clip to [-1, 1]."""
    k = folds.shape[0]
    agreement = np.zeros(k)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        # the original's pairwise CCC: population covariance, sample variances (logger.py:197-209)
        agreement[i] = np.mean([ref_ccc(folds[i], folds[j], 1 if original else 0, 0) for j in others])
    weights = agreement if original else np.maximum(agreement, 0.0)
    means = folds.mean(axis=1)
    centre = sum(w * m for w, m in zip(weights, means, strict=True)) / sum(weights)
    return np.clip(np.mean([folds[i] - means[i] + centre for i in range(k)], axis=0), -1, 1)


def numpy_params(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy().copy() for name, p in module.named_parameters()}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def ref_fusion(streams: list[np.ndarray], p: dict[str, np.ndarray], modal_dim: int) -> np.ndarray:
    """Zhang et al. eq. (attention across modalities at each time step), per frame with explicit loops:
    q_m = W_q h_m + b, k_m, v_m likewise; a_mn = softmax over n of q_m . k_n / sqrt(d);
    z_m = sum_n a_mn v_n + v_m; LayerNorm over all (m, c) of the frame; concatenated."""
    batch, length = streams[0].shape[:2]
    count = len(streams)
    out = np.zeros((batch, length, count * modal_dim))
    for b, t in itertools.product(range(batch), range(length)):
        q, k, v = (
            [p[f"{kind}.{m}.weight"] @ streams[m][b, t] + p[f"{kind}.{m}.bias"] for m in range(count)]
            for kind in ("query", "key", "value")
        )
        z = np.zeros((count, modal_dim))
        for m in range(count):
            a = softmax(np.array([q[m] @ k[n] / math.sqrt(modal_dim) for n in range(count)]))
            z[m] = sum(a[n] * v[n] for n in range(count)) + v[m]
        mu, var = z.mean(), z.var()
        z = (z - mu) / np.sqrt(var + 1e-5) * p["norm.weight"] + p["norm.bias"]
        out[b, t] = z.reshape(-1)
    return out


def ref_jca(audio: np.ndarray, visual: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Praveen et al. 2022, eqs. (1)-(6), per window: J = [X_a; X_v] (d x L);
    C_a = tanh(X_a (J W_ja)^T / sqrt(d)); H_a = ReLU(C_a W_ca + X_a W_a); X_att,a = H_a W_ha + X_a."""
    out = []
    for xa, xv in zip(audio, visual, strict=True):
        joint = np.concatenate([xa, xv], axis=0)
        d = joint.shape[0]
        attended = []
        for x, s in ((xa, "a"), (xv, "v")):
            c = np.tanh(x @ (joint @ p[f"joint_{s}.weight"].T).T / math.sqrt(d))  # (d_x, d)
            h = np.maximum(c @ p[f"corr_{s}.weight"].T + x @ p[f"own_{s}.weight"].T, 0.0)  # (d_x, k)
            attended.append(h @ p[f"back_{s}.weight"].T + x)  # (d_x, L)
        out.append(np.concatenate(attended, axis=0))
    return np.stack(out)


def ref_temporal_block(x: np.ndarray, p: dict[str, np.ndarray], k: int, dilation: int, causal: bool, act):
    """Bai et al.: y = act(res(x) + act(conv2(act(conv1(x))))) with weight norm w = g v / ||v|| and
    dilated convolutions y[o, t] = b[o] + sum_{i, j} w[o, i, j] x[i, t - (k - 1 - j) d] (zero padded;
    non-causal blocks shift by half the receptive field)."""

    def conv(x, prefix):
        g = p[f"{prefix}.parametrizations.weight.original0"]
        v = p[f"{prefix}.parametrizations.weight.original1"]
        bias = p[f"{prefix}.bias"]
        w = g * v / np.sqrt((v**2).sum(axis=(1, 2), keepdims=True))
        total = (k - 1) * dilation
        shift = 0 if causal else total - total // 2  # frames of look-ahead
        y = np.zeros((w.shape[0], x.shape[1]))
        for t in range(x.shape[1]):
            for j in range(k):
                source = t - (k - 1 - j) * dilation + shift
                if 0 <= source < x.shape[1]:
                    y[:, t] += w[:, :, j] @ x[:, source]
        return y + bias[:, None]

    hidden = act(conv(x, "conv1"))
    out = act(conv(hidden, "conv2"))
    residual = x
    if "downsample.weight" in p:
        residual = p["downsample.weight"][:, :, 0] @ x + p["downsample.bias"][:, None]
    return act(out + residual)


# --------------------------------------------------------------------------- CCC and the losses


def test_ccc_metric_matches_the_reference_on_random_inputs():
    for n in (2, 7, 300):
        x, y = RNG.normal(size=n), 0.5 * RNG.normal(size=n) + 0.2
        assert ccc(x, y) == pytest.approx(ref_ccc(x, y), abs=1e-12)


@pytest.mark.parametrize("reduction", list(CCCReduction))
@pytest.mark.parametrize(("variance", "covariance"), list(itertools.product(Moments, Moments)))
def test_ccc_losses_match_the_reference_on_random_masked_batches(reduction, variance, covariance):
    pred = RNG.uniform(-1, 1, (4, 9, 2))
    gold = np.clip(0.6 * pred + 0.4 * RNG.normal(size=pred.shape), -1, 1)
    labeled = RNG.random((4, 9)) < 0.7
    labeled[1, :] = False  # a window without labels
    labeled[2, 1:] = False  # a window with one labelled frame: skipped per window
    gold[~labeled] = -5.0
    got = ccc_loss(torch.tensor(pred), torch.tensor(gold), None, reduction, variance, covariance)
    expected = ref_ccc_loss(
        pred,
        gold,
        labeled,
        reduction is CCCReduction.PER_WINDOW,
        int(variance is Moments.SAMPLE),
        int(covariance is Moments.SAMPLE),
    )
    assert float(got) == pytest.approx(expected, abs=1e-7)


def test_ccc_losses_reproduce_the_original_code_on_a_fixed_batch():
    pred = torch.tensor(PRED, dtype=torch.float64)[..., None]
    gold = torch.tensor(GOLD, dtype=torch.float64)[..., None]
    abaw2 = ccc_loss(pred, gold, None, CCCReduction.PER_WINDOW, Moments.SAMPLE, Moments.POPULATION)
    jca = ccc_loss(pred, gold, None, CCCReduction.POOLED, Moments.SAMPLE, Moments.SAMPLE)
    assert float(abaw2) == pytest.approx(ABAW2_CCC_LOSS, abs=1e-12)
    assert float(jca) == pytest.approx(JCA_CCC_LOSS, abs=1e-8)  # the original adds its eps elsewhere
    assert abs(float(abaw2) - float(ccc_loss(pred, gold))) > 0.5  # pooled and per-window differ


def test_multitask_loss_applies_the_configured_va_loss_and_weights():
    pred = torch.tensor(RNG.uniform(-1, 1, (2, 6, 2)))
    gold = torch.tensor(RNG.uniform(-1, 1, (2, 6, 2)))
    config = LossConfig(weights={"va": 24.0}, va=VALoss.MSE)
    total, _ = MultiTaskLoss([Task.VA], config)({"va": pred}, {"va": gold})
    assert float(total) == pytest.approx(24.0 * float(((pred - gold) ** 2).mean()), abs=1e-12)
    masked = gold.clone()
    masked[0, :3] = -5.0
    aim3 = LossConfig(weights={"va": 24.0}, va=VALoss.MSE, mse=MSEReduction.ALL_POSITIONS)
    total, _ = MultiTaskLoss([Task.VA], aim3)({"va": pred}, {"va": masked})
    # AIM3: 12 mse(v * mask, t * mask) + 12 mse(a * mask, t * mask), each a mean over every position
    keep = (masked != -5.0).all(dim=-1, keepdim=True).double()
    per_dim = [(((pred[..., d] - masked[..., d]) * keep[..., 0]) ** 2).mean() for d in range(2)]
    assert float(total) == pytest.approx(float(12 * per_dim[0] + 12 * per_dim[1]), abs=1e-12)
    per_window = LossConfig(ccc=CCCReduction.PER_WINDOW, variance=Moments.SAMPLE)
    total, _ = MultiTaskLoss([Task.VA], per_window)({"va": pred}, {"va": gold})
    expected = ref_ccc_loss(pred.numpy(), gold.numpy(), np.ones((2, 6), bool), True, 1, 0)
    assert float(total) == pytest.approx(expected, abs=1e-7)  # the loss adds 1e-8 to the denominator


# --------------------------------------------------------------------------- the merge


@pytest.mark.parametrize("method", list(MergeMethod))
def test_merge_matches_the_reference_on_random_folds(method):
    for _ in range(5):
        folds = np.clip(RNG.normal(0.2, 0.4, (1, 50)) + RNG.normal(0, 0.3, (6, 50)), -1, 1)
        merged = merge_folds([{"va": np.stack([f, -f], axis=1)} for f in folds], method)["va"]
        original = method is MergeMethod.ABAW2
        np.testing.assert_allclose(merged[:, 0], ref_merge(folds, original), atol=1e-12)
        np.testing.assert_allclose(merged[:, 1], ref_merge(-folds, original), atol=1e-12)


def test_abaw2_merge_reproduces_the_original_code():
    folds = np.array(MERGE_FOLDS)
    merged = merge_folds([{"va": np.stack([f, f], axis=1)} for f in folds], MergeMethod.ABAW2)["va"][:, 0]
    np.testing.assert_allclose(merged, np.clip(MERGE_UNCLIPPED, -1, 1), atol=1e-12)
    assert merged.max() == 1.0  # the original's final clip acted
    agreement = [np.mean([ref_ccc(folds[i], folds[j], 1, 0) for j in range(3) if j != i]) for i in range(3)]
    np.testing.assert_allclose(agreement, MERGE_AGREEMENT, atol=1e-12)  # a negative agreement is kept
    out_of_range = np.array(OUT_OF_RANGE_FOLDS)
    both = merge_folds([{"va": np.stack([f, f], axis=1)} for f in out_of_range], MergeMethod.ABAW2)["va"]
    np.testing.assert_allclose(both[:, 0], OUT_OF_RANGE_ABAW2, atol=1e-12)


def test_every_merge_stays_in_the_label_range():
    folds = np.array(OUT_OF_RANGE_FOLDS)
    for method in MergeMethod:
        merged = merge_folds([{"va": np.stack([f, f], axis=1)} for f in folds], method)["va"]
        assert merged.min() >= -1.0 and merged.max() <= 1.0
    clipped = merge_folds([{"va": np.stack([f, f], axis=1)} for f in folds], MergeMethod.CLIPPED)["va"]
    assert clipped[1, 0] == 1.0  # 1.1667 before the clip


# --------------------------------------------------------------------------- fusion blocks


def randomise(module: torch.nn.Module, scale: float = 0.5) -> None:
    """Random float64 parameters (LayerNorm's affine included), so no term can hide behind an init."""
    module.double()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))


def test_leader_follower_fusion_block_matches_the_reference():
    dims, modal_dim = [12, 5, 7], 4
    block = ModalityAttention(dims, modal_dim)
    randomise(block)
    streams = [RNG.normal(size=(2, 5, d)) for d in dims]
    got = block([torch.tensor(s) for s in streams]).detach().numpy()
    np.testing.assert_allclose(got, ref_fusion(streams, numpy_params(block), modal_dim), atol=1e-10)


def test_joint_cross_attention_matches_the_reference():
    d_a, d_v, length, k = 6, 10, 8, 4
    block = JointCrossAttention(d_a, d_v, length, k)
    randomise(block)
    audio, visual = RNG.normal(size=(3, d_a, length)), 2.0 * RNG.normal(size=(3, d_v, length))
    got = block(torch.tensor(audio), torch.tensor(visual)).detach().numpy()
    expected = ref_jca(audio, visual, numpy_params(block))
    assert np.abs(expected).max() > 1.0  # large enough for tanh and the scaling to matter
    np.testing.assert_allclose(got, expected, atol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("activation", list(Activation))
def test_temporal_block_matches_the_reference(causal, activation):
    k, dilation = 3, 2
    options = TCNBlockOptions(activation=activation)
    for c_in, c_out in ((4, 5), (5, 5)):
        block = TemporalBlock(c_in, c_out, k, dilation, dropout=0.3, causal=causal, options=options).eval()
        randomise(block)
        x = RNG.normal(size=(2, c_in, 11))
        got = block(torch.tensor(x)).detach().numpy()
        slope = 0.01 if activation is Activation.LEAKY_RELU else 0.0

        def act(z: np.ndarray, slope: float = slope) -> np.ndarray:
            return np.where(z > 0, z, slope * z)

        p = numpy_params(block)
        for b in range(2):
            expected = ref_temporal_block(x[b], p, k, dilation, causal, act)
            np.testing.assert_allclose(got[b], expected, atol=1e-10)


def test_channel_dropout_zeroes_whole_channels_and_abaw2_init_is_the_effective_original():
    torch.manual_seed(0)
    channel = TCNBlockOptions(dropout_kind=DropoutKind.CHANNEL)
    block = TemporalBlock(3, 16, 3, 1, dropout=0.5, causal=True, options=channel)
    seen = []
    block.dropout.register_forward_hook(lambda module, args, out: seen.append(out.detach()))
    block.train()(torch.rand(4, 3, 20) + 1.0)
    zero_rows = (seen[0] == 0).all(dim=-1)
    assert zero_rows.any() and not ((seen[0] == 0).any(dim=-1) & ~zero_rows).any()  # whole channels
    normal = TemporalBlock(64, 64, 5, 1, 0.0, True, TCNBlockOptions(init=TCNInit.NORMAL))
    abaw2 = TemporalBlock(64, 32, 5, 1, 0.0, True, TCNBlockOptions(init=TCNInit.ABAW2))
    assert float(normal.conv1.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    bound = 1 / math.sqrt(64 * 5)  # torch's default conv init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    weights = abaw2.conv1.weight.detach()
    assert float(weights.abs().max()) <= bound and float(weights.std()) > 0.5 * bound / math.sqrt(3)
    xavier = math.sqrt(2.0) * math.sqrt(6 / (64 + 32))
    assert 0.9 * xavier < float(abaw2.downsample.weight.detach().abs().max()) <= xavier


# --------------------------------------------------------------------------- the MTL score


def ref_macro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    scores = []
    for c in sorted(set(predicted.tolist()) | set(truth.tolist())):
        tp = np.sum((predicted == c) & (truth == c))
        fp, fn = np.sum((predicted == c) & (truth != c)), np.sum((predicted != c) & (truth == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_mtl_score_matches_the_challenge_definition():
    n = 400
    labels = FrameLabels.unlabeled(n)
    labels.valence_arousal[:] = RNG.uniform(-1, 1, (n, 2))
    labels.valence_arousal[:20] = -5.0
    labels.expression[:] = RNG.integers(0, 8, n)
    labels.expression[-30:] = -1
    labels.action_units[:] = RNG.integers(0, 2, (n, 12))
    labels.action_units[:10, :6] = -1
    va = np.clip(labels.valence_arousal + RNG.normal(0, 0.4, (n, 2)), -1, 1)
    expr = RNG.dirichlet(np.ones(8), n)
    au = RNG.uniform(0, 1, (n, 12))
    metrics = task_metrics({"va": va, "expr": expr, "au": au}, labels)
    rows = slice(20, None)
    truth = labels.valence_arousal[rows]
    ccc_mean = (ref_ccc(va[rows, 0], truth[:, 0]) + ref_ccc(va[rows, 1], truth[:, 1])) / 2
    f1_expr = ref_macro_f1(expr[:-30].argmax(axis=1), labels.expression[:-30])
    au_f1 = []
    for unit in range(12):  # binary F1 of the positive class of each AU, on its labelled frames
        keep = labels.action_units[:, unit] != -1
        au_f1.append(_binary_f1(au[keep, unit] >= 0.5, labels.action_units[keep, unit] == 1))
    expected = ccc_mean + f1_expr + float(np.mean(au_f1))
    assert metrics["mtl_score"] == pytest.approx(expected, abs=1e-10)


def _binary_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum(predicted & truth)
    return float(2 * tp / (np.sum(predicted) + np.sum(truth)))
