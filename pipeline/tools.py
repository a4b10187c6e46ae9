"""Locating the external ``ffmpeg`` / ``ffprobe`` executables.

An environment variable wins over PATH so that a user (or CI) can pin a specific build without
touching PATH. Nothing is ever downloaded: a missing binary is a setup error the user must fix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from avpipe.pipeline.errors import AvpipeError

FFMPEG_ENV_VAR = "AVPIPE_FFMPEG"
FFPROBE_ENV_VAR = "AVPIPE_FFPROBE"

_INSTALL_HINT = (
    "install it with `apt-get install ffmpeg` (macOS: `brew install ffmpeg`), run the README's setup "
    "script, or point {env_var} at the executable"
)


def ffmpeg_binary() -> str:
    """Absolute path of the ffmpeg executable (``$AVPIPE_FFMPEG``, else PATH)."""
    return _locate("ffmpeg", FFMPEG_ENV_VAR)


def ffprobe_binary() -> str:
    """Absolute path of the ffprobe executable (``$AVPIPE_FFPROBE``, else PATH)."""
    return _locate("ffprobe", FFPROBE_ENV_VAR)


def _locate(name: str, env_var: str) -> str:
    override = os.environ.get(env_var, "").strip()
    if override:
        return _resolve_override(name, env_var, override)
    found = shutil.which(name)
    if found is None:
        hint = _INSTALL_HINT.format(env_var=env_var)
        raise AvpipeError(f"{name} binary not found on PATH and {env_var} is not set: {hint}")
    return str(Path(found).absolute())


def _resolve_override(name: str, env_var: str, override: str) -> str:
    # The variable may hold a path or a bare command name; accept both, but never fall back to
    # PATH silently: a wrong override is a mistake the user wants to hear about.
    candidate = Path(override).expanduser()
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate.absolute())
    found = shutil.which(override)
    if found is not None:
        return str(Path(found).absolute())
    hint = _INSTALL_HINT.format(env_var=env_var)
    raise AvpipeError(f"{name} binary missing: {env_var}={override!r} is not an executable file; {hint}")
