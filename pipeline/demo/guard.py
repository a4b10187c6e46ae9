"""What the demo stage may do to ``demo.root``: replace only a previous demo build; when the dataset is
not the demo, build nothing and leave a marker (DVC needs the stage's output to exist).

Light on purpose (no OpenCV, no PyAV): the check runs before anything is generated.
"""

from __future__ import annotations

import json
from pathlib import Path

from avpipe.pipeline.config.demo import DemoConfig
from avpipe.pipeline.errors import ConfigError

MANIFEST_NAME = "demo.json"


def check_replaceable(root: Path) -> None:
    """Refuse to delete a directory that is not a previous demo build (e.g. a mistyped root)."""
    if root.exists() and (
        not root.is_dir() or (any(root.iterdir()) and not (root / MANIFEST_NAME).is_file())
    ):
        raise ConfigError(
            "demo.root", f"{root} exists and is not a demo dataset (no {MANIFEST_NAME}); not replacing it"
        )


def dataset_is_demo(cfg: DemoConfig, dataset_root: str) -> bool:
    return Path(cfg.root).resolve() == Path(dataset_root).resolve()


def mark_unused(cfg: DemoConfig, dataset_root: str) -> Path:
    """``demo.root`` as it is when it holds a demo build or marker already, else an empty folder with a
    ``demo.json`` saying why nothing was built (a later build replaces it)."""
    root = Path(cfg.root)
    check_replaceable(root)
    if (root / MANIFEST_NAME).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    marker = {
        "skipped": True,
        "reason": f"dataset.root is {dataset_root}, not the demo ({cfg.root}): no demo built",
    }
    (root / MANIFEST_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return root
