"""A small real file system for full-disk tests: tmpfs mounted for the test, unmounted after.

Needs the right to mount (root, or CAP_SYS_ADMIN in a container); tests that cannot get one skip
with the reason, and the fault-injecting tests of pipeline/diskguard.py cover the same code paths.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(folder: Path, size: str) -> str | None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exit {done.returncode}")


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size`` (e.g. ``1m``) for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    problem = _mount(folder, size)
    if problem is not None:
        pytest.skip(f"cannot mount a small tmpfs here ({problem})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def resize(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)
