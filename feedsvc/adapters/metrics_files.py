"""Prometheus multiprocess files that a full filesystem can never turn into a crash.

prometheus_client grows each process's mmap'd file with ftruncate: on a full filesystem the file
gets a hole, and the first write into it kills the process with SIGBUS. Here the file's blocks
are allocated (posix_fallocate) before they are mapped, so a full filesystem is an OSError when a
new series is created; that series then counts in memory only and the process serves on.
The gunicorn master never creates such a file: worker exits are counted in a small plain file.
"""

import logging
import os
from pathlib import Path
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

log = logging.getLogger(__name__)

WORKER_EXITS_FILE = "worker_exits"
# Bytes of one entry of a key in prometheus_client's file format: length, padded key, two doubles.
_ENTRY_OVERHEAD = 4 + 16


class PreallocatedMmapedDict(MmapedDict):
    """prometheus_client's file, with every byte it maps allocated on disk first."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode and not os.path.exists(filename):
            _create_allocated(filename, _INITIAL_MMAP_SIZE)
        super().__init__(filename, read_mode)

    def _init_value(self, key: str) -> None:
        encoded = len(key.encode("utf-8"))
        needed = self._used + encoded + (8 - (encoded + 4) % 8) + _ENTRY_OVERHEAD
        capacity = self._capacity
        while needed > capacity:
            capacity *= 2
        if capacity > self._capacity:
            # Raises OSError (ENOSPC) and changes nothing when the filesystem is full.
            os.posix_fallocate(self._f.fileno(), 0, capacity)
        super()._init_value(key)


def _create_allocated(filename: str, size: int) -> None:
    """The file appears whole or not at all: a reader never sees it empty or short."""
    partial = f"{filename}.{os.getpid()}.partial"
    descriptor = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(descriptor, 0, size)
        os.replace(partial, filename)
    except OSError:
        os.unlink(partial)
        raise
    finally:
        os.close(descriptor)


class _SafeValueClass:
    """Builds multiprocess values; a series whose file cannot grow counts in memory instead."""

    def __init__(self, multiprocess_class: Any) -> None:
        self._multiprocess_class = multiprocess_class
        self._warned = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._multiprocess_class(*args, **kwargs)
        except OSError as error:
            if not self._warned:
                self._warned = True
                log.warning("metrics file cannot grow (%s): new series stay out of /metrics", error)
            return values.MutexValue(*args, **kwargs)


def make_metric_writes_safe() -> None:
    """Install the above in prometheus_client; call in each worker before any metric exists."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return  # one process, values in memory: no file to fill
    values.MmapedDict = PreallocatedMmapedDict
    values.ValueClass = _SafeValueClass(values.ValueClass)


class WorkerExits:
    """In the gunicorn master: counts worker exits in a plain file that /metrics reads.

    A failed write (a full disk) is logged and made good by the next one; it never kills the master.
    """

    def __init__(self, metrics_dir: Path) -> None:
        self._path = metrics_dir / WORKER_EXITS_FILE
        self._count = 0

    def record(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self._path.parent))
        self._count += 1
        partial = self._path.with_suffix(".partial")
        try:
            partial.write_text(str(self._count))
            os.replace(partial, self._path)
        except OSError as error:
            log.warning("cannot save the worker exit count (%s); the next exit will", error)
            partial.unlink(missing_ok=True)


def worker_exits(metrics_dir: Path) -> int:
    """What the master saved; 0 before any exit (or while its file cannot be read)."""
    try:
        return int((metrics_dir / WORKER_EXITS_FILE).read_text())
    except (OSError, ValueError):
        return 0
