"""Build-time generator of the per-template Cython code of the wire protocol (run by setup.py,
never committed), from ``protocol/schema/hftgw-v1.xml``, the one source of truth of the format.

* ``codec_blocks.pxi`` (included by codec.pxd): the schema id and version, ``TPL_<NAME>`` for
  every template id and ``MAX_TEMPLATE_ID``; one packed struct ``<Name>Block`` per message with
  fields, in schema order, snake_case, of the C type of the field's primitive type (the host is
  little-endian, checked at import of protocol.codec, so a packed struct IS the wire layout);
  ``BookLevelEntry``, the entry of every repeating group.
* ``framing_layout.pxi`` (included by framing.pyx): ``LAYOUT``, ``GROUPS``, ``VAR_DATA`` and
  ``SINCE_VERSION``, with every offset and size measured on the compiled structs, so that the
  import-time checks of framing.pyx and tests/protocol/test_schema.py (an independent reader of
  the XML) test what the C compiler made of this generator's output.
* ``decoder_commands.pxi`` (included by decoder.pyx): ``command_fields``, the stores from an
  order-entry block into the Command record (matching/records.pxd), straight-line per template.

Raises KeyError / ValueError at build time for a field type or an order-entry field this file
has no rule for, or for groups whose entries differ.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

SCHEMA = Path(__file__).parent / "schema" / "hftgw-v1.xml"
_NS = {"sbe": "http://fixprotocol.io/2016/sbe"}
_C_TYPES = {"char": "char", "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t",
            "uint64": "uint64_t", "int64": "int64_t"}

#: every repeating group of the schema is a list of book levels: one entry struct serves them all
GROUP_ENTRY = "BookLevelEntry"

#: order-entry template -> the CommandType decode_orders writes for it (the other C->S templates
#: go to the session layer)
COMMANDS = {"NewOrder": "CMD_NEW", "CancelOrder": "CMD_CANCEL", "ReplaceOrder": "CMD_REPLACE",
            "MassCancel": "CMD_MASS_CANCEL", "BookQuery": "CMD_BOOK_QUERY"}
#: order-entry block field -> [(Command field, C expression of the block's value `{v}`)].  The
#: symbol becomes symbol_id in decode_orders; `stp_default` is the session's default StpMode.
TARGETS: dict[str, list[tuple[str, str]]] = {
    "clOrdId": [("cl_ord_id", "{v}")], "origClOrdId": [("orig_cl_ord_id", "{v}")],
    "requestId": [("cl_ord_id", "{v}"), ("orig_cl_ord_id", "{v}")],     # echoed by BookSnapshot
    "price": [("price", "{v}")], "orderQty": [("qty", "{v}")], "side": [("side", "{v}")],
    "ordType": [("ord_type", "{v}")], "timeInForce": [("tif", "{v}")], "flags": [("flags", "{v}")],
    "stpMode": [("stp", "{v} if {v} != 0 else stp_default")],          # 0 = the session default
    "stopPx": [("stop_price", "{v}")], "displayQty": [("display_qty", "{v}")],
    "scope": [("scope", "{v}")], "depth": [("depth", "{v}")], "symbol": [],
}
#: (template, field) -> what it fills instead of TARGETS[field]: a MassCancel's all-blank symbol
#: means every symbol (records.pxd: UNKNOWN_SYMBOL_ID with depth 1)
OVERRIDES = {("MassCancel", "symbol"): [("depth", "1 if blank_symbol else 0")]}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Schema:
    """What the generators need of the XML: messages in schema order, each field's primitive."""

    def __init__(self, path: Path = SCHEMA) -> None:
        self.root = ET.parse(path).getroot()
        types = self.root.find("types")
        assert types is not None
        self.primitive: dict[str, tuple[str, int]] = {}     # type name -> (primitive, length)
        for t in types:
            prim = t.get("primitiveType") or t.get("encodingType")
            if prim is not None:
                self.primitive[t.get("name", "")] = (prim, int(t.get("length", "1")))
        var = types.find("composite[@name='varStringEncoding']/type[@name='length']")
        assert var is not None
        self.var_length = var.get("primitiveType", "")
        self.messages = self.root.findall("sbe:message", _NS)

    def fields(self, node: ET.Element) -> list[tuple[str, str, int, int]]:
        """(name, primitive, array length, sinceVersion) of the block fields of a message or group."""
        out = []
        for f in node.findall("field"):
            prim, length = self.primitive[f.get("type", "")]
            out.append((f.get("name", ""), prim, length, int(f.get("sinceVersion", "0"))))
        return out

    def group_fields(self) -> list[tuple[str, str, int, int]]:
        """The block fields of the one entry layout every repeating group shares."""
        entries = {tuple(self.fields(g)) for m in self.messages for g in m.findall("group")}
        if len(entries) != 1:
            raise ValueError(f"repeating groups of different entries: {entries}")
        return list(entries.pop())


def _tpl(name: str) -> str:
    return "TPL_" + snake(name).upper()


def _struct(name: str, fields: list[tuple[str, str, int, int]]) -> list[str]:
    out = ["", f"ctypedef packed struct {name}:"]
    for fname, prim, length, since in fields:
        array = f"[{length}]" if length > 1 else ""
        note = f"    # since version {since}" if since > 1 else ""
        out.append(f"    {_C_TYPES[prim]} {snake(fname)}{array}{note}")
    return out


