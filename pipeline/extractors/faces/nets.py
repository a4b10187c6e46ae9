"""The three MTCNN networks (Zhang et al. 2016), laid out to take facenet-pytorch's weight files.

Built here rather than imported from facenet-pytorch so that a face worker does not import
torchvision (facenet-pytorch's package import pulls it in: about 2 s per worker start). Layer names
and shapes follow the weight files; ``load_state_dict`` is strict, so a file that does not fit fails
loudly. The arithmetic is the same layers in the same order, hence the same outputs
(tests/test_faces.py compares them with facenet-pytorch's own networks).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.faces.weights import MTCNN_WEIGHT_FILES, NOT_INSTALLED, mtcnn_weights_folder

# (name, in, out, kernel) of each conv, each followed by a PReLU; a pool after the conv when given as
# (kernel, stride). The fully connected layer after the flatten (R/O-net) follows the convs.
_Conv = tuple[str, int, int, int, tuple[int, int] | None]


class _Cascade(nn.Module):
    """Conv + PReLU (+ max-pool) layers, then an optional dense + PReLU layer, then linear heads."""

    def __init__(self, convs: list[_Conv], dense: tuple[str, int, int] | None, heads: dict[str, int]):
        super().__init__()
        self.order: list[tuple[str, str, str | None]] = []
        for index, (name, c_in, c_out, kernel, pool) in enumerate(convs, start=1):
            self.add_module(name, nn.Conv2d(c_in, c_out, kernel_size=kernel))
            self.add_module(f"prelu{index}", nn.PReLU(c_out))
            pool_name = f"pool{index}" if pool is not None else None
            if pool is not None:
                self.add_module(pool_name, nn.MaxPool2d(pool[0], pool[1], ceil_mode=True))
            self.order.append((name, f"prelu{index}", pool_name))
        self.dense = dense
        if dense is not None:
            name, d_in, d_out = dense
            self.add_module(name, nn.Linear(d_in, d_out))
            self.add_module(f"prelu{len(convs) + 1}", nn.PReLU(d_out))
        width = dense[2] if dense is not None else convs[-1][2]
        for name, size in heads.items():
            layer = nn.Linear(width, size) if dense is not None else nn.Conv2d(width, size, kernel_size=1)
            self.add_module(name, layer)
        self.heads = list(heads)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for conv, prelu, pool in self.order:
            x = getattr(self, prelu)(getattr(self, conv)(x))
            if pool is not None:
                x = getattr(self, pool)(x)
        if self.dense is not None:
            # The weights come from Caffe, which flattens width-major: (N, W, H, C) order.
            x = x.permute(0, 3, 2, 1).contiguous().flatten(1)
            x = getattr(self, f"prelu{len(self.order) + 1}")(getattr(self, self.dense[0])(x))
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.trunk(x)
        outputs = [getattr(self, name)(x) for name in self.heads]
        outputs[0] = torch.softmax(outputs[0], dim=1)  # the face / not-face head comes first
        return (*outputs[1:], outputs[0])


def pnet() -> _Cascade:
    """12-px proposal net, fully convolutional: (box offsets (N,4,h,w), face prob (N,2,h,w))."""
    convs = [("conv1", 3, 10, 3, (2, 2)), ("conv2", 10, 16, 3, None), ("conv3", 16, 32, 3, None)]
    return _Cascade(convs, None, {"conv4_1": 2, "conv4_2": 4})


def rnet() -> _Cascade:
    """24-px refinement net: (box offsets (N,4), face prob (N,2))."""
    convs = [("conv1", 3, 28, 3, (3, 2)), ("conv2", 28, 48, 3, (3, 2)), ("conv3", 48, 64, 2, None)]
    return _Cascade(convs, ("dense4", 576, 128), {"dense5_1": 2, "dense5_2": 4})


def onet() -> _Cascade:
    """48-px output net: (box offsets (N,4), landmarks (N,10) as 5 x then 5 y, face prob (N,2))."""
    convs = [
        ("conv1", 3, 32, 3, (3, 2)),
        ("conv2", 32, 64, 3, (3, 2)),
        ("conv3", 64, 64, 3, (2, 2)),
        ("conv4", 64, 128, 2, None),
    ]
    return _Cascade(convs, ("dense5", 1152, 256), {"dense6_1": 2, "dense6_2": 4, "dense6_3": 10})


BUILDERS = {"pnet": pnet, "rnet": rnet, "onet": onet}


def load_mtcnn(folder: Path | None = None) -> tuple[nn.Module, nn.Module, nn.Module]:
    """P-, R- and O-net with the weights in ``folder`` (default: facenet-pytorch's), in eval mode."""
    folder = folder if folder is not None else mtcnn_weights_folder()
    if folder is None:
        raise ExtractorError(f"cannot load the MTCNN weights: {NOT_INSTALLED}")
    nets = []
    for name, build in BUILDERS.items():
        path = folder / MTCNN_WEIGHT_FILES[name]
        net = build()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
            # missing, unreadable, not a checkpoint, or not these layers
            raise ExtractorError(f"cannot load the MTCNN {name} weights from {path}: {err}") from err
        nets.append(net.eval())
    return nets[0], nets[1], nets[2]
