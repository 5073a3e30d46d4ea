"""The XML schema is the source of truth: the codec's C layout and encoding must agree with an
independent reading of it (tests/support/sbe_xml.py), byte for byte."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.sbe_xml import PRIMITIVES, SBE_NS, Encoding, Schema

import matching.records as records
from protocol import codec
from protocol.messages import MESSAGE_TYPES, BookLevel, Message

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "protocol" / "schema" / "hftgw-v1.xml"
SCHEMA = Schema(SCHEMA_PATH)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# -- the document itself --------------------------------------------------------------------------
def test_schema_is_a_valid_sbe_1_0_document() -> None:
    assert SCHEMA.root.tag == f"{{{SBE_NS}}}messageSchema"
    assert SCHEMA.problems == []
    assert (SCHEMA.package, SCHEMA.id, SCHEMA.version, SCHEMA.byte_order) == ("hftgw", 1, 2, "littleEndian")
    header = [(m.name, off, m.primitive) for m, off in SCHEMA.header.members]
    assert header == [("blockLength", 0, "uint16"), ("templateId", 2, "uint16"),
                      ("schemaId", 4, "uint16"), ("version", 6, "uint16")]
    dim = SCHEMA.types["groupSizeEncoding"]
    assert [(m.name, off, m.primitive) for m, off in dim.members] == [
        ("blockLength", 0, "uint16"), ("numInGroup", 2, "uint16")]
    var = SCHEMA.types["varStringEncoding"]
    assert [(m.name, off, m.primitive, m.length) for m, off in var.members] == [
        ("length", 0, "uint16", 1), ("varData", 2, "uint8", 0)]
    # every message declares its blockLength, and it is exactly the sum of its fields (no padding)
    for m in SCHEMA.messages.values():
        assert m.declared_block_length == sum(f.size for f in m.fields), m.name
    assert SCHEMA.types["Symbol"].primitive == "char" and SCHEMA.types["Symbol"].length == 8
    assert SCHEMA.types["OrderFlags"].choices == {"PostOnly": 0}
    assert records.OrderFlags.FLAG_POST_ONLY == 1 << SCHEMA.types["OrderFlags"].choices["PostOnly"]


ENUM_PREFIXES = {"Side": (records.Side, "SIDE_", "uint8"), "OrdType": (records.OrdType, "ORD_", "uint8"),
                 "TimeInForce": (records.TimeInForce, "TIF_", "uint8"),
                 "StpMode": (records.StpMode, "STP_", "uint8"),
                 "RejectReason": (records.RejectReason, "REJ_", "uint16"),
                 "CancelReason": (records.CancelReason, "CXL_", "uint16"),
                 "LoginRejectReason": (records.LoginRejectReason, "LOGIN_", "uint16"),
                 "MassCancelScope": (records.MassCancelScope, "SCOPE_", "uint8"),
                 "Liquidity": (records.Liquidity, "LIQ_", "uint8")}


@pytest.mark.parametrize("name", sorted(ENUM_PREFIXES))
def test_xml_enums_are_the_records_enums(name: str) -> None:
    py_enum, prefix, primitive = ENUM_PREFIXES[name]
    enc = SCHEMA.types[name]
    assert enc.kind == "enum" and enc.primitive == primitive
    assert enc.values == {m.name.removeprefix(prefix): int(m.value) for m in py_enum}


def test_template_ids_and_names() -> None:
    expected = {1: "Login", 2: "LoginAccepted", 3: "LoginRejected", 4: "Heartbeat", 5: "Logout",
                6: "SessionReject", 10: "NewOrder", 11: "CancelOrder", 12: "ReplaceOrder",
                13: "MassCancel", 14: "BookQuery", 15: "EndOfSession", 16: "PositionQuery",
                20: "OrderAccepted", 21: "OrderRejected", 22: "Execution", 23: "OrderCanceled",
                24: "OrderReplaced", 25: "CancelRejected", 26: "MassCancelDone", 27: "BookSnapshot",
                28: "OrderTriggered", 40: "Bbo", 41: "Trade", 42: "DepthSnapshot", 43: "DepthUpdate",
                44: "PositionReport"}
    assert {tid: m.name for tid, m in SCHEMA.messages.items()} == expected
    assert {tid: cls.__name__ for tid, cls in MESSAGE_TYPES.items()} == expected


def test_block_lengths_from_the_brief() -> None:
    # sums of the field sizes listed in the protocol brief, computed by hand
    expected = {1: 14, 2: 16, 3: 2, 4: 0, 5: 2, 6: 4, 10: 53, 11: 24, 12: 40, 13: 18, 14: 18, 15: 16,
                16: 16, 20: 67, 21: 34, 22: 74, 23: 75, 24: 73, 25: 34, 26: 28, 27: 32, 28: 74,
                40: 56, 41: 41, 42: 26, 43: 34, 44: 76}
    assert {tid: SCHEMA.layout(tid)[1] for tid in SCHEMA.messages} == expected


def test_version_2_additions_are_marked_and_appended() -> None:
    """SBE versioning: what version 2 added carries sinceVersion="2" in the XML, sits after every
    version-1 field of its block, and is what the codec's SINCE_VERSION table says."""
    ns = {"sbe": SBE_NS}
    xml_templates = {}
    xml_fields: dict[int, dict[str, int]] = {}
    for m in SCHEMA.root.findall("sbe:message", ns):
        tid = int(m.attrib["id"])
        if "sinceVersion" in m.attrib:
            xml_templates[tid] = int(m.attrib["sinceVersion"])
        since = [int(f.attrib.get("sinceVersion", "1")) for f in m.findall("field")]
        assert since == sorted(since), m.attrib["name"]            # appended, never inserted
        later = {f.attrib["name"]: int(f.attrib["sinceVersion"]) for f in m.findall("field")
                 if "sinceVersion" in f.attrib}
        if later and tid not in xml_templates:
            xml_fields[tid] = later
    assert xml_templates == codec.SINCE_VERSION["templates"]
    assert xml_fields == codec.SINCE_VERSION["fields"]
    versions = [*xml_templates.values(), *(v for d in xml_fields.values() for v in d.values())]
    assert max(versions) == SCHEMA.version


