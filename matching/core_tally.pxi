# EventTally: a C-level consumer of the events ring, for benchmarks and tests.
# Included by matching/core.pyx.

cdef class EventTally:
    """A cheap C-level consumer for benchmarks and tests: counts events by type, fills and
    filled quantity, and canceled events by reason, without building Python objects."""

    cdef uint64_t by_type[16]
    cdef uint64_t cancel_by_reason[16]
    cdef readonly uint64_t events
    cdef readonly uint64_t fills
    cdef readonly uint64_t fill_qty

    def drain(self, SpscRing events not None) -> int:
        """Consume every available record of an Event ring; returns how many."""
        cdef uint64_t n, t, k
        cdef const Event *ev
        if events.slot_size != sizeof(Event):
            raise ValueError("not an Event ring")
        with nogil:
            n = events.available()
            t = events.read_pos()
            for k in range(n):
                ev = <const Event *>events.slot(t + k)
                self.by_type[ev.type & 15] += 1
                if ev.type == EVT_FILL:
                    self.fill_qty += ev.qty
                elif ev.type == EVT_CANCELED:
                    self.cancel_by_reason[ev.reason & 15] += 1
            events.consume(n)
            self.events += n
            self.fills = self.by_type[<int>EVT_FILL]
        return n

    def count(self, int event_type) -> int:
        """Events seen of one EventType."""
        return self.by_type[event_type & 15]

    def canceled(self, int reason) -> int:
        """EVT_CANCELED events seen with one CancelReason."""
        return self.cancel_by_reason[reason & 15]
