# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""hftgw protocol codec (schema version 2): FIX Simple Binary Encoding 1.0 framed by SOFH (DESIGN §2).

The schema is ``protocol/schema/hftgw-v1.xml``; the C layout of every block is in ``codec.pxd``.

Framing: on TCP every SBE message is preceded by the Simple Open Framing Header (uint32 BIG-endian
frame length counting its own 6 bytes, uint16 BIG-endian encoding type 0xEB50); a frame is 14 to
65535 bytes.  With ``sofh=False`` (a WebSocket message) the buffer holds SBE messages back to back
and each message's length follows from its header, groups and varData.  As SBE allows, a
blockLength as short as the template's first version is accepted (the fields added later read as
0: ``SINCE_VERSION``); the header's version is the acting version, so a field added after it
reads as 0 whatever the blockLength (``FrameInfo.acting_length``); and a blockLength (or group
entry blockLength) LONGER than ours is accepted and the extra bytes skipped, and bytes after the
known parts of a SOFH frame are ignored (a newer schema version may add groups or varData there).

Two levels:

* Python: ``encode``, ``decode_message``, ``decode_frames``, ``decode_next``, ``message_length``
  work with the ``protocol.messages`` structs; they are for the session layer, clients and tests.
* Hot paths, no Python object per message: ``decode_orders`` (protocol/decoder.pyx) writes
  order-entry messages straight into the inbound SpscRing as 96-byte Command records with the GIL
  released; ``scan_responses`` is the load generator's batch scan of server frames.

