"""The few durable file operations the logs share (POSIX: a rename or a new file survives a
power loss only once its directory is fsynced; a truncation only once the file is)."""
from __future__ import annotations

import os


def fsync_dir(directory: str) -> None:
    """fsync ``directory`` itself, so the names created, renamed or removed in it are durable.
    Raises OSError."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def truncate_durably(path: str, size: int) -> None:
    """Cut the file at ``path`` to ``size`` bytes and fsync it.  Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
