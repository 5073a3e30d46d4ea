"""The symbols this partition serves: ids from the journal, never from the config order.

``recover`` replays the journal's CMD_SYMBOL_ADD records (``register``), then ``apply_symbols``
journals the config's new or changed ones, so a symbol keeps its id across restarts and
reloads whatever order the config lists them in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.config.schema import Config, SymbolConfig, symbol_risk
from gateway.engine.pipeline import Pipeline
from gateway.risk.pretrade import RiskEngine
from matching.records import UNKNOWN_SYMBOL, pack_symbol_add
from protocol.codec import SymbolTable


@dataclass(slots=True)
class SymbolChanges:
    """What ``Engine.apply_symbols`` did: names added (new ids), names whose tick or max_qty
    changed, and names served (ids are permanent) that the config no longer lists."""

    added: list[str]
    updated: list[str]
    unlisted: list[str]


class SymbolCatalog:
    """names: symbol id -> name (shared, by reference, with the fills sink, the market data
    and the book pages); params: name -> (tick in 1e-4 price units, max_qty in lots);
    table: the decoder's name -> id table.  Every definition also reaches the outbound encoder
    and the risk state."""

    def __init__(self, cfg: Config, pipeline: Pipeline, risk: RiskEngine) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.risk = risk
        self.names: list[str] = []
        self.params: dict[str, tuple[int, int]] = {}
        self.table = SymbolTable([])

    def register(self, sym_id: int, name: str, tick: int, max_qty: int) -> None:
        """Define (sym_id == the number of symbols) or redefine symbol ``sym_id`` from a
        journal record or a snapshot.  Raises ValueError for an id out of order."""
        names = self.names
        if sym_id == len(names):
            self.table.add(name)
            self.pipeline.outbound.add_symbol(name)
            names.append(name)
        elif sym_id > len(names) or names[sym_id] != name:
            raise ValueError(f"journal symbol definition out of order: id {sym_id} {name!r} "
                             f"with {len(names)} symbols known")
        self.params[name] = (tick, max_qty)
        # the risk state's per-symbol arrays follow the core's books (the configured risk
        # settings of a new symbol; a redefinition changes its tick only)
        conf = next((s for s in self.cfg.symbols if s.name == name), None)
        settings: dict[str, Any] = symbol_risk(conf) if conf is not None else {}
        self.risk.define_symbol(sym_id, {**settings, "name": name, "tick": tick})

    def apply_symbols(self, symbols: list[SymbolConfig]) -> SymbolChanges:
        """Make the served symbols match ``symbols``: a new name gets the next symbol id and an
        existing one with another tick or max_qty is redefined, each through a journaled
        CMD_SYMBOL_ADD, so ids survive restarts whatever the config order.  Symbols served but
        no longer listed stay (ids and resting orders are permanent); they are returned in
        ``unlisted``.  Raises OSError when the journal cannot be written."""
        changes = SymbolChanges([], [], [])
        listed = set()
        for s in symbols:
            listed.add(s.name)
            old = self.params.get(s.name)
            if old == (s.tick, s.max_qty):
                continue
            sym_id = self.table.lookup(s.name) if old is not None else len(self.names)
            self.register(sym_id, s.name, s.tick, s.max_qty)
            self.pipeline.inbound_push(pack_symbol_add(sym_id, s.name, s.tick, s.max_qty,
                                                       time.time_ns()))
            (changes.updated if old is not None else changes.added).append(s.name)
        if changes.added or changes.updated:
            self.pipeline.pump()
        changes.unlisted = [n for n in self.names if n not in listed]
        return changes

    def apply_symbol_risk(self, old: list[SymbolConfig], new: list[SymbolConfig]) -> list[str]:
        """A config reload: symbols served whose risk settings (max_order_qty, max_notional,
        reference_price, price bands) differ between ``old`` and ``new`` get the new ones (an
        admin change of the same limit is replaced).  Returns their names."""
        before = {s.name: symbol_risk(s) for s in old}
        out = []
        for s in new:
            settings = symbol_risk(s)
            sym_id = self.table.lookup(s.name)
            if sym_id != UNKNOWN_SYMBOL and s.name in before and before[s.name] != settings:
                self.risk.configure_symbol(sym_id, settings)
                out.append(s.name)
        return out