# -- layout equality: C structs of the codec == XML -------------------------------------------------
@pytest.mark.parametrize("tid", sorted(SCHEMA.messages))
def test_codec_layout_equals_xml_layout(tid: int) -> None:
    assert codec.LAYOUT[tid] == SCHEMA.layout(tid)
    assert codec.GROUPS.get(tid, []) == SCHEMA.groups(tid)
    assert codec.VAR_DATA.get(tid, []) == SCHEMA.var_data(tid)


def test_codec_has_no_template_the_xml_lacks() -> None:
    assert set(codec.LAYOUT) == set(SCHEMA.messages)
    assert set(MESSAGE_TYPES) == set(SCHEMA.messages)


# -- cross-encoding, driven by the XML types --------------------------------------------------------
SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def xml_value(enc: Encoding) -> st.SearchStrategy[Any]:
    if enc.kind == "enum":
        return st.sampled_from(sorted(enc.values.values()))
    if enc.kind == "set":
        mask = sum(1 << b for b in enc.choices.values())
        return st.integers(0, mask).map(lambda v: v & mask)
    if enc.primitive == "char" and enc.length > 1:
        return st.text(SYMBOL_CHARS, max_size=enc.length)
    lo, hi = PRIMITIVES[enc.primitive][2:]
    return st.integers(int(lo), int(hi))


@st.composite
def xml_message(draw: st.DrawFn, tid: int) -> dict[str, Any]:
    def block(b: Any) -> dict[str, Any]:
        values = {f.name: draw(xml_value(f.encoding)) for f in b.fields}
        for g in b.groups:
            values[g.name] = [block(g) for _ in range(draw(st.integers(0, 4)))]
        for d in b.data:
            values[d.name] = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=400))
        return values

    return block(SCHEMA.messages[tid])


def to_message(tid: int, values: dict[str, Any]) -> Message:
    kwargs = {}
    for k, v in values.items():
        if isinstance(v, list):
            v = [BookLevel(**{snake(ek): ev for ek, ev in e.items()}) for e in v]
        kwargs[snake(k)] = v
    return MESSAGE_TYPES[tid](**kwargs)


