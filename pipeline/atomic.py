"""Atomic file replacement for reports, QA sheets and CSVs: a private temp file, then a rename.

The temp name carries the pid and a random part, so any number of writers (threads, processes,
concurrent runs) can replace the same file: each rename installs one complete version and none
finds its temp file taken by another. A disk error (full, quota, I/O) becomes ``OutputWriteError``
naming the file, with no temp file left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from avpipe.pipeline.errors import AvpipeError

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


class OutputWriteError(AvpipeError):
    """A report, QA sheet or other output file that the disk refused."""

    def __init__(self, path: str | Path, err: OSError) -> None:
        self.path = str(path)
        self.errno = err.errno
        super().__init__(f"{self.path}: cannot write: {err.strerror or err} (the previous version is kept)")


def temp_path(path: Path) -> Path:
    """``.<name>.<pid>.<random>.tmp`` next to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a unique temp path to write; on success it replaces ``path`` (fsynced), else it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in STORAGE_ERRNOS:
            raise OutputWriteError(path, err) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))
