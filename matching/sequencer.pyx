# cython: language_level=3, boundscheck=False, wraparound=False
"""The sequencer (DESIGN §1): stamps each command in the inbound ring with the next global
sequence number and a time that never goes backwards, so that the matcher, a pure function of
the sequenced stream, sees the same times on replay as it did live.
"""
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memset

from matching.records cimport CMD_SESSION_OPEN, CMD_SYMBOL_ADD, Command
from matching.ring cimport SpscRing


cdef class Sequencer:
    """Global command sequence (from 1) and time stamp state.

    next_seq: the seq the next command gets; last_ts: the newest stamp given (ns since epoch).
    """
    cdef public uint64_t next_seq
    cdef public uint64_t last_ts
    cdef uint64_t by_type[256]   # commands stamped, by CommandType (read at metrics scrape)

    def __init__(self, uint64_t next_seq=1, uint64_t last_ts=0):
        memset(self.by_type, 0, sizeof(self.by_type))
        self.next_seq = next_seq
        self.last_ts = last_ts

    def stamp(self, SpscRing ring, uint64_t n) -> int:
        """Stamp the first ``n`` unconsumed records of ``ring`` (96-byte Commands): seq in order,
        ts = max(receive time, previous stamp).  Returns the first seq given."""
        cdef uint64_t first = self.next_seq, pos = ring.read_pos(), k
        cdef Command *c
        if n > ring.available():
            raise ValueError("fewer records in the ring than asked to stamp")
        with nogil:
            for k in range(n):
                c = <Command *>ring.slot(pos + k)
                c.seq = self.next_seq
                self.next_seq += 1
                self.by_type[c.type] += 1
                if c.ts < self.last_ts:
                    c.ts = self.last_ts
                else:
                    self.last_ts = c.ts
        return first

    def counts(self) -> dict:
        """Commands stamped since start, by CommandType value (types never seen are absent)."""
        return {t: self.by_type[t] for t in range(256) if self.by_type[t]}

    def observe(self, const uint8_t[:] records, list symbols=None) -> list:
        """Take the state from already sequenced records (journal replay): afterwards the next
        command continues the sequence.  Returns the (session_id, account, account_id,
        session name) of every CMD_SESSION_OPEN among them, in order; when ``symbols`` is a
        list, appends to it the (symbol_id, name, tick, max_qty) of every CMD_SYMBOL_ADD.  Raises
        ValueError if the sequence has a gap."""
        cdef Py_ssize_t n = records.shape[0] // sizeof(Command), k
        cdef const Command *c
        opens = []
        for k in range(n):
            c = <const Command *>&records[k * sizeof(Command)]
            if c.seq != self.next_seq:
                raise ValueError(f"journal sequence gap: expected {self.next_seq}, found {c.seq}")
            self.next_seq = c.seq + 1
            if c.ts > self.last_ts:
                self.last_ts = c.ts
            if c.type == CMD_SESSION_OPEN:
                raw = bytes(records[k * sizeof(Command) + 32:k * sizeof(Command) + 64])
                name = bytes(records[k * sizeof(Command) + 64:k * sizeof(Command) + 80])
                opens.append((c.session_id, raw.rstrip(b"\0").decode("ascii"), c.account_id,
                              name.rstrip(b"\0").decode("ascii")))
            elif c.type == CMD_SYMBOL_ADD and symbols is not None:
                raw = (<const char *>&c.cl_ord_id)[:8]   # the name, NUL-padded (records.pxd)
                symbols.append((c.symbol_id, raw.rstrip(b"\0").decode("ascii", "replace"),
                                c.price, c.qty))
        return opens
