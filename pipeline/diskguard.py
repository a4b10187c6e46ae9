"""A file that HDF5 writes through without ever seeing a write fail.

When a write fails inside the HDF5 library (disk full, quota, I/O error), the library keeps the file
half-open with a dirty cache: every later close retries the flush, and the process eventually crashes
(signal 11) on some unrelated file. ``GuardedFile`` is the file object h5py's ``fileobj`` driver
writes to instead: the first failing write is recorded, and that write and every later one are kept
in memory, so HDF5 sees a consistent file, finishes and closes cleanly. The caller checks ``failure``
(``raise_if_failed``) after each block and after closing, deletes the temp file and reports the error.
Memory stays small: the writer stops producing blocks at the first check after the failure, so only
HDF5's caches (metadata, one chunk cache per dataset) land in memory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path


class GuardedFile(io.RawIOBase):
    """An exclusive new file written with ``pwrite``; errors are deferred to ``raise_if_failed``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self._pos = 0
        self.failure: OSError | None = None
        self._overlay: dict[int, bytes] = {}  # offset -> bytes written after the failure

    # ---- io.RawIOBase

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size() + offset
        return self._pos

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self.failure is None:
            try:
                done = 0
                while done < size:
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as err:
                # A new exception: ``err``'s traceback holds frames whose locals view HDF5's own buffers.
                self.failure = OSError(err.errno, err.strerror, str(self.path))
        if self.failure is not None:
            self._overlay[self._pos] = bytes(view)
        self._pos += size
        return size

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        size = len(view)
        try:
            got = os.preadv(self._fd, [view], self._pos)
        except OSError:
            got = 0
        view[got:] = bytes(size - got)  # past the end (or unreadable): zeros, as HDF5 expects
        for offset, data in self._overlay.items():
            low, high = max(offset, self._pos), min(offset + len(data), self._pos + size)
            if low < high:
                view[low - self._pos : high - self._pos] = data[low - offset : high - offset]
        self._pos += size
        return size

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.failure is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                self.failure = OSError(err.errno, err.strerror, str(self.path))
        return size

    def flush(self) -> None:
        pass  # pwrite goes straight to the kernel; durability is ``sync``'s job

    def close(self) -> None:
        """fsync (a failure is recorded like any write's), then close; ``failure`` stays readable."""
        if not self.closed:
            self.sync()
            os.close(self._fd)
        super().close()

    # ---- ours

    def sync(self) -> None:
        """fsync, recording a failure like any write."""
        if self.failure is None:
            try:
                os.fsync(self._fd)
            except OSError as err:
                self.failure = OSError(err.errno, err.strerror, str(self.path))

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise OSError(self.failure.errno, self.failure.strerror, str(self.path))

    def _size(self) -> int:
        written = max((offset + len(data) for offset, data in self._overlay.items()), default=0)
        return max(os.fstat(self._fd).st_size, written)
