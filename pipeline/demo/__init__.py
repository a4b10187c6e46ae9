"""The built-in synthetic demo dataset: animated real faces, speech-like audio, Aff-Wild2 layout.

``DemoConfig`` is light to import (config validation needs it); ``build_demo_dataset`` pulls in
OpenCV, SciPy and PyAV, so it is imported on first use.
"""

from __future__ import annotations

from typing import Any

from avpipe.pipeline.config.demo import DemoConfig

__all__ = ["DemoConfig", "build_demo_dataset"]


def __getattr__(name: str) -> Any:
    if name == "build_demo_dataset":
        from avpipe.pipeline.demo.build import build_demo_dataset

        return build_demo_dataset
    raise AttributeError(f"module 'avpipe.pipeline.demo' has no attribute {name!r}")
