"""The gateway's engine: the order path, sessions, symbols, snapshots and the start, as parts
(see facade.py) behind ``Engine``; what other modules import is exported here."""
from gateway.engine.errors import JournalBehindSnapshot, LegacyJournalError, SnapshotMismatch
from gateway.engine.facade import Engine, account_lookup
from gateway.engine.pipeline import MATCH_SLICE, Pipeline, SessionWriter
from gateway.engine.recovery import RecoveryStats
from gateway.engine.sessions import SESSION_ATTACHED, SESSION_COD, Sessions, SessionTable
from gateway.engine.snapshots import Snapshots, SnapshotStats
from gateway.engine.stats import EngineStats
from gateway.engine.symbols import SymbolCatalog, SymbolChanges

__all__ = [
    "MATCH_SLICE", "SESSION_ATTACHED", "SESSION_COD", "Engine", "EngineStats",
    "JournalBehindSnapshot", "LegacyJournalError", "Pipeline", "RecoveryStats", "SessionTable",
    "SessionWriter", "Sessions", "SnapshotMismatch", "SnapshotStats", "Snapshots",
    "SymbolCatalog", "SymbolChanges", "account_lookup",
]
