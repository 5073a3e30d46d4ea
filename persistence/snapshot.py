"""Snapshot files: the engine's state at one command seq, so a start replays only the journal
after it (issue 4; DESIGN §1).

One file per snapshot, ``<directory>/snapshot-<seq:020d>.snap``, little-endian::

    header, 32 bytes:  8s magic b"HFTGWSNP", u32 format version (FORMAT_VERSION), u32 part count,
                       u64 seq (the last command seq whose effect the parts hold),
                       u64 time written (ns since the epoch)
    per part:          u16 name length, name (UTF-8), u64 data length, u32 CRC32C(data), data
    trailer, 8 bytes:  u32 CRC32C of everything before it, u32 0

CRC32C is persistence.journal.crc32c (Castagnoli, RFC 3720).  A file is written under a
temporary name, fsynced, then the ``pre_commit`` hooks run (fsync of the files whose content
the snapshot assumes durable: the journal up to ``seq``, the message store, the event log),
then it is renamed into place and the directory fsynced; so a snapshot file that exists is
complete and everything it depends on is on disk.  A reader never trusts a file on its name
alone: ``load_latest`` verifies every CRC and falls back to the next older file.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Mapping

from persistence.files import fsync_dir
from persistence.journal import crc32c

log = logging.getLogger("hftgw.snapshot")

MAGIC = b"HFTGWSNP"
#: version of the file layout above (not of the parts: each part versions its own content)
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")
_PART_NAME = struct.Struct("<H")
_PART_DATA = struct.Struct("<QI")
_TRAILER = struct.Struct("<II")
_NAME_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
TEMP_SUFFIX = ".tmp"


class SnapshotError(ValueError):
    """A snapshot file is unusable.  Attributes: path (str), offset (int, byte offset of the
    problem in the file, -1 when it is not about one place), reason (str)."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(path, offset, reason)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        where = f" at byte offset {self.offset}" if self.offset >= 0 else ""
        return f"snapshot {self.path}{where}: {self.reason}"


def snapshot_name(seq: int) -> str:
    """The file name of the snapshot at command seq ``seq``."""
    return f"snapshot-{seq:020d}.snap"


def encode(seq: int, parts: Mapping[str, bytes | memoryview], time_ns: int | None = None) -> bytes:
    """The bytes of one snapshot file holding ``parts`` (name -> data) at command ``seq``.
    Raises ValueError for a name longer than 65535 UTF-8 bytes or a negative seq."""
    return b"".join(_pieces(seq, parts, time_ns))


def _pieces(seq: int, parts: Mapping[str, bytes | memoryview],
            time_ns: int | None) -> list[bytes | memoryview]:
    # the file as a list of pieces, the parts' data not copied: written on a thread, where a
    # copy of tens of MB would hold the GIL (and the event loop) for milliseconds
    if seq < 0:
        raise ValueError("seq must be >= 0")
    out: list[bytes | memoryview] = [_HEADER.pack(MAGIC, FORMAT_VERSION, len(parts), seq,
                                                  time.time_ns() if time_ns is None else time_ns)]
    crc = crc32c(out[0])
    for name, data in parts.items():
        raw = name.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise ValueError(f"part name too long: {name[:40]!r}...")
        head = _PART_NAME.pack(len(raw)) + raw + _PART_DATA.pack(len(data), crc32c(data))
        crc = crc32c(data, crc32c(head, crc))
        out += (head, data)
    out.append(_TRAILER.pack(crc, 0))
    return out


