"""The maths: CCC and friends against direct formulas, the CCC loss gradient, masked losses, the merge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avpipe.models.losses import MultiTaskLoss, action_unit_loss, ccc_loss, ccc_torch, expression_loss
from avpipe.models.merge import ccc_centering, fold_agreement, merge_folds
from avpipe.models.metrics import au_mean_f1, ccc, macro_f1, mtl_score, pearson, rmse, task_metrics
from avpipe.pipeline.config.train import LossConfig, Task
from avpipe.pipeline.labels import FrameLabels

X = [0.1, -0.4, 0.7, 0.3, -0.9, 0.5]
Y = [0.2, -0.1, 0.6, 0.0, -0.7, 0.9]


def direct_ccc(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    vx = sum((a - mx) ** 2 for a in x) / n
    vy = sum((b - my) ** 2 for b in y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / n
    return 2 * cov / (vx + vy + (mx - my) ** 2)


def test_ccc_matches_the_direct_formula():
    assert ccc(np.array(X), np.array(Y)) == pytest.approx(direct_ccc(X, Y), abs=1e-12)
    shifted = [v + 0.5 for v in X]
    assert ccc(np.array(X), np.array(shifted)) == pytest.approx(direct_ccc(X, shifted), abs=1e-12)
    assert ccc(np.array(X), np.array(X)) == pytest.approx(1.0)
    centred = np.array(X) - np.mean(X)
    assert ccc(centred, -centred) == pytest.approx(-1.0)
    assert ccc(np.array(X), np.array(shifted)) < pearson(np.array(X), np.array(shifted))  # bias is penalised


def test_torch_ccc_agrees_with_numpy():
    value = ccc_torch(torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64))
    assert float(value) == pytest.approx(direct_ccc(X, Y), abs=1e-6)


def test_pearson_and_rmse():
    assert pearson(np.array(X), np.array(Y)) == pytest.approx(np.corrcoef(X, Y)[0, 1])
    expected = math.sqrt(sum((a - b) ** 2 for a, b in zip(X, Y, strict=True)) / len(X))
    assert rmse(np.array(X), np.array(Y)) == pytest.approx(expected)


def test_ccc_loss_gradient_points_towards_agreement():
    target = torch.tensor([X, Y], dtype=torch.float64).T[None]  # (1, 6, 2)
    biased = (target + 0.3).clone().requires_grad_(True)
    ccc_loss(biased, target).backward()
    # predictions too high on average: descending the gradient lowers them
    assert biased.grad.sum() > 0
    shrunk = (0.2 * target).clone().requires_grad_(True)
    ccc_loss(shrunk, target).backward()
    # predictions too flat: the gradient step (minus the gradient) correlates with the target
    step = -shrunk.grad[0]
    assert float((step * (target[0] - target[0].mean(0))).sum()) > 0
    before = float(ccc_loss(shrunk.detach(), target))
    after = float(ccc_loss(shrunk.detach() - 0.1 * shrunk.grad, target))
    assert after < before


def test_va_loss_ignores_unlabeled_frames():
    target = torch.tensor([[0.1, 0.2], [0.5, -0.3], [-5.0, -5.0], [0.7, 0.1], [-5.0, -5.0]])[None]
    prediction = torch.tensor([[0.0, 0.1], [0.4, -0.2], [0.9, 0.9], [0.6, 0.3], [-0.8, 0.4]])[None]
    prediction.requires_grad_(True)
    loss = ccc_loss(prediction, target)
    loss.backward()
    assert torch.all(prediction.grad[0, [2, 4]] == 0)
    changed = prediction.detach().clone()
    changed[0, [2, 4]] = torch.tensor([[-0.3, 0.2], [0.1, -0.9]])
    assert float(ccc_loss(changed, target)) == pytest.approx(float(loss.detach()))
    labeled = [0, 1, 3]
    direct = 1 - np.mean(
        [direct_ccc(prediction[0, labeled, d].tolist(), target[0, labeled, d].tolist()) for d in range(2)]
    )
    assert float(loss.detach()) == pytest.approx(direct, abs=1e-5)


def test_expression_and_au_losses_ignore_minus_one():
    logits = torch.randn(1, 4, 8, requires_grad=True)
    target = torch.tensor([[3, -1, 0, -1]])
    loss = expression_loss(logits, target)
    loss.backward()
    assert torch.all(logits.grad[0, [1, 3]] == 0) and torch.any(logits.grad[0, 0] != 0)
    expected = torch.nn.functional.cross_entropy(logits[0, [0, 2]], torch.tensor([3, 0]))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))

    au_logits = torch.randn(1, 3, 12, requires_grad=True)
    au_target = torch.full((1, 3, 12), -1.0)
    au_target[0, 0, :4] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    au_loss = action_unit_loss(au_logits, au_target)
    au_loss.backward()
    assert torch.count_nonzero(au_logits.grad) == 4
    expected = torch.nn.functional.binary_cross_entropy_with_logits(au_logits[0, 0, :4], au_target[0, 0, :4])
    assert float(au_loss.detach()) == pytest.approx(float(expected.detach()))


def test_multitask_loss_weights_tasks_and_survives_a_task_without_labels():
    outputs = {
        "va": torch.rand(1, 5, 2, requires_grad=True),
        "expr": torch.randn(1, 5, 8, requires_grad=True),
    }
    targets = {"va": torch.rand(1, 5, 2), "expr": torch.full((1, 5), -1)}
    loss_fn = MultiTaskLoss([Task.VA, Task.EXPR], LossConfig(weights={"va": 2.0, "expr": 1.0}))
    total, parts = loss_fn(outputs, targets)
    assert parts["expr"] == 0.0
    assert float(total.detach()) == pytest.approx(2.0 * parts["va"])
    total.backward()  # the unlabeled task keeps a gradient path


def test_f1_scores_on_hand_examples():
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 1, fp 1, fn 1 -> 1/2; class 2: tp 0, fn 1 -> 0
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2])) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    probabilities = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6], [0.3, 0.1]])
    target = np.array([[1, 0], [1, -1], [0, 1], [1, -1]])
    # AU 0: tp 2, fn 1 -> 0.8; AU 1 on rows 0, 2: tp 1 -> 1.0
    assert au_mean_f1(probabilities, target) == pytest.approx((0.8 + 1.0) / 2)


def test_task_metrics_and_mtl_score():
    labels = FrameLabels.unlabeled(6)
    labels.valence_arousal[:] = np.array([X, Y]).T
    labels.expression[:] = [0, 1, 1, 2, -1, 0]
    labels.action_units[:, 0] = [1, 0, 1, 0, 1, 0]
    predictions = {
        "va": np.array([Y, X]).T,
        "expr": np.eye(8)[[0, 1, 2, 2, 5, 0]],
        "au": np.tile(np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.1])[:, None], (1, 12)),
    }
    metrics = task_metrics(predictions, labels)
    assert metrics["ccc_valence"] == pytest.approx(direct_ccc(Y, X))
    assert metrics["n_frames_expr"] == 5
    assert metrics["f1_expr"] == pytest.approx(macro_f1(np.array([0, 1, 2, 2, 0]), np.array([0, 1, 1, 2, 0])))
    assert metrics["f1_au"] == pytest.approx(0.8)  # AU1 only: tp 2, fn 1
    expected = (metrics["ccc_valence"] + metrics["ccc_arousal"]) / 2 + metrics["f1_expr"] + metrics["f1_au"]
    assert metrics["mtl_score"] == pytest.approx(expected) == mtl_score(metrics)


def test_ccc_centering_on_a_hand_computed_example():
    folds = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 0.0, 1.0]])
    # means 1, 2, 1; variances 2/3 each.
    # CCC(f0, f1) = 2(2/3) / (4/3 + 1) = 4/7; CCC(f0, f2) = 2(-1/3) / (4/3) = -1/2;
    # CCC(f1, f2) = 2(-1/3) / (4/3 + 1) = -2/7
    agreement = fold_agreement(folds)
    np.testing.assert_allclose(agreement, [(4 / 7 - 1 / 2) / 2, (4 / 7 - 2 / 7) / 2, (-1 / 2 - 2 / 7) / 2])
    # weights (negative agreement -> 0): 1/28, 1/7, 0 -> centre = (1/28 * 1 + 1/7 * 2) / (5/28) = 9/5
    merged = ccc_centering(folds)
    centre = 9 / 5
    recentred = folds - folds.mean(axis=1, keepdims=True) + centre
    np.testing.assert_allclose(merged, recentred.mean(axis=0))
    # deviations from the means: f0, f1 = [-1, 0, 1], f2 = [1, -1, 0] -> mean [-1/3, -1/3, 2/3]
    np.testing.assert_allclose(merged, [centre - 1 / 3, centre - 1 / 3, centre + 2 / 3])


def test_merge_folds_centres_va_and_averages_probabilities():
    a = {"va": np.array([[0.0, 0.5], [0.2, 0.5], [0.4, 0.5]]), "expr": np.array([[1.0, 0.0]] * 3)}
    b = {"va": np.array([[0.1, 0.5], [0.3, 0.5], [0.5, 0.5]]), "expr": np.array([[0.0, 1.0]] * 3)}
    merged = merge_folds([a, b])
    np.testing.assert_allclose(merged["expr"], 0.5)
    # identical shapes agree fully (CCC < 1 only by the offset): equal weights, centre = mean of means
    np.testing.assert_allclose(merged["va"][:, 0], [0.05, 0.25, 0.45])
    np.testing.assert_allclose(merged["va"][:, 1], 0.5)
    single = merge_folds([a])
    np.testing.assert_allclose(single["va"], a["va"])
