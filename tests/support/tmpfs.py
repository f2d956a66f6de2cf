"""A small tmpfs of a test's own, to fill up: mounting needs root (CI runs as root)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.unavailable import unavailable

FILL_CHUNK_BYTES = 64 * 1024


class SmallDisk:
    """A mounted tmpfs: fill it to the last byte, then free it or make it larger."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write until the filesystem refuses a single byte more."""
        with self.filler.open("ab", buffering=0) as out:
            for size in (FILL_CHUNK_BYTES, 1):
                while True:
                    try:
                        out.write(b"\0" * size)
                    except OSError as error:
                        assert error.errno == errno.ENOSPC, error
                        break

    def free(self) -> None:
        self.filler.unlink()

    def grow(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 4 MiB tmpfs, unmounted at teardown."""
    path = tmp_path / "small-disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        unavailable("a tmpfs mount", f"uid {os.getuid()}: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)
