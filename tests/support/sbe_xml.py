"""An independent reader and reference codec of an SBE 1.0 XML message schema, for tests only.

It knows nothing of protocol.codec: it computes every offset and size from the XML by the rules of
FIX Simple Binary Encoding 1.0 (message header type, root block with optional ``offset`` and
``blockLength`` attributes, repeating groups with their dimension composite, variable-length data
with its length composite, ``presence="constant"`` members taking no space), and encodes/decodes
messages field by field with ``struct`` at the computed offsets.  tests/protocol/test_schema.py compares the
codec's LAYOUT with it and cross-encodes every template both ways.

Values: integers for integer fields, enums (their value) and sets (the bit mask); ``str`` for
char arrays (ASCII, NUL-padded on encode, trailing NULs dropped on decode); a list of dicts per
repeating group; ``str`` per var-data field (its characterEncoding, ASCII by default).
"""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SBE_NS = "http://fixprotocol.io/2016/sbe"

#: primitive type -> (size in bytes, struct code, min, max) of SBE 1.0 §2
PRIMITIVES: dict[str, tuple[int, str, float, float]] = {
    "char": (1, "B", 0x20, 0x7E),
    "int8": (1, "b", -(2**7), 2**7 - 1),
    "uint8": (1, "B", 0, 2**8 - 1),
    "int16": (2, "h", -(2**15), 2**15 - 1),
    "uint16": (2, "H", 0, 2**16 - 1),
    "int32": (4, "i", -(2**31), 2**31 - 1),
    "uint32": (4, "I", 0, 2**32 - 1),
    "int64": (8, "q", -(2**63), 2**63 - 1),
    "uint64": (8, "Q", 0, 2**64 - 1),
    "float": (4, "f", float("-inf"), float("inf")),
    "double": (8, "d", float("-inf"), float("inf")),
}


@dataclass
class Encoding:
    """One entry of <types> (or a composite member): a type, composite, enum or set."""

    name: str
    kind: str                      # "type" | "composite" | "enum" | "set"
    primitive: str = ""            # type/enum/set: the primitive on the wire
    length: int = 1                # type: array length (char[8] -> 8; 0 = varData)
    constant: bool = False
    character_encoding: str = ""
    values: dict[str, int] = field(default_factory=dict)      # enum: name -> value
    choices: dict[str, int] = field(default_factory=dict)     # set: name -> bit position
    members: list[tuple[Encoding, int]] = field(default_factory=list)  # composite: (member, offset)

    @property
    def size(self) -> int:
        if self.constant:
            return 0
        if self.kind == "composite":
            return max((off + m.size for m, off in self.members), default=0)
        return PRIMITIVES[self.primitive][0] * self.length

    def member(self, name: str) -> tuple[Encoding, int]:
        for m, off in self.members:
            if m.name == name:
                return m, off
        raise KeyError(f"composite {self.name} has no member {name}")


@dataclass
class Field:
    name: str
    id: int
    encoding: Encoding
    offset: int

    @property
    def size(self) -> int:
        return self.encoding.size

    @property
    def primitive(self) -> str:
        return self.encoding.primitive if self.encoding.kind != "composite" else "composite"


@dataclass
class Block:
    """A message or a repeating group: fixed fields, then groups, then var data."""

    name: str
    id: int
    block_length: int
    declared_block_length: int | None
    fields: list[Field]
    groups: list[Block]
    data: list[Field]
    dimension: Encoding | None = None   # groups only