def decode(data: bytes | bytearray | memoryview, path: str = "<bytes>") -> tuple[int, int, dict[str, bytes]]:
    """(seq, time_ns, parts) of one snapshot file's bytes.  Raises SnapshotError naming ``path``
    and the offset for a bad magic, another format version, a truncated file, a CRC32C
    mismatch or trailing bytes."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n < _HEADER.size + _TRAILER.size:
        raise SnapshotError(path, n, f"truncated: {n} bytes, a snapshot has at least "
                                     f"{_HEADER.size + _TRAILER.size}")
    magic, version, count, seq, ts = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise SnapshotError(path, 0, f"not a snapshot file (magic {bytes(magic)!r})")
    if version != FORMAT_VERSION:
        raise SnapshotError(path, 8, f"format version {version}, this build reads {FORMAT_VERSION}")
    # the whole-file CRC first: a torn write is reported as such, not as a bad length field
    body = n - _TRAILER.size
    crc, zero = _TRAILER.unpack_from(view, body)
    if crc != crc32c(view[:body]) or zero != 0:
        raise SnapshotError(path, body, "CRC32C mismatch (truncated or damaged file)")
    off = _HEADER.size
    parts: dict[str, bytes] = {}
    for _ in range(count):
        if off + _PART_NAME.size > body:
            raise SnapshotError(path, off, "truncated in a part header")
        (ln,) = _PART_NAME.unpack_from(view, off)
        start = off
        off += _PART_NAME.size
        if off + ln + _PART_DATA.size > body:
            raise SnapshotError(path, start, "truncated in a part header")
        try:
            name = bytes(view[off:off + ln]).decode("utf-8")
        except UnicodeDecodeError:
            raise SnapshotError(path, off, "part name is not UTF-8") from None
        off += ln
        size, pcrc = _PART_DATA.unpack_from(view, off)
        off += _PART_DATA.size
        if off + size > body:
            raise SnapshotError(path, start, f"part {name!r} is truncated ({size} bytes announced)")
        payload = bytes(view[off:off + size])
        if crc32c(payload) != pcrc:
            raise SnapshotError(path, off, f"part {name!r}: CRC32C mismatch")
        if name in parts:
            raise SnapshotError(path, start, f"part {name!r} appears twice")
        parts[name] = payload
        off += size
    if off != body:
        raise SnapshotError(path, off, f"{body - off} unexpected bytes after the last part")
    return seq, ts, parts


def list_snapshots(directory: str) -> list[tuple[int, str]]:
    """(seq, path) of the snapshot files in ``directory`` by name, oldest first ([] when the
    directory does not exist).  Temporary files of unfinished writes are not listed."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _NAME_RE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    found.sort()
    return found


def write_snapshot(directory: str, seq: int, parts: Mapping[str, bytes | memoryview],
                   pre_commit: Iterable[Callable[[], None]] = ()) -> str:
    """Write the snapshot of ``parts`` (name -> bytes) at command ``seq`` durably and return its
    path.  Order: temp file, fsync, every ``pre_commit`` hook, rename into place, fsync of the
    directory.  An exception from the writing or from a hook leaves no snapshot file (the temp
    file is removed) and propagates (OSError, or whatever the hook raised)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, snapshot_name(seq))
    tmp = path + TEMP_SUFFIX
    pieces = _pieces(seq, parts, None)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        for hook in pre_commit:
            hook()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
    return path


def read_snapshot(path: str) -> tuple[int, dict[str, bytes]]:
    """(seq, parts) of one snapshot file.  Raises SnapshotError for unusable content (also when
    the seq in the file differs from its name), OSError when it cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    seq, _, parts = decode(data, path)
    m = _NAME_RE.match(os.path.basename(path))
    if m and int(m.group(1)) != seq:
        raise SnapshotError(path, 16, f"holds seq {seq}, its name says {int(m.group(1))}")
    return seq, parts


def load_latest(directory: str) -> tuple[int, dict[str, bytes], str] | None:
    """The newest usable snapshot in ``directory``: (seq, parts, path), or None when there is
    none.  A file that cannot be used (SnapshotError, OSError) is logged with its path and the
    reason (event ``snapshot.unusable``) and the next older one is tried."""
    for _seq, path in reversed(list_snapshots(directory)):
        try:
            got, parts = read_snapshot(path)
        except (SnapshotError, OSError) as exc:
            log.error("snapshot %s is unusable, trying an older one: %s", path, exc,
                      extra={"event": "snapshot.unusable", "path": path, "reason": str(exc)})
            continue
        return got, parts, path
    return None


def prune(directory: str, keep: int, remove_temp: bool = True) -> list[str]:
    """Remove all but the ``keep`` newest snapshot files, and with ``remove_temp`` the temp
    files left by a crash while writing (pass False while a write may be under way); returns
    the removed paths.  Raises ValueError for keep < 1."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    removed = []
    for _, path in list_snapshots(directory)[:-keep]:
        os.unlink(path)
        removed.append(path)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        names = []
    for name in names if remove_temp else ():
        if name.endswith(TEMP_SUFFIX) and _NAME_RE.match(name[:-len(TEMP_SUFFIX)]):
            path = os.path.join(directory, name)
            os.unlink(path)
            removed.append(path)
    if removed:
        fsync_dir(directory)
    return removed
