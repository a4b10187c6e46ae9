"""Which heavy modules a piece of code imports, run in a fresh interpreter (tests' helper)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def modules_imported_by(code: str, modules: tuple[str, ...]) -> list[str]:
    """The names in ``modules`` that are in ``sys.modules`` after running ``code`` in a new Python."""
    report = f"import sys\nprint(','.join(m for m in {modules!r} if m in sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", code + "\n" + report], capture_output=True, text=True, cwd=REPO, check=True
    )
    return [name for name in result.stdout.strip().split(",") if name]
