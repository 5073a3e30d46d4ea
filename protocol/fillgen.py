"""Build-time generator of the outbound encoder's block fills (run by setup.py, never committed).

Every server->client business message that ``protocol/outbound.pyx`` encodes from one Event
record (matching/records.pxd) is filled field by field in the order of
``protocol/schema/hftgw-v1.xml``; which Event field feeds a block field depends only on the field's
name (``SOURCES``), so one table serves every template.  ``render()`` writes one
``cdef inline`` function per template, ``fill_<snake name>(char *p, const Event *ev, uint64_t seq,
uint64_t key)``, that stores into the packed struct of codec.pxd (``<Name>Block``): the
straight-line stores a hand-written fill would be, and a field name that codec.pxd lacks fails
the Cython build.  Raises KeyError at build time for a field of a listed template that has no
source here.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

SCHEMA = Path(__file__).parent / "schema" / "hftgw-v1.xml"

#: the templates filled from one Event (Execution has two parties: outbound.pyx fills it itself)
TEMPLATES = ("OrderAccepted", "OrderRejected", "OrderCanceled", "OrderReplaced", "OrderTriggered",
             "CancelRejected", "MassCancelDone", "BookSnapshot")

#: block field name -> the C expression that fills it; `seq` is the session's seqNum, `key` the
#: symbol's 8 wire bytes (copied, not assigned), `ev` the Event (units as on the wire: prices in
#: 1e-4, quantities in lots, times in ns since the epoch)
SOURCES = {
    "seqNum": "seq", "transactTime": "ev.ts", "clOrdId": "ev.cl_ord_id", "orderId": "ev.order_id",
    "origClOrdId": "ev.ref", "requestId": "ev.ref", "stopPx": "<int64_t>ev.ref",
    "price": "ev.price", "orderQty": "ev.qty", "canceledQty": "ev.qty", "leavesQty": "ev.leaves",
    "side": "ev.side", "ordType": "ev.ord_type", "timeInForce": "ev.tif", "reason": "ev.reason",
    "canceledCount": "ev.count", "symbol": None,
}

_NS = {"sbe": "http://fixprotocol.io/2016/sbe"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _fields(schema: Path) -> dict[str, list[str]]:
    root = ET.parse(schema).getroot()
    return {m.get("name", ""): [f.get("name", "") for f in m.findall("field")]
            for m in root.findall("sbe:message", _NS)}


def render(schema: Path = SCHEMA) -> str:
    """The .pxi text: one fill function per name of ``TEMPLATES``, fields in schema order."""
    fields = _fields(schema)
    out = ["# Generated at build time by protocol/fillgen.py from protocol/schema/hftgw-v1.xml; do not",
           "# edit or commit.  Included by protocol/outbound.pyx (Event and the blocks cimported there).",
           "from libc.stdint cimport int64_t", ""]
    for name in TEMPLATES:
        out += ["", f"cdef inline void fill_{_snake(name)}(char *p, const Event *ev, uint64_t seq, "
                "uint64_t key) noexcept nogil:",
                f"    cdef {name}Block *b = <{name}Block *>p"]
        for field in fields[name]:
            src = SOURCES[field]
            if src is None:
                out.append(f"    memcpy(b.{_snake(field)}, &key, 8)")
            else:
                out.append(f"    b.{_snake(field)} = {src}")
        out.append("")
    return "\n".join(out)


def write(target: Path, schema: Path = SCHEMA) -> Path:
    """Write ``render()`` to ``target`` when it differs (so an unchanged schema does not force a
    rebuild of the encoder); returns target."""
    text = render(schema)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target