def render_blocks(schema: Schema) -> str:
    """codec_blocks.pxi: template ids and the packed struct of every block."""
    ids = [(m.get("name", ""), int(m.get("id", "0"))) for m in schema.messages]
    out = ["# Generated at build time by protocol/schemagen.py from protocol/schema/hftgw-v1.xml; do",
           "# not edit or commit.  Included by protocol/codec.pxd.",
           "from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t", "",
           "cdef enum:",
           f"    SBE_SCHEMA_ID = {schema.root.get('id')}",
           f"    SBE_SCHEMA_VERSION = {schema.root.get('version')}"]
    out += [f"    {_tpl(name)} = {tid}" for name, tid in ids]
    out.append(f"    MAX_TEMPLATE_ID = {max(tid for _, tid in ids)}")
    for m in schema.messages:
        if m.findall("field"):
            out += _struct(m.get("name", "") + "Block", schema.fields(m))
    out += _struct(GROUP_ENTRY, schema.group_fields())
    return "\n".join(out) + "\n"


def _measured(var: str, fields: list[tuple[str, str, int, int]], indent: str) -> list[str]:
    return [f'{indent}_f("{name}", &{var}, &{var}.{snake(name)}, sizeof({var}.{snake(name)}), "{prim}"),'
            for name, prim, _, _ in fields]


def render_layout(schema: Schema) -> str:
    """framing_layout.pxi: the layout tables of framing.pyx (documented there)."""
    out = ["# Generated at build time by protocol/schemagen.py from protocol/schema/hftgw-v1.xml; do",
           "# not edit or commit.  Included by protocol/framing.pyx, after _f.",
           "from protocol.codec cimport *", "",
           f"cdef {GROUP_ENTRY} _entry"]
    table = ["LAYOUT = {"]
    groups, var_data, since_templates, since_fields = [], [], [], []
    for m in schema.messages:
        name, tpl, since = m.get("name", ""), _tpl(m.get("name", "")), int(m.get("sinceVersion", "0"))
        fields = schema.fields(m)
        if fields:
            var = "_" + snake(name)
            out.append(f"cdef {name}Block {var}")
            table += [f'    {tpl}: ("{name}", sizeof({name}Block), ['] + _measured(var, fields, " " * 8)
            table.append("    ]),")
        else:
            table.append(f'    {tpl}: ("{name}", 0, []),')
        gnames = [g.get("name", "") for g in m.findall("group")]
        if gnames:
            groups.append(f"    {tpl}: [" + ", ".join(
                f'("{g}", sizeof({GROUP_ENTRY}), _ENTRY_FIELDS)' for g in gnames) + "],")
        data = [d.get("name", "") for d in m.findall("data")]
        if data:
            var_data.append(f"    {tpl}: ["
                            + ", ".join(f'("{d}", "{schema.var_length}")' for d in data) + "],")
        if since > 1:
            since_templates.append(f"{tpl}: {since}")
        later = [f'"{f}": {v}' for f, _, _, v in fields if v > max(since, 1)]
        if later:
            since_fields.append(f"{tpl}: {{" + ", ".join(later) + "}")
    out += table + ["}", "_ENTRY_FIELDS = ["] + _measured("_entry", schema.group_fields(), " " * 4) + ["]"]
    out += ["GROUPS = {"] + groups + ["}", "VAR_DATA = {"] + var_data + ["}"]
    out += ["SINCE_VERSION = {", f'    "templates": {{{", ".join(since_templates)}}},',
            f'    "fields": {{{", ".join(since_fields)}}},', "}"]
    return "\n".join(out) + "\n"


def render_commands(schema: Schema) -> str:
    """decoder_commands.pxi: ``command_fields``, one branch of stores per order-entry template."""
    by_name = {m.get("name", ""): m for m in schema.messages}
    out = ["# Generated at build time by protocol/schemagen.py from protocol/schema/hftgw-v1.xml; do",
           "# not edit or commit.  Included by protocol/decoder.pyx.",
           "from libc.stdint cimport uint8_t, uint16_t",
           "from matching.records cimport Command, " + ", ".join(COMMANDS.values()),
           "from protocol.codec cimport " + ", ".join(
               [f"{name}Block" for name in COMMANDS] + [_tpl(name) for name in COMMANDS]),
           "", "",
           "cdef inline void command_fields(Command *c, const char *m, uint16_t tid, bint blank_symbol,",
           "                                uint8_t stp_default) noexcept nogil:"]
    out += [f"    cdef const {name}Block *{snake(name)}" for name in COMMANDS]
    for i, (name, cmd) in enumerate(COMMANDS.items()):
        var = snake(name)
        last = i == len(COMMANDS) - 1
        out.append(f"    else:  # {_tpl(name)}" if last else
                   f"    {'if' if i == 0 else 'elif'} tid == {_tpl(name)}:")
        out += [f"        {var} = <const {name}Block *>m", f"        c.type = {cmd}"]
        for field, _, _, _ in schema.fields(by_name[name]):
            for target, expr in OVERRIDES.get((name, field), TARGETS[field]):
                out.append(f"        c.{target} = {expr.format(v=f'{var}.{snake(field)}')}")
    return "\n".join(out) + "\n"


def write(directory: Path, schema_path: Path = SCHEMA) -> list[Path]:
    """Write the three .pxi files into ``directory``, each only when it differs (so an unchanged
    schema does not force a rebuild); returns their paths."""
    schema = Schema(schema_path)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, render in (("codec_blocks.pxi", render_blocks), ("framing_layout.pxi", render_layout),
                         ("decoder_commands.pxi", render_commands)):
        target, text = directory / name, render(schema)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    return written
