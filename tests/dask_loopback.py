"""A real Dask cluster on loopback for tests: ``dask scheduler`` and ``dask worker`` processes.

The processes are started from the venv's ``dask`` command with the repository on PYTHONPATH (the
package is not installed), every wait is bounded, and ``close`` always ends every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


def dask_command() -> str:
    """The ``dask`` CLI next to this interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("dask")
    return str(candidate) if candidate.exists() else "dask"


@dataclass
class LoopbackCluster:
    """A scheduler and its nanny-managed workers, each a process this test session started."""

    folder: Path
    address: str
    scheduler: subprocess.Popen
    nannies: list[subprocess.Popen] = field(default_factory=list)

    def worker_processes(self) -> list[psutil.Process]:
        """The worker processes proper (children of the ``dask worker`` nanny processes)."""
        return [p for p in self._children() if _is_dask_worker(p)]

    def _children(self) -> list[psutil.Process]:
        found = []
        for nanny in self.nannies:
            try:
                found.extend(psutil.Process(nanny.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return found

    def wait_for_workers(self, n_workers: int, timeout: float = START_TIMEOUT_S) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=timeout)

    def close(self) -> None:
        """SIGTERM every process (workers first), SIGKILL what is still alive after a bounded wait."""
        children = self._children()
        for proc in [*self.nannies, self.scheduler]:
            _terminate(proc)
        for child in children:
            if child.is_running():
                try:
                    child.wait(STOP_TIMEOUT_S)
                except psutil.TimeoutExpired:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass


def start_loopback_cluster(
    folder: Path, n_workers: int = 2, nthreads: int = 1, resources: dict[int, str] | None = None
) -> LoopbackCluster:
    """Start ``dask scheduler`` on a free loopback port and ``n_workers`` ``dask worker`` processes.

    ``resources`` maps a worker index to its ``--resources`` value (e.g. ``{1: "GPU=1"}``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    env = _env()
    scheduler = _spawn(
        [
            dask_command(),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        folder / "scheduler.log",
        env,
    )
    cluster = LoopbackCluster(folder=folder, address="", scheduler=scheduler)
    try:
        cluster.address = _wait_for_address(scheduler_file, scheduler)
        for index in range(n_workers):
            command = [
                dask_command(),
                "worker",
                cluster.address,
                "--nthreads",
                str(nthreads),
                "--nworkers",
                "1",
                "--name",
                f"loopback-{index}",
                "--no-dashboard",
                "--memory-limit",
                "0",
                "--local-directory",
                str(folder / f"worker-{index}"),
            ]
            if resources and index in resources:
                command += ["--resources", resources[index]]
            cluster.nannies.append(_spawn(command, folder / f"worker-{index}.log", env))
        cluster.wait_for_workers(n_workers)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _spawn(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _wait_for_address(scheduler_file: Path, scheduler: subprocess.Popen) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {scheduler.returncode}; see its log")
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.1)
    raise TimeoutError(f"dask scheduler wrote no {scheduler_file} within {START_TIMEOUT_S:.0f} s")


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


def _is_dask_worker(proc: psutil.Process) -> bool:
    # The nanny also starts multiprocessing's resource tracker; the worker is the spawned process.
    try:
        return any("spawn_main" in part for part in proc.cmdline())
    except psutil.Error:
        return False
