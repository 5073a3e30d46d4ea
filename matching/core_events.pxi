# Event emission into the events ring.
# Included by matching/core.pyx (one module: the hot path stays one translation unit).

cdef inline Event *_emit(MatchingCore core, const Command *c, uint8_t typ) except NULL nogil:
    # Next free event slot, zeroed, with the fields every event copies from its command.
    cdef Event *ev
    if core._ev_room == 0:
        _refill(core)
    ev = <Event *>core._evq.slot(core._ev_pos)
    core._ev_pos += 1
    core._ev_room -= 1
    # every field written once, by name: a memset of 128 bytes compiles to `rep stos` with
    # plain -O3, which costs more than the whole store sequence
    ev.seq = c.seq
    ev.ts = c.ts
    ev.session_id = c.session_id
    ev.symbol_id = c.symbol_id
    ev.type = typ
    ev.side = 0
    ev.reason = 0
    ev.contra_session = 0
    ev.cl_ord_id = 0
    ev.order_id = 0
    ev.price = 0
    ev.qty = 0
    ev.leaves = 0
    ev.ref = 0
    ev.contra_cl_ord_id = 0
    ev.contra_order_id = 0
    ev.contra_leaves = 0
    ev.count = 0
    ev.count2 = 0
    ev.ord_type = 0
    ev.tif = 0
    ev.flags = 0
    ev.pad0 = 0
    ev.pad1 = 0
    ev.recv_ts = c.ts
    return ev


cdef inline void _order_fields(Event *ev, const Order *o) noexcept nogil:
    ev.session_id = o.session_id
    ev.symbol_id = _sym(o)
    ev.side = o.side
    ev.ord_type = o.ord_type
    ev.tif = o.tif
    ev.order_id = _oid(o)
    ev.price = o.price


cdef int _refill(MatchingCore self) except -1 nogil:
    # The events ring has no slot left for the current command: publish what we wrote,
    # and if the consumer has not freed anything meanwhile, ask the owner to drain.
    self._evq.publish(self._ev_pos - self._evq.write_pos())
    self._ev_room = self._evq.free_slots()
    if self._ev_room != 0:
        return 0
    with gil:
        cb = self.on_events_full
        if cb is None:
            raise RuntimeError("events ring full in the middle of a command and on_events_full is None")
        cb()
    self._ev_room = self._evq.free_slots()
    if self._ev_room == 0:
        with gil:
            raise RuntimeError("on_events_full() did not free any slot of the events ring")
    return 0


cdef inline Event *_refusal(MatchingCore self, const Command *c, uint8_t typ, uint16_t reason,
                            uint64_t cl_ord_id) except NULL nogil:
    # a reject of type typ echoing the request's fields
    cdef Event *ev = _emit(self, c, typ)
    ev.side = c.side
    ev.ord_type = c.ord_type
    ev.tif = c.tif
    ev.reason = reason
    ev.cl_ord_id = cl_ord_id
    ev.price = c.price
    ev.qty = c.qty
    return ev


cdef int _reject(MatchingCore self, const Command *c, uint16_t reason, uint64_t cl_ord_id) except -1 nogil:
    cdef Event *ev = _refusal(self, c, EVT_REJECTED, reason, cl_ord_id)
    if c.symbol_id == UNKNOWN_SYMBOL_ID:
        ev.ref = c.reserved        # the name sent, which the symbol id cannot give back
    return 0


cdef int _cancel_reject(MatchingCore self, const Command *c, uint16_t reason, Order *o) except -1 nogil:
    # o: the live order the request named, NULL when there is none
    cdef Event *ev = _refusal(self, c, EVT_CANCEL_REJECTED, reason, c.cl_ord_id)
    ev.ref = c.orig_cl_ord_id
    if o != NULL:
        ev.order_id = _oid(o)
        ev.leaves = o.leaves + _hidden(self, <uint32_t>(o - self.pool), o)
    return 0


cdef int _canceled(MatchingCore self, const Command *c, const Order *o, uint64_t qty, uint16_t reason,
                   uint64_t cl_ord_id, uint64_t leaves) except -1 nogil:
    # cl_ord_id: the request of o's session that caused it, else o's own ClOrdID;
    # leaves > 0: a partial cancel (self-trade prevention DECREMENT)
    cdef Event *ev = _emit(self, c, EVT_CANCELED)
    _order_fields(ev, o)
    ev.reason = reason
    ev.cl_ord_id = cl_ord_id
    ev.ref = o.cl_ord_id
    ev.qty = qty
    ev.leaves = leaves
    return 0
