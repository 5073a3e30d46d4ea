# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The layout tables of the hftgw wire protocol, built from the packed structs of codec.pxd.

``LAYOUT``, ``GROUPS``, ``VAR_DATA`` and ``SINCE_VERSION`` describe every template of
protocol/schema/hftgw-v1.xml (generated from it at build time, measured on the compiled structs;
tests/protocol/test_schema.py compares them with an independent reading of the XML); at import they are
checked against ``protocol.messages`` and compiled into the per-template C table that
``frame_at`` (framing.pxd) reads.  Raises ImportError when the structs, the tables and the
message classes disagree.
"""
import re

from libc.string cimport memset

from protocol.codec cimport (
    MAX_TEMPLATE_ID,
    SBE_SCHEMA_VERSION,
    TPL_BOOK_QUERY,
    TPL_BOOK_SNAPSHOT,
    TPL_CANCEL_ORDER,
    TPL_MASS_CANCEL,
    TPL_NEW_ORDER,
    TPL_ORDER_ACCEPTED,
    TPL_ORDER_TRIGGERED,
    TPL_REPLACE_ORDER,
)

from protocol.messages import MESSAGE_TYPES

__all__ = ["LAYOUT", "GROUPS", "VAR_DATA", "SINCE_VERSION", "is_order_template"]


# -- layout tables, built from the packed structs of codec.pxd ------------------------------------
cdef tuple _f(str name, const void *base, const void *field, size_t size, str primitive):
    return (name, <Py_ssize_t>(<const char *>field - <const char *>base), <Py_ssize_t>size, primitive)


# The tables, generated at build time from the XML (protocol/schemagen.py), each offset and size
# measured with _f on the compiled structs of codec.pxd:
#: LAYOUT: template id -> (name, blockLength, [(field name, offset, size, primitive type)]) of the
#:   root block, in schema order; names and primitive types as in the XML schema.
#: GROUPS: template id -> [(group name, entry blockLength, [fields as in LAYOUT])], in schema
#:   order; every group uses groupSizeEncoding {blockLength uint16, numInGroup uint16}.
#: VAR_DATA: template id -> [(varData name, primitive type of its length)] (varStringEncoding).
#: SINCE_VERSION: schema version that added each template and each field appended to an older
#:   template (as the XML's sinceVersion); everything not listed is from version 1.  A block as
#:   short as the template's first version is accepted; fields it lacks decode as 0, and so
#:   do the fields added after the header's version (the acting version) whatever the block
#:   holds (TemplateInfo.version_block, FrameInfo.acting_length).
include "framing_layout.pxi"

_ORDER_TEMPLATES = (TPL_NEW_ORDER, TPL_CANCEL_ORDER, TPL_REPLACE_ORDER, TPL_MASS_CANCEL, TPL_BOOK_QUERY)

cdef TemplateInfo TEMPLATES[MAX_TEMPLATE_ID + 1]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _check_fields(str where, list fields, Py_ssize_t block_length):
    # SBE blocks have no padding: the listed fields must tile the block exactly.
    cdef Py_ssize_t pos = 0
    for name, offset, size, _ in fields:
        if offset != pos:
            raise ImportError(f"{where}.{name} at offset {offset}, expected {pos}")
        pos += size
    if pos != block_length:
        raise ImportError(f"{where}: fields cover {pos} bytes of a {block_length}-byte block")


def _build_templates():
    memset(TEMPLATES, 0, sizeof(TEMPLATES))
    if SBE_SCHEMA_VERSION >= sizeof(TEMPLATES[0].version_block) // sizeof(TEMPLATES[0].version_block[0]):
        raise ImportError(f"schema version {SBE_SCHEMA_VERSION}: TemplateInfo.version_block too short")
    for tid, (name, block_length, fields) in LAYOUT.items():
        _check_fields(name, fields, block_length)
        groups = GROUPS.get(tid, [])
        var_data = VAR_DATA.get(tid, [])
        for gname, entry_length, gfields in groups:
            _check_fields(f"{name}.{gname}", gfields, entry_length)
            if entry_length != groups[0][1]:
                raise ImportError(f"{name}: groups of different entry sizes are not supported")
        cls = MESSAGE_TYPES.get(tid)
        if cls is None or cls.__name__ != name:
            raise ImportError(f"template {tid} is {name} in the codec, {cls} in protocol.messages")
        expected = (tuple(_snake(f[0]) for f in fields) + tuple(g[0] for g in groups)
                    + tuple(v[0] for v in var_data))
        if cls.__struct_fields__ != expected:
            raise ImportError(f"{name} fields {cls.__struct_fields__} != codec {expected}")
        TEMPLATES[tid].known = 1
        TEMPLATES[tid].block_length = block_length
        later = SINCE_VERSION["fields"].get(tid, {})
        TEMPLATES[tid].min_block_length = min([f[1] for f in fields if f[0] in later] + [block_length])
        if any(f[0] in later for f in fields if f[1] < TEMPLATES[tid].min_block_length):
            raise ImportError(f"{name}: a field of a later version before an older one")
        for v in range(SBE_SCHEMA_VERSION + 1):
            # fields are only appended, in version order, so a version's fields are a prefix
            TEMPLATES[tid].version_block[v] = min(
                [f[1] for f in fields if later.get(f[0], 0) > v] + [block_length])
        if any(later.get(a[0], 0) > later.get(b[0], 0) for a, b in zip(fields, fields[1:])):
            raise ImportError(f"{name}: fields not in version order")
        TEMPLATES[tid].is_order = tid in _ORDER_TEMPLATES
        TEMPLATES[tid].n_groups = len(groups)
        TEMPLATES[tid].entry_length = groups[0][1] if groups else 0
        TEMPLATES[tid].n_var_data = len(var_data)
        if tid in _ORDER_TEMPLATES:
            TEMPLATES[tid].symbol_offset = [f[1] for f in fields if f[0] == "symbol"][0]
    # scan_responses reads seqNum and clOrdId through OrderAcceptedBlock for every S->C template
    for tid in range(TPL_ORDER_ACCEPTED, TPL_ORDER_TRIGGERED + 1):
        fields = LAYOUT[tid][2]
        if fields[0][:2] != ("seqNum", 0) or (tid != TPL_BOOK_SNAPSHOT and fields[2][:2] != ("clOrdId", 16)):
            raise ImportError(f"{LAYOUT[tid][0]} does not start with seqNum, transactTime, clOrdId")


_build_templates()


def is_order_template(int template_id) -> bool:
    """True for the order-entry templates ``decode_orders`` writes into the ring (10-14)."""
    return 0 <= template_id <= MAX_TEMPLATE_ID and TEMPLATES[template_id].is_order == 1


cdef const TemplateInfo *template_table() noexcept nogil:
    return TEMPLATES
