"""docs/protocol-vectors.json is what the server's codec really reads and writes, and the hex
blocks of docs/*.md that name a vector show exactly those bytes.

Each vector: name, message, templateId, direction, framing ("sofh" = a TCP frame, "none" = the
bare SBE message of a WebSocket binary message), fields (the schema's camelCase names; groups as
lists of objects, var data as a string) and hex.  The XML reading in tests/support/sbe_xml.py decodes the
same bytes independently of the codec."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
from support.sbe_xml import Schema

import matching.records as records
from gateway.config.schema import DEV_JWT_SECRET, Config
from gateway.security.auth import ROLES
from protocol import codec
from protocol.messages import MESSAGE_TYPES, BookLevel, Message

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
VECTORS_FILE = DOCS / "protocol-vectors.json"
DATA = json.loads(VECTORS_FILE.read_text())
VECTORS: dict[str, dict[str, Any]] = {v["name"]: v for v in DATA["vectors"]}
SCHEMA = Schema(ROOT / "protocol" / "schema" / "hftgw-v1.xml")
#: a hex block in the docs: the marker line, then a fenced block
BLOCK = re.compile(r"^<!-- vector: ([\w.]+) -->\n```\n(.*?)\n```", re.M | re.S)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def message_fields(msg: Message) -> dict[str, Any]:
    """The message as a vector's ``fields``: block fields, then groups, then var data, by the
    schema's names (the codec's LAYOUT order)."""
    tid = type(msg).TEMPLATE_ID
    out: dict[str, Any] = {name: getattr(msg, snake(name)) for name, *_ in codec.LAYOUT[tid][2]}
    for gname, _, gfields in codec.GROUPS.get(tid, []):
        out[gname] = [{f[0]: getattr(e, snake(f[0])) for f in gfields} for e in getattr(msg, gname)]
    for vname, _ in codec.VAR_DATA.get(tid, []):
        out[vname] = getattr(msg, snake(vname))
    return out


def build_message(template_id: int, fields: dict[str, Any]) -> Message:
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, list):
            value = [BookLevel(**{snake(k): x for k, x in e.items()}) for e in value]
        kwargs[snake(name)] = value
    return MESSAGE_TYPES[template_id](**kwargs)


def sbe_bytes(v: dict[str, Any]) -> bytes:
    """The SBE message of a vector without its SOFH; checks the SOFH of a framed one."""
    raw = bytes.fromhex(v["hex"])
    if v["framing"] == "none":
        return raw
    assert v["framing"] == "sofh", v["name"]
    assert int.from_bytes(raw[:4], "big") == len(raw) and raw[4:6] == b"\xeb\x50", v["name"]
    return raw[6:]


def block_hex(text: str) -> str:
    """The bytes of a doc hex block: on each line, the hex pairs before the first run of two
    spaces (what follows is the explanation)."""
    out: list[str] = []
    for line in text.splitlines():
        head = re.split(r" {2,}", line.strip(), maxsplit=1)[0]
        pairs = head.split(" ")
        assert all(re.fullmatch(r"[0-9a-f]{2}", p) for p in pairs), f"not a hex line: {line!r}"
        out.extend(pairs)
    return "".join(out)


def test_the_file_is_well_formed() -> None:
    assert (DATA["schemaId"], DATA["version"]) == (codec.SCHEMA_ID, codec.SCHEMA_VERSION)
    names = [v["name"] for v in DATA["vectors"]]
    assert len(names) == len(set(names))
    for v in DATA["vectors"]:
        assert set(v) == {"name", "message", "templateId", "direction", "framing", "note", "fields", "hex"}
        assert MESSAGE_TYPES[v["templateId"]].__name__ == v["message"], v["name"]
        assert v["direction"] in ("C->S", "S->C")
    # server-to-client, a repeating group, var data, market data without SOFH: all covered
    tids = {v["templateId"] for v in DATA["vectors"]}
    assert {1, 2, 4, 5, 10, 20, 22, 27, 40, 43} <= tids
    assert all(n in VECTORS for n in DATA["transcript"])


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_decodes_to_its_fields(name: str) -> None:
    v = VECTORS[name]
    raw = bytes.fromhex(v["hex"])
    if v["framing"] == "sofh":
        msgs, used = codec.decode_frames(raw)
        assert used == len(raw) and len(msgs) == 1
        msg = msgs[0]
    else:
        msg = codec.decode_message(raw)
    assert type(msg).TEMPLATE_ID == v["templateId"]
    assert message_fields(msg) == v["fields"]
    # the same bytes read by the independent XML reading of the schema
    tid, values, used = SCHEMA.decode(sbe_bytes(v))
    assert (tid, values, used) == (v["templateId"], v["fields"], len(sbe_bytes(v)))


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_fields_encode_to_the_vector(name: str) -> None:
    v = VECTORS[name]
    msg = build_message(v["templateId"], v["fields"])
    assert codec.encode(msg, sofh=v["framing"] == "sofh").hex() == v["hex"]
    assert SCHEMA.encode(v["templateId"], v["fields"]).hex() == sbe_bytes(v).hex()


def test_transcript_is_one_session_in_order() -> None:
    steps = [VECTORS[n] for n in DATA["transcript"]]
    assert [(s["direction"], s["message"]) for s in steps] == [
        ("C->S", "Login"), ("S->C", "LoginAccepted"), ("C->S", "NewOrder"), ("S->C", "OrderAccepted"),
        ("S->C", "Execution"), ("S->C", "Heartbeat"), ("C->S", "Logout"), ("S->C", "Logout")]
    login, accepted, order, ack, fill = (s["fields"] for s in steps[:5])
    assert accepted["nextSeqNum"] == login["nextExpectedSeqNum"] == ack["seqNum"] == 1
    assert fill["seqNum"] == 2
    assert ack["clOrdId"] == fill["clOrdId"] == order["clOrdId"]
    assert ack["orderId"] == fill["orderId"]
    assert fill["lastQty"] == order["orderQty"] and fill["leavesQty"] == 0
    assert fill["lastPx"] <= order["price"]  # a buy fills at the resting price or better


def test_transcript_token_carries_the_documented_claims() -> None:
    token = VECTORS["session.login"]["fields"]["token"]
    # signed with the development secret (the default config); it expired after its hour
    assert Config().jwt_secret == DEV_JWT_SECRET
    claims = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    doc = (DOCS / "protocol.md").read_text()
    assert '{"alg":"HS256","typ":"JWT"}' in doc
    assert json.dumps(claims, separators=(",", ":")) in doc.replace("\n", "")
    assert claims["exp"] - claims["iat"] == 3600 and claims["sub"] == "bob"


def test_jwt_section_names_every_key_and_role() -> None:
    doc = (DOCS / "protocol.md").read_text()
    head = doc.index("## Login token (JWT)")
    section = doc[head:doc.index("\n## ", head + 1)]
    for key in ("jwt_algorithm", "jwt_secret", "jwt_public_key_file", "jwt_issuer", "jwt_audience",
                "jwt_leeway_s", "jwt_roles_claim"):
        assert f"`{key}`" in section, key
        assert key in msgspec.structs.asdict(Config()), key
    for role in ROLES:
        assert f"`{role}`" in section, role
    for claim in ("sub", "exp", "nbf", "iat", "iss", "aud", "role", "roles"):
        assert f"`{claim}`" in section, claim


def doc_blocks() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for page in sorted(DOCS.glob("*.md")):
        for m in BLOCK.finditer(page.read_text()):
            out.append((page.name, m.group(1), m.group(2)))
    return out


def test_docs_name_vectors() -> None:
    named = {(page, name) for page, name, _ in doc_blocks()}
    # the session transcript and the group example are in the protocol page, market data in its own
    assert {("protocol.md", n) for n in DATA["transcript"]} <= named
    assert ("protocol.md", "book_snapshot") in named and ("protocol.md", "new_order") in named
    assert ("market-data.md", "md.bbo") in named and ("market-data.md", "md.depth_update") in named


def test_every_hex_block_of_the_docs_names_a_vector() -> None:
    """A block of hex bytes (fenced or indented) without a vector marker could drift unseen."""
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        fenced = re.findall(r"^(.*)\n```\n(?:[0-9a-f]{2} ){2}", text, re.M)
        assert all(m.startswith("<!-- vector: ") for m in fenced), page.name
        assert not re.search(r"^ {4,}(?:[0-9a-f]{2} ){4}", text, re.M), f"{page.name}: an indented hex block"


@pytest.mark.parametrize("page,name,text", [pytest.param(*b, id=f"{b[0]}:{b[1]}") for b in doc_blocks()])
def test_doc_hex_block_is_the_vector(page: str, name: str, text: str) -> None:
    assert name in VECTORS, f"{page} names an unknown vector {name}"
    assert block_hex(text) == VECTORS[name]["hex"], f"{page}: the hex block of {name} is not the vector"


def test_protocol_doc_reason_codes_are_the_records_enums() -> None:
    """The three-pair table of reason codes in docs/protocol.md ("Types") lists exactly the
    values of RejectReason, CancelReason and LoginRejectReason (first word of each cell)."""
    doc = (DOCS / "protocol.md").read_text()
    head = doc.index("| RejectReason (uint16) |")
    table = doc[head:doc.index("\n\n", head)].splitlines()[2:]
    got: list[dict[int, str]] = [{}, {}, {}]
    for row in table:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        for i in range(3):
            code, text = cells[2 * i], cells[2 * i + 1]
            if code:
                got[i][int(code)] = text.split(" ")[0]
    want = [{e.value: e.name.removeprefix(prefix) for e in enum}
            for enum, prefix in ((records.RejectReason, "REJ_"), (records.CancelReason, "CXL_"),
                                 (records.LoginRejectReason, "LOGIN_"))]
    assert got == want
