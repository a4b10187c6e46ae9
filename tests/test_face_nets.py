"""avpipe's MTCNN networks and NMS against facenet-pytorch's and torchvision's (tests only import those)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.faces.nets import load_mtcnn
from avpipe.pipeline.extractors.faces.nms import batched_nms
from tests.import_check import modules_imported_by


@pytest.fixture(scope="module")
def both_cascades() -> tuple[tuple[torch.nn.Module, ...], tuple[torch.nn.Module, ...]]:
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    return load_mtcnn(), tuple(net().eval() for net in (PNet, RNet, ONet))


@pytest.mark.parametrize(
    ("which", "shape"), [(0, (2, 3, 37, 53)), (0, (1, 3, 12, 12)), (1, (7, 3, 24, 24)), (2, (5, 3, 48, 48))]
)
def test_networks_give_facenet_pytorchs_outputs_bit_for_bit(both_cascades, which: int, shape) -> None:
    ours, theirs = (nets[which] for nets in both_cascades)
    batch = torch.randn(shape, generator=torch.Generator().manual_seed(which))
    with torch.inference_mode():
        mine, reference = ours(batch), theirs(batch)
    assert len(mine) == len(reference)
    for a, b in zip(mine, reference, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


def test_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    for name in ("pnet", "rnet", "onet"):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / f"{name}.pt")
    with pytest.raises(ExtractorError, match=r"MTCNN pnet weights from .*pnet\.pt"):
        load_mtcnn(tmp_path)
    (tmp_path / "pnet.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExtractorError, match=r"pnet\.pt"):
        load_mtcnn(tmp_path)


def random_boxes(rng: np.random.Generator, n: int, integer: bool) -> np.ndarray:
    corner = rng.uniform(0, 200, size=(n, 2))
    size = rng.uniform(1, 60, size=(n, 2))
    boxes = np.concatenate([corner, corner + size], axis=1)
    return (np.floor(boxes) if integer else boxes).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.5, 0.7])
@pytest.mark.parametrize("by_rows", [False, True], ids=["matrix", "rows"])
def test_batched_nms_keeps_what_torchvision_keeps(
    seed: int, threshold: float, by_rows: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.ops import batched_nms as reference

    if by_rows:  # the path for many boxes, forced here on few
        monkeypatch.setattr("avpipe.pipeline.extractors.faces.nms.MATRIX_MAX_BOXES", 0)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    boxes = torch.from_numpy(random_boxes(rng, n, integer=seed % 2 == 0))
    # Coarse scores make ties, which both must break the same way (lower index first).
    scores = torch.from_numpy(rng.integers(0, 20, size=n).astype(np.float32) / 20)
    groups = torch.from_numpy(rng.integers(0, 4, size=n))
    expected = reference(boxes, scores, groups, threshold)
    got = batched_nms(boxes, scores, groups, threshold)
    assert got.dtype == torch.int64
    assert got.tolist() == expected.tolist()


def test_batched_nms_edge_cases() -> None:
    empty = torch.zeros((0, 4))
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).tolist() == []
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [5, 5, 5, 5]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # Box 1 overlaps box 0 (IoU 0.68) in the same frame; box 2 equals box 0 but is in another frame;
    # the zero-area box 3 has IoU NaN with everything and is never suppressed nor suppresses.
    frames = torch.tensor([0, 0, 1, 0])
    assert batched_nms(boxes, scores, frames, 0.5).tolist() == [3, 0, 2]
    assert batched_nms(boxes, scores, frames, 0.7).tolist() == [3, 0, 1, 2]


def test_a_face_worker_does_not_import_torchvision_or_facenet_pytorch() -> None:
    code = "from avpipe.pipeline.extractors.faces.detect import MtcnnCascade\nMtcnnCascade('cpu')"
    assert modules_imported_by(code, ("torchvision", "facenet_pytorch")) == []