def from_message(msg: Message) -> dict[str, Any]:
    tid = type(msg).TEMPLATE_ID
    names = ([f[0] for f in codec.LAYOUT[tid][2]] + [g[0] for g in codec.GROUPS.get(tid, [])]
             + [v[0] for v in codec.VAR_DATA.get(tid, [])])
    out = {}
    for name in names:
        v = getattr(msg, snake(name))
        if isinstance(v, list):
            v = [{"price": e.price, "size": e.size, "orderCount": e.order_count} for e in v]
        out[name] = v
    return out


@pytest.mark.parametrize("tid", sorted(SCHEMA.messages))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_cross_encode(tid: int, data: st.DataObject) -> None:
    values = data.draw(xml_message(tid))
    ref_bytes = SCHEMA.encode(tid, values)
    # reference bytes -> codec
    msg = codec.decode_message(ref_bytes)
    assert type(msg).TEMPLATE_ID == tid
    assert from_message(msg) == values
    # codec bytes -> reference, and the two encoders agree byte for byte
    ours = codec.encode(to_message(tid, values), sofh=False)
    assert ours == ref_bytes
    got_tid, got, used = SCHEMA.decode(ours)
    assert (got_tid, got, used) == (tid, values, len(ours))
    framed = codec.encode(to_message(tid, values))
    assert framed[6:] == ref_bytes and int.from_bytes(framed[:4], "big") == len(framed)


def test_struct_fields_follow_the_xml_order() -> None:
    for tid, cls in MESSAGE_TYPES.items():
        m = SCHEMA.messages[tid]
        names = [f.name for f in m.fields] + [g.name for g in m.groups] + [d.name for d in m.data]
        assert cls.__struct_fields__ == tuple(snake(n) for n in names), cls.__name__


# -- the client documentation tells the same offsets -------------------------------------------------
def test_protocol_doc_tables_match_the_layout() -> None:
    """docs/protocol.md has one table per template: `| offset | field | type | ...`."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for tid, (name, block_length, fields) in codec.LAYOUT.items():
        head = re.search(rf"^### {tid} {name}\b.*?$", doc, re.M)
        assert head, f"docs/protocol.md has no section '### {tid} {name}'"
        section = doc[head.end():]
        nxt = re.search(r"^#{2,3} ", section, re.M)
        section = section[:nxt.start()] if nxt else section
        assert f"blockLength {block_length}" in section, name
        rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`?(\w+)`?\s*\|\s*([\w\[\]]+)", section, re.M)
        all_fields = fields + [f for _, _, gfields in codec.GROUPS.get(tid, []) for f in gfields]
        want = [(str(off), fname, f"char[{size}]" if prim == "char" else prim)
                for fname, off, size, prim in all_fields]
        assert rows == want, name
        for gname, entry_length, _ in codec.GROUPS.get(tid, []):
            assert f"Group `{gname}` (groupSizeEncoding, entry blockLength {entry_length})" in section
        for vname, _ in codec.VAR_DATA.get(tid, []):
            assert f"varData `{vname}`: uint16 length" in section


def _doc_section(doc: str, tid: int, name: str) -> str:
    head = re.search(rf"^### {tid} {name}\b.*?$", doc, re.M)
    assert head, name
    section = doc[head.end():]
    nxt = re.search(r"^#{2,3} ", section, re.M)
    return section[:nxt.start()] if nxt else section


def test_protocol_doc_marks_every_template_and_field_a_later_version_added() -> None:
    """Issue 14: a template or field with sinceVersion N in the XML says "Since version N" (the
    template's first sentence) or "since version N" (the field's notes) in docs/protocol.md,
    and nothing else claims it."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for m in ET.parse(SCHEMA_PATH).getroot().iter(f"{{{SBE_NS}}}message"):
        section = _doc_section(doc, int(m.get("id", "0")), m.get("name", ""))
        since = int(m.get("sinceVersion", "0"))
        first = section.strip().split(". ")[0]
        assert (first == f"Since version {since}") == (since > 1), (m.get("name"), first)
        for f in m.findall("field"):
            row = re.search(rf"^\|\s*\d+\s*\|\s*`{f.get('name')}`.*$", section, re.M)
            assert row, (m.get("name"), f.get("name"))
            fsince = int(f.get("sinceVersion", "0"))
            marked = re.search(r"since version (\d+)", row.group(0))
            assert (marked.group(1) if marked else None) == (str(fsince) if fsince > 1 else None), \
                (m.get("name"), f.get("name"))