class Schema:
    """A parsed SBE XML schema.  Raises ValueError for a document this reader cannot lay out."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.root = ET.parse(self.path).getroot()
        if self.root.tag != f"{{{SBE_NS}}}messageSchema":
            raise ValueError(f"root element is {self.root.tag}, not sbe:messageSchema")
        a = self.root.attrib
        self.package = a.get("package", "")
        self.id = int(a.get("id", "0"))
        self.version = int(a.get("version", "0"))
        self.byte_order = a.get("byteOrder", "littleEndian")
        self.header_type = a.get("headerType", "messageHeader")
        self.types: dict[str, Encoding] = {}
        self.problems: list[str] = []
        self._raw_types: dict[str, ET.Element] = {}
        for types in self.root.findall("types"):
            for el in types:
                name = el.attrib["name"]
                if name in self._raw_types:
                    self.problems.append(f"type {name} defined twice")
                self._raw_types[name] = el
        for name in self._raw_types:
            self._encoding(name)
        if self.header_type not in self.types:
            raise ValueError(f"header type {self.header_type} missing")
        self.header = self.types[self.header_type]
        self.messages: dict[int, Block] = {}
        for el in self.root.findall(f"{{{SBE_NS}}}message"):
            msg = self._block(el, is_group=False)
            if msg.id in self.messages:
                self.problems.append(f"template id {msg.id} used twice")
            self.messages[msg.id] = msg
        self._check()

    # -- parsing --------------------------------------------------------------------------------
    def _encoding(self, name: str) -> Encoding:
        if name in self.types:
            return self.types[name]
        if name in PRIMITIVES:                     # a primitive used directly as a field type
            return Encoding(name, "type", primitive=name)
        if name not in self._raw_types:
            raise ValueError(f"unknown type {name}")
        enc = self._element_encoding(self._raw_types[name])
        self.types[name] = enc
        return enc

    def _element_encoding(self, el: ET.Element) -> Encoding:
        a = el.attrib
        name = a["name"]
        if el.tag == "type":
            prim = a["primitiveType"]
            if prim not in PRIMITIVES:
                raise ValueError(f"type {name}: unknown primitive {prim}")
            return Encoding(name, "type", primitive=prim, length=int(a.get("length", "1")),
                            constant=a.get("presence") == "constant",
                            character_encoding=a.get("characterEncoding", ""))
        if el.tag in ("enum", "set"):
            base = a["encodingType"]
            prim = base if base in PRIMITIVES else self._encoding(base).primitive
            enc = Encoding(name, el.tag, primitive=prim)
            for v in el:
                text = (v.text or "").strip()
                if el.tag == "enum":
                    enc.values[v.attrib["name"]] = ord(text) if prim == "char" else int(text)
                else:
                    enc.choices[v.attrib["name"]] = int(text)
            return enc
        if el.tag == "composite":
            enc = Encoding(name, "composite")
            pos = 0
            for m in el:
                member = (self._encoding(m.attrib["name"]) if m.tag == "ref"
                          else self._element_encoding(m))
                off = int(m.attrib.get("offset", pos))
                if off < pos:
                    raise ValueError(f"composite {name}.{member.name}: offset {off} overlaps")
                enc.members.append((member, off))
                pos = off + member.size
            return enc
        raise ValueError(f"unknown type element <{el.tag}>")

    def _block(self, el: ET.Element, is_group: bool) -> Block:
        a = el.attrib
        fields: list[Field] = []
        groups: list[Block] = []
        data: list[Field] = []
        pos = 0
        order = 0   # SBE: fields, then groups, then data
        for child in el:
            if child.tag == "field":
                if order > 0:
                    self.problems.append(f"{a['name']}: field {child.attrib['name']} after a group/data")
                enc = self._encoding(child.attrib["type"])
                if child.attrib.get("presence") == "constant":
                    enc = Encoding(enc.name, enc.kind, enc.primitive, enc.length, True,
                                   enc.character_encoding, enc.values, enc.choices, enc.members)
                off = int(child.attrib.get("offset", pos))
                if off < pos:
                    raise ValueError(f"{a['name']}.{child.attrib['name']}: offset {off} overlaps")
                fields.append(Field(child.attrib["name"], int(child.attrib["id"]), enc, off))
                pos = off + enc.size
            elif child.tag == "group":
                if order > 1:
                    self.problems.append(f"{a['name']}: group {child.attrib['name']} after data")
                order = 1
                groups.append(self._block(child, is_group=True))
            elif child.tag == "data":
                order = 2
                enc = self._encoding(child.attrib["type"])
                data.append(Field(child.attrib["name"], int(child.attrib["id"]), enc, 0))
            else:
                raise ValueError(f"{a['name']}: unexpected <{child.tag}>")
        declared = int(a["blockLength"]) if "blockLength" in a else None
        if declared is not None and declared < pos:
            raise ValueError(f"{a['name']}: blockLength {declared} < fields' {pos}")
        dimension = self._encoding(a.get("dimensionType", "groupSizeEncoding")) if is_group else None
        return Block(a["name"], int(a["id"]), declared if declared is not None else pos, declared,
                     fields, groups, data, dimension)

    def _check(self) -> None:
        """SBE 1.0 rules a standard tool relies on; violations go to ``self.problems``."""
        p = self.problems
        for member in ("blockLength", "templateId", "schemaId", "version"):
            try:
                self.header.member(member)
            except KeyError:
                p.append(f"message header lacks {member}")
        names = [m.name for m in self.messages.values()]
        if len(names) != len(set(names)):
            p.append("message names not unique")
        for enc in self.types.values():
            lo, hi = PRIMITIVES[enc.primitive][2:] if enc.primitive else (0, 0)
            if enc.kind == "enum":
                if len(set(enc.values.values())) != len(enc.values):
                    p.append(f"enum {enc.name}: duplicate values")
                if any(not lo <= v <= hi for v in enc.values.values()):
                    p.append(f"enum {enc.name}: value outside {enc.primitive}")
            if enc.kind == "set" and any(not 0 <= b < 8 * PRIMITIVES[enc.primitive][0]
                                         for b in enc.choices.values()):
                p.append(f"set {enc.name}: choice bit outside {enc.primitive}")

        def walk(b: Block) -> None:
            seen_names = [f.name for f in b.fields] + [g.name for g in b.groups] + [d.name for d in b.data]
            ids = [f.id for f in b.fields] + [g.id for g in b.groups] + [d.id for d in b.data]
            if len(seen_names) != len(set(seen_names)):
                p.append(f"{b.name}: member names not unique")
            if len(ids) != len(set(ids)):
                p.append(f"{b.name}: member ids not unique")
            for g in b.groups:
                assert g.dimension is not None
                for member in ("blockLength", "numInGroup"):
                    try:
                        g.dimension.member(member)
                    except KeyError:
                        p.append(f"{b.name}.{g.name}: dimension lacks {member}")
                walk(g)
            for d in b.data:
                try:
                    d.encoding.member("length")
                    var, _ = d.encoding.member("varData")
                    if var.length != 0:
                        p.append(f"{b.name}.{d.name}: varData length must be 0")
                except KeyError:
                    p.append(f"{b.name}.{d.name}: data type lacks length/varData")

        for m in self.messages.values():
            walk(m)

    # -- layout ---------------------------------------------------------------------------------
    def layout(self, template_id: int) -> tuple[str, int, list[tuple[str, int, int, str]]]:
        """(name, blockLength, [(field, offset, size, primitive)]) of a message's root block."""
        m = self.messages[template_id]
        return m.name, m.block_length, _fields(m)

    def groups(self, template_id: int) -> list[tuple[str, int, list[tuple[str, int, int, str]]]]:
        return [(g.name, g.block_length, _fields(g)) for g in self.messages[template_id].groups]

    def var_data(self, template_id: int) -> list[tuple[str, str]]:
        return [(d.name, d.encoding.member("length")[0].primitive)
                for d in self.messages[template_id].data]

    # -- codec ----------------------------------------------------------------------------------
    @property
    def _endian(self) -> str:
        return "<" if self.byte_order == "littleEndian" else ">"

    def _put(self, enc: Encoding, buf: bytearray, off: int, value: Any) -> None:
        if enc.constant:
            return
        size, code = PRIMITIVES[enc.primitive][:2]
        if enc.kind == "type" and enc.primitive == "char" and enc.length > 1:
            raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
            if len(raw) > enc.length:
                raise ValueError(f"{enc.name}: {value!r} longer than {enc.length}")
            buf[off:off + enc.length] = raw.ljust(enc.length, b"\0")
            return
        if enc.length != 1:
            raise ValueError(f"{enc.name}: arrays other than char are not supported")
        struct.pack_into(self._endian + code, buf, off, value)

    def _get(self, enc: Encoding, buf: bytes, off: int) -> Any:
        size, code = PRIMITIVES[enc.primitive][:2]
        if enc.kind == "type" and enc.primitive == "char" and enc.length > 1:
            return bytes(buf[off:off + enc.length]).rstrip(b"\0").decode("ascii")
        return struct.unpack_from(self._endian + code, buf, off)[0]

    def _composite_put(self, enc: Encoding, buf: bytearray, off: int, values: dict[str, int]) -> None:
        for m, moff in enc.members:
            if m.name in values:
                self._put(m, buf, off + moff, values[m.name])

    def _composite_get(self, enc: Encoding, buf: bytes, off: int) -> dict[str, int]:
        return {m.name: self._get(m, buf, off + moff) for m, moff in enc.members
                if not m.constant and m.length == 1}

    def _encode_block(self, b: Block, values: dict[str, Any], out: bytearray) -> None:
        start = len(out)
        out += bytes(b.block_length)
        for f in b.fields:
            self._put(f.encoding, out, start + f.offset, values[f.name])
        for g in b.groups:
            assert g.dimension is not None
            entries = values[g.name]
            dim_at = len(out)
            out += bytes(g.dimension.size)
            self._composite_put(g.dimension, out, dim_at,
                                {"blockLength": g.block_length, "numInGroup": len(entries)})
            for e in entries:
                self._encode_block(g, e, out)
        for d in b.data:
            length, length_off = d.encoding.member("length")
            _, var_off = d.encoding.member("varData")
            raw = values[d.name]
            raw = raw.encode("ascii") if isinstance(raw, str) else bytes(raw)
            at = len(out)
            out += bytes(var_off)
            self._put(length, out, at + length_off, len(raw))
            out += raw

    def _decode_block(self, b: Block, buf: bytes, pos: int, block_length: int) -> tuple[dict[str, Any], int]:
        values: dict[str, Any] = {f.name: self._get(f.encoding, buf, pos + f.offset)
                                  for f in b.fields if not f.encoding.constant}
        pos += block_length
        for g in b.groups:
            assert g.dimension is not None
            dim = self._composite_get(g.dimension, buf, pos)
            pos += g.dimension.size
            entries = []
            for _ in range(dim["numInGroup"]):
                entry, _end = self._decode_block(g, buf, pos, dim["blockLength"])
                entries.append(entry)
                pos += dim["blockLength"]
            values[g.name] = entries
        for d in b.data:
            length, length_off = d.encoding.member("length")
            _, var_off = d.encoding.member("varData")
            n = self._get(length, buf, pos + length_off)
            pos += var_off
            values[d.name] = bytes(buf[pos:pos + n]).decode("ascii")
            pos += n
        return values, pos

    def encode(self, template_id: int, values: dict[str, Any]) -> bytes:
        """One message: the header, then the block, groups and var data.  No framing."""
        m = self.messages[template_id]
        out = bytearray(self.header.size)
        self._composite_put(self.header, out, 0, {"blockLength": m.block_length, "templateId": m.id,
                                                  "schemaId": self.id, "version": self.version})
        self._encode_block(m, values, out)
        return bytes(out)

    def decode(self, buf: bytes) -> tuple[int, dict[str, Any], int]:
        """(templateId, values, bytes used) of the message at the start of ``buf``.  Raises
        ValueError for another schema id or an unknown template."""
        h = self._composite_get(self.header, buf, 0)
        if h["schemaId"] != self.id:
            raise ValueError(f"schema id {h['schemaId']}")
        m = self.messages.get(h["templateId"])
        if m is None:
            raise ValueError(f"unknown template {h['templateId']}")
        values, end = self._decode_block(m, buf, self.header.size, h["blockLength"])
        return m.id, values, end


def _fields(b: Block) -> list[tuple[str, int, int, str]]:
    return [(f.name, f.offset, f.size, f.primitive) for f in b.fields]
