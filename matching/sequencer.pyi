"""Type stub of the compiled matching.sequencer (see sequencer.pyx for the documentation)."""
from typing_extensions import Buffer, disjoint_base

from matching.ring import SpscRing

@disjoint_base
class Sequencer:
    next_seq: int
    last_ts: int
    def __init__(self, next_seq: int = 1, last_ts: int = 0) -> None: ...
    def stamp(self, ring: SpscRing, n: int) -> int: ...
    def counts(self) -> dict[int, int]: ...
    def observe(self, records: Buffer,
                symbols: list[tuple[int, str, int, int]] | None = None
                ) -> list[tuple[int, str, int, str]]: ...
