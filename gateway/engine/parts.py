"""The engine's own snapshot parts: the matching core and the "engine" part (sequencer
position, symbol definitions, session ids and accounts).  The other parts (outbound, risk,
events, session_state) are the components' own save/load pairs, registered by ``Engine``."""
from __future__ import annotations

import json

from gateway.engine.pipeline import Pipeline
from gateway.engine.sessions import SessionTable
from gateway.engine.symbols import SymbolCatalog
from matching.core import CoreCapture, MatchingCore


class CorePart:
    """Snapshot part "core": the books (``MatchingCore.snapshot``); loading replaces the
    pipeline's core (and the risk state's)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def save(self) -> bytes:
        return self.pipeline.core.snapshot()

    def capture(self) -> CoreCapture:
        """The books at this instant, copied while the core goes on (Snapshots.captures)."""
        return CoreCapture(self.pipeline.core)

    def load(self, data: bytes) -> None:
        self.pipeline.replace_core(MatchingCore.restore(data))


class EnginePart:
    """Snapshot part "engine": JSON ``{"version": 1, "next_seq", "last_ts", "symbols":
    [[name, tick, max_qty]] by id, "sessions": [[account, account_id, session name]] by id from 1,
    "accounts", "account_ids"}``."""

    def __init__(self, pipeline: Pipeline, catalog: SymbolCatalog, table: SessionTable) -> None:
        self.pipeline, self.catalog, self.table = pipeline, catalog, table

    def save(self) -> bytes:
        seqr, t = self.pipeline.sequencer, self.table
        return json.dumps({
            "version": 1, "next_seq": seqr.next_seq, "last_ts": seqr.last_ts,
            "symbols": [[n, *self.catalog.params[n]] for n in self.catalog.names],
            "sessions": [[t.account_of_session[sid], t.account_id_of_session[sid],
                          t.session_name_of[sid]] for sid in range(1, len(t.account_of_session))],
            "accounts": t.accounts, "account_ids": t.account_ids,
        }, separators=(",", ":")).encode()

    def load(self, data: bytes) -> None:
        """Raises ValueError for another version or an engine that has symbols or sessions
        already, KeyError or TypeError for a malformed document."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("engine part: not version 1")
        t = self.table
        if self.catalog.names or len(t.account_of_session) > 1:
            raise ValueError("engine part: restore into an engine that has symbols or sessions")
        seqr = self.pipeline.sequencer
        seqr.next_seq = int(doc["next_seq"])
        seqr.last_ts = int(doc["last_ts"])
        for sym_id, (name, tick, max_qty) in enumerate(doc["symbols"]):
            self.catalog.register(sym_id, str(name), int(tick), int(max_qty))
        for sid, (account, account_id, *name) in enumerate(doc["sessions"], start=1):
            # a snapshot written before sessions had names has pairs: every session a default one
            t.register(sid, str(account), int(account_id), str(name[0]) if name else "")
        accounts = {str(k): int(v) for k, v in doc["accounts"].items()}
        account_ids = {str(k): int(v) for k, v in doc["account_ids"].items()}
        # in place: the session table's containers are shared
        t.accounts.clear()
        t.accounts.update(accounts)
        t.account_ids.clear()
        t.account_ids.update(account_ids)
