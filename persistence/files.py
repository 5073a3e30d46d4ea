"""The few durable file operations the logs share (POSIX: a rename or a new file survives a
power loss only once its directory is fsynced; a truncation only once the file is)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar


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


@dataclass(slots=True)
class SyncPlan:
    """What a log's ``sync()`` would fdatasync, taken on the log's thread and run on another
    (a snapshot's writer), so that the event loop never waits for a write-back (issue 12).
    ``fds`` are duplicates (the log may close or roll its own meanwhile), ``dirs`` the
    directories to fsync; ``run`` may be called on any thread, then ``close``; ``on_synced``
    (on the log's thread, after a successful ``run``) lets the log forget what was synced."""

    fds: list[int] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    on_synced: Callable[[], None] = lambda: None

    def run(self) -> None:
        """fdatasync every fd, fsync every directory.  Raises OSError."""
        for fd in self.fds:
            os.fdatasync(fd)
        for d in self.dirs:
            fsync_dir(d)

    def close(self) -> None:
        """Close the duplicates (idempotent)."""
        while self.fds:
            os.close(self.fds.pop())


_Entry = TypeVar("_Entry", bound=tuple[Any, int])


def forget_synced(unsynced: list[_Entry], covered: list[_Entry]) -> None:
    """Close and drop the entries of ``unsynced`` (a log's ``(name, fd)`` of segments closed
    but not yet synced) that a completed SyncPlan ``covered``.  Entries are unique tuples,
    compared by identity: one removed meanwhile is skipped, an fd number since reused is not
    mistaken for it."""
    for entry in covered:
        for i, e in enumerate(unsynced):
            if e is entry:
                os.close(e[1])
                del unsynced[i]
                break


def dup_all(fds: list[int]) -> list[int]:
    """Duplicates of ``fds`` (all or none: raises OSError after closing those made)."""
    out: list[int] = []
    try:
        for fd in fds:
            out.append(os.dup(fd))
    except OSError:
        for fd in out:
            os.close(fd)
        raise
    return out
