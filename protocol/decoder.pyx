# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The order decoder: order-entry frames straight into the inbound ring, no Python object per message.

``decode_orders`` walks SOFH frames (or bare SBE messages, WebSocket) with ``frame_at``
(framing.pxd) and writes each NewOrder / CancelOrder / ReplaceOrder / MassCancel / BookQuery as one
96-byte Command record (matching/records.pxd) into the inbound SpscRing with the GIL released;
it stops at the first frame of another template for the session layer to handle.
"""
from enum import IntEnum

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer

from matching.records cimport UNKNOWN_SYMBOL_ID, Command
from matching.ring cimport SpscRing
from protocol.codec cimport SBE_HEADER_SIZE
from protocol.framing cimport (
    DEC_FRAME_OK,
    DEC_MALFORMED,
    DEC_NEED_MORE,
    DEC_RING_FULL,
    DEC_SESSION_MESSAGE,
    DEC_UNKNOWN_TEMPLATE,
    FrameInfo,
    TemplateInfo,
    frame_at,
    template_table,
)
from protocol.symbols cimport SymbolTable, symbol_key

__all__ = ["DecodeStatus", "NEED_MORE", "SESSION_MESSAGE", "RING_FULL", "MALFORMED", "UNKNOWN_TEMPLATE",
           "decode_orders"]


class DecodeStatus(IntEnum):
    """Why ``decode_orders`` returned."""

    NEED_MORE = DEC_NEED_MORE                # no complete frame left
    SESSION_MESSAGE = DEC_SESSION_MESSAGE    # the next frame is a valid non-order template
    RING_FULL = DEC_RING_FULL                # the inbound ring has no free slot
    MALFORMED = DEC_MALFORMED                # bad framing at the returned offset
    UNKNOWN_TEMPLATE = DEC_UNKNOWN_TEMPLATE  # a template id this schema does not have


NEED_MORE = DecodeStatus.NEED_MORE
SESSION_MESSAGE = DecodeStatus.SESSION_MESSAGE
RING_FULL = DecodeStatus.RING_FULL
MALFORMED = DecodeStatus.MALFORMED
UNKNOWN_TEMPLATE = DecodeStatus.UNKNOWN_TEMPLATE


# all fields 0: the start of every record written (ring slots are reused)
cdef Command _ZERO_COMMAND


# command_fields(c, m, tid, blank_symbol, stp_default): the Command fields of the order-entry
# block at m, straight-line stores per template, generated at build time from the XML and the
# field rules of protocol/schemagen.py (TARGETS)
include "decoder_commands.pxi"


cdef inline void _to_command(Command *c, const char *m, uint16_t tid, uint32_t session_id,
                             uint32_t symbol_id, uint64_t key, uint64_t recv_ts,
                             uint32_t account_id, uint8_t stp_default) noexcept nogil:
    # ring slots are reused: the record is cleared first, then the template sets its fields
    c[0] = _ZERO_COMMAND
    c.ts = recv_ts
    c.session_id = session_id
    c.symbol_id = symbol_id
    c.account_id = account_id
    if symbol_id == UNKNOWN_SYMBOL_ID:
        # the id says nothing about the name, and the UNKNOWN_SYMBOL reject echoes the name sent
        c.reserved = key
    command_fields(c, m, tid, key == 0, stp_default)


def decode_orders(buffer, Py_ssize_t start, Py_ssize_t end, SpscRing ring not None,
                  uint32_t session_id, SymbolTable symbols not None, uint64_t recv_ts, bint sofh=True,
                  uint32_t account_id=0, uint8_t stp_default=0):
    """Decode complete order-entry frames of ``buffer[start:end]`` into 96-byte Command records
    (matching/records.pxd) written straight into ``ring`` and published once at the end.

    NewOrder -> CMD_NEW, CancelOrder -> CMD_CANCEL, ReplaceOrder -> CMD_REPLACE, MassCancel ->
    CMD_MASS_CANCEL (an all-blank symbol -> symbol_id UNKNOWN_SYMBOL and depth 1; scope), BookQuery ->
    CMD_BOOK_QUERY (request id in orig_cl_ord_id and cl_ord_id).  symbol_id comes from
    ``symbols`` (UNKNOWN_SYMBOL when absent, with the symbol's NUL-padded bytes as sent in
    ``reserved``, for the reject to echo), ts = recv_ts (ns), seq = 0 (the sequencer stamps
    it), account_id = ``account_id`` (the session's account); a NewOrder with stpMode 0 gets
    ``stp_default`` (the session's default StpMode: the order's own value wins when set).
    Business fields are not validated here (the matching core does that).

    Returns (offset, commands written, status): status NEED_MORE (no complete frame left),
    SESSION_MESSAGE (offset is at a complete frame of another valid template, for the caller to
    handle before calling again), RING_FULL, MALFORMED or UNKNOWN_TEMPLATE (offset at the bad
    frame).  sofh=False: the buffer holds SBE messages back to back (a WebSocket message).
    Raises ValueError for a start/end outside the buffer or a ring whose slots are not Command
    records.
    The inner loop runs without the GIL.
    """
    cdef Py_buffer view
    cdef FrameInfo fi
    cdef int st
    cdef Py_ssize_t off = start
    cdef uint64_t n = 0, free_n, wpos, key
    cdef const uint8_t *base
    cdef const char *m
    cdef const TemplateInfo *templates = template_table()
    cdef char short_block[64]   # an older version's shorter block, zero-extended
    cdef uint16_t tid
    if ring.slot_size != sizeof(Command):
        raise ValueError(f"ring slots are {ring.slot_size} bytes, Command records {sizeof(Command)}")
    PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or end < start or end > view.len:
            raise ValueError(f"[{start}, {end}) outside a buffer of {view.len} bytes")
        base = <const uint8_t *>view.buf
        with nogil:
            wpos = ring.write_pos()
            free_n = ring.free_slots()
            while True:
                st = frame_at(templates, base + off, end - off, sofh, &fi)
                if st != DEC_FRAME_OK:
                    break
                tid = fi.template_id
                if not templates[tid].is_order:
                    st = DEC_SESSION_MESSAGE
                    break
                if n == free_n:
                    free_n = ring.free_slots()   # the consumer may have freed slots meanwhile
                    if n == free_n:
                        st = DEC_RING_FULL
                        break
                m = <const char *>(base + off + fi.msg_offset + SBE_HEADER_SIZE)
                if fi.acting_length < templates[tid].block_length:
                    # an older version's block, or fields the header's version does not have:
                    # what is missing reads as 0 (the documented default of every later field)
                    memset(short_block, 0, sizeof(short_block))
                    memcpy(short_block, m, fi.acting_length)
                    m = short_block
                key = symbol_key(m + templates[tid].symbol_offset)
                _to_command(<Command *>ring.slot(wpos + n), m, tid, session_id,
                            symbols.lookup_key(key), key, recv_ts, account_id, stp_default)
                n += 1
                off += fi.frame_len
            if n:
                ring.publish(n)
    finally:
        PyBuffer_Release(&view)
    return off, n, st
