# Included by outbound.pyx: the BookSnapshot message, from an EVT_BOOK_SNAPSHOT record and the
# EVT_BOOK_LEVEL records after it in the events ring.

# A BookSnapshot frame must stay within MAX_FRAME: levels beyond this (bids first) are left out.
cdef size_t MAX_SNAPSHOT_LEVELS = (
    (MAX_FRAME - SOFH_SIZE - SBE_HEADER_SIZE - sizeof(BookSnapshotBlock) - 2 * GROUP_SIZE_SIZE)
    // sizeof(BookLevelEntry))


cdef char *_write_group(char *p, SpscRing events, uint64_t first, uint64_t n) noexcept nogil:
    # one BookSnapshot group: groupSizeEncoding + n entries from the EVT_BOOK_LEVEL records at
    # ring positions first .. first+n-1; returns the end of the group
    cdef const Event *lv
    cdef BookLevelEntry *e
    cdef GroupSize *g = <GroupSize *>p
    cdef uint64_t i
    g.block_length = sizeof(BookLevelEntry)
    g.num_in_group = <uint16_t>n
    p += GROUP_SIZE_SIZE
    for i in range(n):
        lv = <const Event *>events.slot(first + i)
        e = <BookLevelEntry *>p
        e.price = lv.price
        e.size = lv.qty
        e.order_count = lv.count
        p += sizeof(BookLevelEntry)
    return p


cdef void _book_snapshot(Outbound o, SpscRing events, uint64_t pos,
                         bint with_levels) noexcept nogil:
    # pos: the EVT_BOOK_SNAPSHOT record; its bid then ask EVT_BOOK_LEVEL records follow it
    cdef const Event *ev = <const Event *>events.slot(pos)
    cdef uint64_t n_bids = ev.count if with_levels else 0
    cdef uint64_t n_asks = ev.count2 if with_levels else 0
    cdef uint64_t send_bids = n_bids, send_asks = n_asks, seq
    cdef BookSnapshotBlock *b
    cdef char *p
    o.events_by_type[<int>EVT_BOOK_SNAPSHOT] += 1
    o.events_by_type[<int>EVT_BOOK_LEVEL] += n_bids + n_asks
    if send_bids > MAX_SNAPSHOT_LEVELS:
        send_bids = MAX_SNAPSHOT_LEVELS
    if send_asks > MAX_SNAPSHOT_LEVELS - send_bids:
        send_asks = MAX_SNAPSHOT_LEVELS - send_bids
    seq = o._number(ev.session_id)
    b = <BookSnapshotBlock *>o._reserve(
        ev.session_id, TPL_BOOK_SNAPSHOT, sizeof(BookSnapshotBlock),
        2 * GROUP_SIZE_SIZE + (send_bids + send_asks) * sizeof(BookLevelEntry))
    if b == NULL:
        return
    fill_book_snapshot(<char *>b, ev, seq, o.symbols.key_of(ev.symbol_id))
    p = _write_group(<char *>b + sizeof(BookSnapshotBlock), events, pos + 1, send_bids)
    _write_group(p, events, pos + 1 + n_bids, send_asks)
