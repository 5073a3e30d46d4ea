# The frame walk of the hftgw wire protocol (SOFH + SBE, protocol/schema/hftgw-v1.xml), shared by
# the Python-level codec (protocol/codec.pyx), the order decoder (protocol/decoder.pyx) and the
# response scan.  frame_at() is inline here so that each hot loop gets its own inlined copy: a
# call through a cimported function pointer per frame would cost the decoder's loop.  The
# per-template table it reads is built once by protocol/framing.pyx from the layout tables.
from libc.stdint cimport uint8_t, uint16_t

from matching.native.byteorder cimport ld16
from protocol.codec cimport (
    GROUP_SIZE_SIZE,
    MAX_FRAME,
    MAX_TEMPLATE_ID,
    MIN_FRAME,
    SBE_HEADER_SIZE,
    SBE_SCHEMA_ID,
    SBE_SCHEMA_VERSION,
    SOFH_ENCODING_SBE_LE,
    SOFH_SIZE,
    VAR_LENGTH_SIZE,
    GroupSize,
    SbeHeader,
)

# Results of frame_at() and decode_orders() (Python: protocol.decoder.DecodeStatus).
cdef enum:
    DEC_NEED_MORE = 0        # no complete frame at the offset
    DEC_SESSION_MESSAGE = 1  # a complete frame of a valid non-order template
    DEC_RING_FULL = 2
    DEC_MALFORMED = 3        # bad SOFH, schema id, blockLength, group or var-data length
    DEC_UNKNOWN_TEMPLATE = 4
    DEC_FRAME_OK = 5         # frame_at(): a complete, well-formed frame

# What frame_at() found at an offset.
ctypedef struct FrameInfo:
    Py_ssize_t frame_len     # bytes to skip to the next frame (SOFH included when framed)
    Py_ssize_t msg_offset    # offset of the SBE header inside the frame (6 with SOFH, else 0)
    Py_ssize_t msg_len       # header + block + groups + varData, as this schema reads them
    uint16_t template_id
    uint16_t block_length    # as sent (may exceed ours: newer schema version)
    # the bytes of the block that hold fields of the header's version (the acting version):
    # min(block_length, that version's block).  A field whose sinceVersion is above the acting
    # version is absent whatever the blockLength (SBE 1.0), so the readers stop there and
    # read the rest as 0.
    uint16_t acting_length

# Per-template facts the framing walk and the decoder need; indexed by template id.
ctypedef struct TemplateInfo:
    uint16_t block_length    # 0 with known=0: not a template of this schema
    # the shortest root block accepted: that of the template's first version (fields added
    # later read as 0 when absent)
    uint16_t min_block_length
    # by acting version 0 .. SBE_SCHEMA_VERSION: the length of the block's prefix whose fields
    # that version has (the offset of the first field of a later version; block_length if none).
    # 8 versions (a literal: the C struct precedes the generated enum; framing.pyx checks it)
    uint16_t version_block[8]
    uint16_t entry_length    # root-level repeating groups: our entry blockLength
    uint16_t symbol_offset   # order templates: offset of `symbol` in the block
    uint8_t known
    uint8_t is_order         # decoded into a Command by decode_orders
    uint8_t n_groups
    uint8_t n_var_data

# The table (MAX_TEMPLATE_ID + 1 entries), filled when protocol.framing is imported.
cdef const TemplateInfo *template_table() noexcept nogil


cdef inline int frame_at(const TemplateInfo *templates, const uint8_t *p, Py_ssize_t avail, bint sofh,
                         FrameInfo *fi) noexcept nogil:
    """Inspect the frame (sofh) or bare SBE message at p, with avail bytes readable.

    templates: the table of ``template_table()``, indexed by template id.
    Returns DEC_FRAME_OK with *fi filled, DEC_NEED_MORE, DEC_MALFORMED or DEC_UNKNOWN_TEMPLATE.
    With SOFH the whole frame is awaited before its content is judged (its length is known);
    without, each part is judged as soon as it has arrived.
    """
    cdef Py_ssize_t frame_len = 0, limit, need
    cdef const uint8_t *m = p
    cdef int short_status = DEC_NEED_MORE     # what running past `limit` means
    cdef const SbeHeader *h
    cdef const TemplateInfo *t
    cdef const GroupSize *g
    cdef int _g, _v
    cdef uint16_t acting
    if sofh:
        if avail < 4:
            return DEC_NEED_MORE
        frame_len = (<Py_ssize_t>p[0] << 24) | (<Py_ssize_t>p[1] << 16) | (<Py_ssize_t>p[2] << 8) | p[3]
        if frame_len < MIN_FRAME or frame_len > MAX_FRAME:
            return DEC_MALFORMED
        if avail < SOFH_SIZE:
            return DEC_NEED_MORE
        if ((<uint16_t>p[4] << 8) | p[5]) != SOFH_ENCODING_SBE_LE:
            return DEC_MALFORMED
        if avail < frame_len:
            return DEC_NEED_MORE
        m = p + SOFH_SIZE
        limit = frame_len - SOFH_SIZE
        short_status = DEC_MALFORMED
    else:
        limit = avail
        if limit < SBE_HEADER_SIZE:
            return DEC_NEED_MORE
    h = <const SbeHeader *>m
    if h.schema_id != SBE_SCHEMA_ID:
        return DEC_MALFORMED
    if h.template_id > MAX_TEMPLATE_ID or not templates[h.template_id].known:
        return DEC_UNKNOWN_TEMPLATE
    t = &templates[h.template_id]
    if h.block_length < t.min_block_length:
        return DEC_MALFORMED
    need = SBE_HEADER_SIZE + h.block_length
    for _g in range(t.n_groups):
        if need + GROUP_SIZE_SIZE > limit:
            return short_status
        g = <const GroupSize *>(m + need)
        if g.block_length < t.entry_length:
            return DEC_MALFORMED
        need += GROUP_SIZE_SIZE + <Py_ssize_t>g.block_length * g.num_in_group
    for _v in range(t.n_var_data):
        if need + VAR_LENGTH_SIZE > limit:
            return short_status
        need += VAR_LENGTH_SIZE + ld16(<const char *>(m + need))
    if need > limit:
        return short_status
    fi.template_id = h.template_id
    fi.block_length = h.block_length
    # a version above ours acts as ours: it may only have appended what we skip anyway
    acting = t.version_block[h.version if h.version < SBE_SCHEMA_VERSION else SBE_SCHEMA_VERSION]
    fi.acting_length = acting if acting < h.block_length else h.block_length
    fi.msg_len = need
    if sofh:
        fi.msg_offset = SOFH_SIZE
        fi.frame_len = frame_len
    else:
        fi.msg_offset = 0
        fi.frame_len = need
    return DEC_FRAME_OK