The layout tables are built in protocol/framing.pyx, the symbol table is protocol/symbols.pyx;
their public names are imported here too, so ``protocol.codec`` stays the one import of the
session layer.
"""
import struct
import sys
from array import array

import msgspec

from cpython cimport array as carray
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

from matching.records cimport REJ_MALFORMED, REJ_UNKNOWN_TEMPLATE
from protocol.framing cimport (
    DEC_FRAME_OK,
    DEC_NEED_MORE,
    DEC_UNKNOWN_TEMPLATE,
    FrameInfo,
    TemplateInfo,
    frame_at,
    template_table,
)

from protocol.decoder import (
    MALFORMED,
    NEED_MORE,
    RING_FULL,
    SESSION_MESSAGE,
    UNKNOWN_TEMPLATE,
    DecodeStatus,
    decode_orders,
)
from protocol.framing import GROUPS, LAYOUT, SINCE_VERSION, VAR_DATA, is_order_template
from protocol.messages import MESSAGE_TYPES, BookLevel, ProtocolError
from protocol.symbols import UNKNOWN_SYMBOL, SymbolTable, symbol_wire

if sys.byteorder != "little":
    # the packed structs in codec.pxd are the little-endian wire layout only on such a host
    raise ImportError("protocol.codec needs a little-endian host")

__all__ = [
    "DecodeStatus", "NEED_MORE", "SESSION_MESSAGE", "RING_FULL", "MALFORMED", "UNKNOWN_TEMPLATE",
    "LAYOUT", "GROUPS", "VAR_DATA", "SCHEMA_ID", "SCHEMA_VERSION", "SOFH_ENCODING", "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE", "SINCE_VERSION",
    "ProtocolError", "SymbolTable", "encode", "decode_message", "decode_frames", "decode_next",
    "message_length", "decode_orders", "scan_responses", "UNKNOWN_SYMBOL", "is_order_template",
]


SCHEMA_ID = SBE_SCHEMA_ID
SCHEMA_VERSION = SBE_SCHEMA_VERSION
SOFH_ENCODING = SOFH_ENCODING_SBE_LE
MAX_FRAME_SIZE = MAX_FRAME
MIN_FRAME_SIZE = MIN_FRAME

# the frame walk's per-template table (protocol/framing.pyx), built when that module was imported
cdef const TemplateInfo *TEMPLATES = template_table()


# -- framing --------------------------------------------------------------------------------------
cdef inline int _reason(int status) noexcept:
    return REJ_UNKNOWN_TEMPLATE if status == DEC_UNKNOWN_TEMPLATE else REJ_MALFORMED


# -- Python-level encode / decode ------------------------------------------------------------------
_HEADER = struct.Struct("<HHHH")
_GROUP_SIZE = struct.Struct("<HH")
_VAR_LENGTH = struct.Struct("<H")
_SOFH = struct.Struct(">IH")
_FORMAT = {"uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q", "int64": "q"}


def _block_struct(fields) -> struct.Struct:
    return struct.Struct("<" + "".join(f"{size}s" if prim == "char" else _FORMAT[prim]
                                       for _, _, size, prim in fields))


class _Template:
    __slots__ = ("tid", "cls", "block_length", "block", "n_fields", "symbols", "groups", "n_var")

    def __init__(self, tid: int) -> None:
        _, block_length, fields = LAYOUT[tid]
        self.tid = tid
        self.cls = MESSAGE_TYPES[tid]
        self.block_length = block_length
        self.block = _block_struct(fields)
        self.n_fields = len(fields)
        self.symbols = tuple(i for i, f in enumerate(fields) if f[3] == "char")
        self.groups = [(_block_struct(gf), entry_length) for _, entry_length, gf in GROUPS.get(tid, [])]
        self.n_var = len(VAR_DATA.get(tid, []))


_BY_TID = {tid: _Template(tid) for tid in LAYOUT}
_BY_CLASS = {t.cls: t for t in _BY_TID.values()}
_astuple = msgspec.structs.astuple


def encode(msg, bint sofh=True) -> bytes:
    """Encode one message (a ``protocol.messages`` struct) as SBE, with the SOFH prefix when
    ``sofh``.  Symbols are NUL-padded.

    Raises TypeError for an object that is not a message or a symbol that is not a str, ValueError
    for a value that does not fit its field (negative or too large integer, symbol not ASCII or
    longer than 8 bytes, token not ASCII or longer than 65535 bytes, more than 65535 group
    entries, frame over 65535 bytes).
    """
    t = _BY_CLASS.get(type(msg))
    if t is None:
        raise TypeError(f"not a protocol message: {type(msg).__name__}")
    values = _astuple(msg)
    block = list(values[:t.n_fields])
    cdef Py_ssize_t k = t.n_fields
    try:
        for i in t.symbols:
            block[i] = symbol_wire(block[i])
        parts = [_HEADER.pack(t.block_length, t.tid, SBE_SCHEMA_ID, SBE_SCHEMA_VERSION), t.block.pack(*block)]
        for entry, entry_length in t.groups:
            entries = values[k]
            k += 1
            parts.append(_GROUP_SIZE.pack(entry_length, len(entries)))
            for e in entries:
                parts.append(entry.pack(*(e if isinstance(e, tuple) else _astuple(e))))
        for _ in range(t.n_var):
            data = values[k].encode("ascii")
            k += 1
            parts.append(_VAR_LENGTH.pack(len(data)))
            parts.append(data)
    except struct.error as exc:
        raise ValueError(f"{type(msg).__name__}: {exc}") from None
    body = b"".join(parts)
    if not sofh:
        return body
    if len(body) + SOFH_SIZE > MAX_FRAME:
        raise ValueError(f"{type(msg).__name__}: frame of {len(body) + SOFH_SIZE} bytes exceeds {MAX_FRAME}")
    return _SOFH.pack(len(body) + SOFH_SIZE, SOFH_ENCODING_SBE_LE) + body


cdef object _decode_at(object buf, Py_ssize_t off, FrameInfo *fi):
    # off: start of a message frame_at() has validated, so every read below is in bounds
    t = _BY_TID[fi.template_id]
    if fi.acting_length >= t.block_length:
        values = list(t.block.unpack_from(buf, off + SBE_HEADER_SIZE))
    else:
        # an older version's block, or fields the header's version does not have (absent
        # whatever the blockLength): they read as 0
        raw = bytes(buf[off + SBE_HEADER_SIZE:off + SBE_HEADER_SIZE + fi.acting_length])
        values = list(t.block.unpack(raw + bytes(t.block_length - fi.acting_length)))
    for i in t.symbols:
        values[i] = values[i].rstrip(b"\0 ").decode("latin-1")
    cdef Py_ssize_t pos = off + SBE_HEADER_SIZE + fi.block_length, j
    cdef Py_ssize_t entry_length, num
    for entry, _ in t.groups:
        entry_length, num = _GROUP_SIZE.unpack_from(buf, pos)
        pos += GROUP_SIZE_SIZE
        # BookLevel is the entry type of every repeating group of v1 (bids/asks of BookSnapshot,
        # DepthSnapshot, DepthUpdate)
        values.append([BookLevel(*entry.unpack_from(buf, pos + j * entry_length)) for j in range(num)])
        pos += entry_length * num
    for _ in range(t.n_var):
        num = _VAR_LENGTH.unpack_from(buf, pos)[0]
        pos += VAR_LENGTH_SIZE
        values.append(bytes(buf[pos:pos + num]).decode("latin-1"))
        pos += num
    return t.cls(*values)


cdef int _frame(object buf, Py_ssize_t pos, bint sofh, FrameInfo *fi, str what) except -1:
    # 1 with *fi describing the complete frame at pos, 0 when the buffer does not hold all of it
    # yet; raises as decode_frames.  The buffer is released before decoding: _decode_at reads
    # buf through the struct module, not through this view.
    cdef Py_buffer view
    cdef int st
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if pos < 0 or pos > view.len:
            raise ValueError(f"{what} {pos} outside a buffer of {view.len} bytes")
        st = frame_at(TEMPLATES, <const uint8_t *>view.buf + pos, view.len - pos, sofh, fi)
    finally:
        PyBuffer_Release(&view)
    if st == DEC_NEED_MORE:
        return 0
    if st != DEC_FRAME_OK:
        raise ProtocolError(_reason(st), pos)
    return 1


def decode_message(buf):
    """Decode one SBE message (no SOFH) at the start of a bytes-like object; bytes after it are
    ignored.  Symbols come back without padding; symbol and token bytes map 1:1 to characters.

    Raises ProtocolError(REJ_MALFORMED, 0) for a truncated or malformed message, a wrong schema id
    or a blockLength shorter than the template's; ProtocolError(REJ_UNKNOWN_TEMPLATE, 0) for a
    template this schema does not have.
    """
    cdef FrameInfo fi
    if not _frame(buf, 0, False, &fi, "start"):
        raise ProtocolError(REJ_MALFORMED, 0)      # one message, not a stream: short is malformed
    return _decode_at(buf, 0, &fi)


def decode_frames(buf, Py_ssize_t start=0, bint sofh=True):
    """Decode every complete frame (sofh) or SBE message (not sofh) from ``start``.

    Returns (messages, offset after the last complete one); a partial tail is left for the next
    read.  Raises ProtocolError(reason, offset of the bad frame) for a bad encoding type, a frame
    length < 14 or > 65535, a wrong schema id, a blockLength shorter than the template's
    (REJ_MALFORMED), or an unknown template (REJ_UNKNOWN_TEMPLATE); the messages decoded before it
    are in the exception's ``messages``.  Raises ValueError for a start outside the buffer.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    cdef Py_ssize_t off = start
    msgs = []
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or start > view.len:
            raise ValueError(f"start {start} outside a buffer of {view.len} bytes")
        while True:
            st = frame_at(TEMPLATES, <const uint8_t *>view.buf + off, view.len - off, sofh, &fi)
            if st == DEC_NEED_MORE:
                break
            if st != DEC_FRAME_OK:
                raise ProtocolError(_reason(st), off, msgs)
            msgs.append(_decode_at(buf, off + fi.msg_offset, &fi))
            off += fi.frame_len
    finally:
        PyBuffer_Release(&view)
    return msgs, off


