"""Fault battery, trust boundaries: hostile checkpoints never run, sockets stay on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from avpipe.cli import main
from avpipe.pipeline.errors import ExtractorError
from avpipe.pipeline.extractors.audio import vggish_net

pytestmark = pytest.mark.timeout(120)


class _Payload:
    """Unpickling this calls os.mkdir(marker): proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _hostile(path: Path, marker: Path, extra: dict | None = None) -> Path:
    torch.save({"features.0.weight": torch.zeros(2), "evil": _Payload(marker), **(extra or {})}, path)
    return path


def test_hostile_vggish_checkpoint_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    file = _hostile(tmp_path / "vggish.pth", marker)
    with pytest.raises(ExtractorError, match="convert-checkpoint --trust-pickle"):
        vggish_net.load_vggish(str(file))
    assert not marker.exists()


def test_hostile_pca_params_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    file = _hostile(tmp_path / "pca.pth", marker, {"pca_means": np.zeros(128, np.float32)})
    with pytest.raises(ExtractorError, match="needs full unpickling"):
        vggish_net.load_pca(str(file), quantize=False)
    assert not marker.exists()


def test_numpy_release_files_still_load_safely(tmp_path: Path) -> None:
    vectors = np.eye(128, dtype=np.float32)[::-1].copy()
    torch.save({"pca_eigen_vectors": vectors, "pca_means": np.arange(128.0)}, tmp_path / "pca.pth")
    pca = vggish_net.load_pca(str(tmp_path / "pca.pth"), quantize=False)
    assert np.array_equal(pca.eigen_vectors.numpy(), vectors)
    assert np.array_equal(pca.means.numpy().ravel(), np.arange(128.0, dtype=np.float32))


def test_convert_checkpoint_needs_trust_and_writes_a_safe_file(tmp_path: Path) -> None:
    from avpipe.pipeline.checkpoints import CheckpointError, load_weights

    legacy = tmp_path / "legacy.pth"
    module = torch.nn.Linear(3, 2)
    torch.save(module, legacy)  # a whole pickled module: the weights-only loader refuses it
    with pytest.raises(CheckpointError):
        load_weights(legacy, "checkpoint")
    out = tmp_path / "converted.pth"
    assert main(["convert-checkpoint", str(legacy), str(out)]) == 2  # refused without --trust-pickle
    assert not out.exists()
    assert main(["convert-checkpoint", "--trust-pickle", str(legacy), str(out)]) == 0
    state = torch.load(out, weights_only=True)
    assert torch.equal(state["weight"], module.weight.detach())
    assert torch.equal(state["bias"], module.bias.detach())
    assert main(["convert-checkpoint", "--trust-pickle", str(legacy), str(out)]) == 2  # never overwrites


def test_convert_checkpoint_turns_numpy_arrays_into_tensors(tmp_path: Path) -> None:
    from avpipe.pipeline.checkpoints import convert_checkpoint

    torch.save({"pca_means": np.arange(4.0)}, tmp_path / "pca.pth")
    done = convert_checkpoint(tmp_path / "pca.pth", tmp_path / "out.pth")
    assert not done.full_unpickling and done.tensors == 1
    assert torch.equal(
        torch.load(tmp_path / "out.pth", weights_only=True)["pca_means"], torch.arange(4.0).double()
    )


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    import psutil

    return [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def test_local_cluster_listens_on_loopback_only() -> None:
    import psutil

    from avpipe.pipeline.config import RunnerConfig
    from avpipe.pipeline.runner import open_client

    with open_client(RunnerConfig(n_workers=1, device="cpu")) as client:
        me = psutil.Process()
        pids = {me.pid, *(child.pid for child in me.children(recursive=True))}
        sockets = _listening(pids)
        dashboard_port = int(client.dashboard_link.split(":")[2].split("/")[0])
    assert dashboard_port in {port for _, _, port in sockets}
    exposed = [s for s in sockets if s[1] not in ("127.0.0.1", "::1")]
    assert not exposed, f"sockets listening beyond loopback: {exposed}"
