"""Packaging: the repository's top-level folders install as sub-packages of ``avpipe``.

``pipeline/`` -> ``avpipe.pipeline``, ``models/`` -> ``avpipe.models``, ``stages/`` -> ``avpipe.stages``;
nothing is installed under the bare names, so they never shadow a user's own ``pipeline`` or ``models``.
Metadata and dependencies are in setup.cfg.
"""

from setuptools import find_packages, setup

FOLDERS = ("pipeline", "models", "stages")

packages = ["avpipe"] + [
    f"avpipe.{name}" for name in find_packages(include=[f"{folder}*" for folder in FOLDERS])
]
setup(
    packages=packages,
    package_dir={"avpipe": "avpipe", **{f"avpipe.{folder}": folder for folder in FOLDERS}},
)