def decode_next(buf, Py_ssize_t start=0, bint sofh=True):
    """Decode the one frame (sofh) or SBE message at ``start``.

    Returns (message, offset after it), or (None, start) when it is not complete yet.  Raises
    ProtocolError / ValueError as ``decode_frames``.
    """
    cdef FrameInfo fi
    if not _frame(buf, start, sofh, &fi, "start"):
        return None, start
    return _decode_at(buf, start + fi.msg_offset, &fi), start + fi.frame_len


def message_length(buf, Py_ssize_t pos=0) -> int:
    """Length in bytes of the unframed SBE message at ``pos`` (header + block + groups +
    varData), or 0 when the buffer does not hold all of it yet.  Raises ProtocolError as
    ``decode_frames``, ValueError for a pos outside the buffer."""
    cdef FrameInfo fi
    return fi.msg_len if _frame(buf, pos, False, &fi, "pos") else 0


# -- client side: batch scan of server responses ---------------------------------------------------
def scan_responses(buf, Py_ssize_t start=0):
    """Scan every complete SOFH frame from ``start`` without building message objects (for load
    generators).

    Returns (array('Q') of (templateId, seqNum or 0, clOrdId or 0) triples, offset after the last
    complete frame).  seqNum is set for templates 20-28, clOrdId for 20-26 and 28.  Raises ProtocolError
    as ``decode_frames``.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    cdef Py_ssize_t off = start, k = 0
    cdef const uint8_t *m
    cdef const OrderAcceptedBlock *b
    cdef uint64_t *out
    cdef carray.array result = array("Q")
    cdef const TemplateInfo *templates = TEMPLATES   # a local: stores to `out` cannot alias it
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or start > view.len:
            raise ValueError(f"start {start} outside a buffer of {view.len} bytes")
        carray.resize(result, 3 * 64)
        while True:
            st = frame_at(templates, <const uint8_t *>view.buf + off, view.len - off, True, &fi)
            if st == DEC_NEED_MORE:
                break
            if st != DEC_FRAME_OK:
                raise ProtocolError(_reason(st), off)
            if k + 3 > len(result):
                carray.resize(result, 2 * len(result))
            out = <uint64_t *>result.data.as_ulonglongs
            m = <const uint8_t *>view.buf + off + fi.msg_offset + SBE_HEADER_SIZE
            b = <const OrderAcceptedBlock *>m
            out[k] = fi.template_id
            out[k + 1] = b.seq_num if TPL_ORDER_ACCEPTED <= fi.template_id <= TPL_ORDER_TRIGGERED else 0
            out[k + 2] = (b.cl_ord_id if TPL_ORDER_ACCEPTED <= fi.template_id <= TPL_MASS_CANCEL_DONE
                          or fi.template_id == TPL_ORDER_TRIGGERED else 0)
            k += 3
            off += fi.frame_len
    finally:
        PyBuffer_Release(&view)
    carray.resize(result, k)
    return result, off


# -- SOFH framing of stored messages (persistence/message_store.py, WebSocket delivery) ------------
cdef Py_ssize_t _sofh_len(const uint8_t *p, Py_ssize_t avail) noexcept nogil:
    # length of the SOFH frame at p (its 6 header bytes included), or -1 if it is not one that
    # fits in avail bytes
    cdef Py_ssize_t n
    if avail < SOFH_SIZE:
        return -1
    n = (<Py_ssize_t>p[0] << 24) | (<Py_ssize_t>p[1] << 16) | (<Py_ssize_t>p[2] << 8) | p[3]
    if n < MIN_FRAME or n > avail or ((<uint16_t>p[4] << 8) | p[5]) != SOFH_ENCODING_SBE_LE:
        return -1
    return n


def strip_sofh(data) -> bytes:
    """The SBE messages of ``data`` (whole SOFH frames back to back) without their 6-byte SOFH
    headers, back to back (the WebSocket framing).  One pass.  Raises ValueError naming the
    offset of a bad or truncated frame."""
    cdef Py_buffer view
    cdef Py_ssize_t off = 0, n, k = 0
    cdef const uint8_t *p
    cdef char *dst
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len)
        dst = PyBytes_AS_STRING(out)
        p = <const uint8_t *>view.buf
        while off < view.len:
            n = _sofh_len(p + off, view.len - off)
            if n < 0:
                raise ValueError(f"bad SOFH frame at byte offset {off} of {view.len}")
            memcpy(dst + k, p + off + SOFH_SIZE, n - SOFH_SIZE)
            k += n - SOFH_SIZE
            off += n
    finally:
        PyBuffer_Release(&view)
    return out[:k] if k != view.len else out


def sofh_scan(data, Py_ssize_t skip=0) -> tuple:
    """Walk the SOFH frames of ``data`` (whole frames back to back): returns (number of frames,
    byte offset just after the first ``skip`` frames; len(data) when skip >= the count).
    Raises ValueError naming the offset of a bad or truncated frame."""
    cdef Py_buffer view
    cdef Py_ssize_t off = 0, n, count = 0, after = -1
    cdef const uint8_t *p
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t *>view.buf
        while off < view.len:
            if count == skip:
                after = off
            n = _sofh_len(p + off, view.len - off)
            if n < 0:
                raise ValueError(f"bad SOFH frame at byte offset {off} of {view.len}")
            off += n
            count += 1
    finally:
        PyBuffer_Release(&view)
    return count, (after if after >= 0 else off)
