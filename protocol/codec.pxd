# C layout of the hftgw wire protocol (protocol/schema/hftgw-v1.xml, FIX SBE 1.0).
#
# Every SBE block is a packed struct read or written in place: SBE blocks have no padding and
# fields at any offset, and the host is little-endian (checked at import of protocol.codec), so a
# packed struct IS the wire layout.  The template ids and the struct of every block
# (``<Name>Block``, fields in schema order, snake_case) and of the group entries
# (``BookLevelEntry``) are generated from the XML at build time (protocol/schemagen.py,
# codec_blocks.pxi); protocol.framing.LAYOUT is measured on the compiled structs and
# tests/protocol/test_schema.py compares it with an independent reading of the XML.
from libc.stdint cimport uint16_t

cdef enum:
    SOFH_SIZE = 6                 # uint32 BE frame length (SOFH included) + uint16 BE encoding type
    SOFH_ENCODING_SBE_LE = 0xEB50  # SOFH encoding type: SBE 1.0 little-endian
    SBE_HEADER_SIZE = 8
    GROUP_SIZE_SIZE = 4           # groupSizeEncoding
    VAR_LENGTH_SIZE = 2           # varStringEncoding.length
    MIN_FRAME = 14                # SOFH + message header
    MAX_FRAME = 65535

include "codec_blocks.pxi"

ctypedef packed struct SbeHeader:
    uint16_t block_length
    uint16_t template_id
    uint16_t schema_id
    uint16_t version

ctypedef packed struct GroupSize:
    uint16_t block_length
    uint16_t num_in_group

ctypedef packed struct VarLength:
    uint16_t length
