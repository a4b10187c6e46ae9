"""One input's per-frame features as a row-major file on disk, read a window at a time.

Used by FrameTable when the features do not fit in memory (``train.table_cache``): rows are appended
video by video while the store is read, then windows are gathered with one positioned read (``pread``)
per window, because a window's rows are consecutive in the file. Nothing is memory-mapped, so the
process's resident memory stays at one batch whatever the file size (the kernel's page cache, which is
not counted against the process and is given back under pressure, keeps hot rows fast).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class RowFile:
    """(n_rows, dim) array of ``dtype`` stored row-major in ``path``; supports ``values[rows]``."""

    def __init__(self, path: Path, dim: int, dtype: np.dtype) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.dim * self.dtype.itemsize
        self.n_rows = 0
        self._writer = open(self.path, "wb")  # noqa: SIM115 - closed by finish()
        self._fd: int | None = None

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype).reshape(-1, self.dim)
        self._writer.write(block.tobytes())
        self.n_rows += block.shape[0]

    def finish(self) -> RowFile:
        """Close for writing and open for reading."""
        self._writer.close()
        self._fd = os.open(self.path, os.O_RDONLY)
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.dim)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a new array."""
        out = np.empty((max(0, stop - start), self.dim), dtype=self.dtype)
        self._read_into(out, start)
        return out

    def _read_into(self, out: np.ndarray, start: int) -> None:
        """Fill ``out`` (rows x dim, contiguous) with the rows from ``start``, straight from the file."""
        assert self._fd is not None, "RowFile.finish() first"
        wanted = out.shape[0] * self.row_bytes
        done = os.preadv(self._fd, [memoryview(out).cast("B")], start * self.row_bytes) if wanted else 0
        if done != wanted:
            raise OSError(
                f"{self.path}: short read of rows {start}..{start + out.shape[0]} (file truncated?)"
            )

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """``values[rows]`` for an integer array of any shape: one read per run of consecutive rows."""
        rows = np.asarray(rows)
        if rows.dtype == bool:  # a row mask, as numpy reads it
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False)
        flat = rows.reshape(-1)
        out = np.empty((flat.shape[0], self.dim), dtype=self.dtype)
        if flat.size:
            breaks = np.flatnonzero(np.diff(flat) != 1) + 1
            starts = np.concatenate([[0], breaks])
            stops = np.concatenate([breaks, [flat.size]])
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                self._read_into(out[a:b], int(flat[a]))
        return out.reshape(*rows.shape, self.dim)
