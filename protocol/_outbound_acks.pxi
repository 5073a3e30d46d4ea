# Included by outbound.pyx: the order-to-ack latency histogram (Outbound.acks_written,
# Outbound.latency).  An acknowledgement counts as sent when the transport has written the
# session's bytes, not when it is encoded: the time from the read of the request to the write
# of its answer covers matching, the message store and the socket write.  drain notes each
# acknowledgement it buffers in its session's runs; the engine calls acks_written once per
# session per tick, right after that session's write, and the runs are observed then.

# Upper bounds (ns, inclusive as Prometheus `le`); +Inf is implied.  2e-4 is the threshold of the
# HftgwOrderAckLatencyP99High alert (deployments/prometheus/hftgw-alerts.yml): a quantile
# interpolated between two bounds that straddle it could not say which side of it p99 is.
cdef uint64_t LATENCY_BOUNDS_NS[N_LATENCY_BOUNDS]
_BOUNDS_S = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
             5e-2, 0.1, 0.25, 0.5, 1.0, 2.5)
assert len(_BOUNDS_S) == N_LATENCY_BOUNDS
for _i, _b in enumerate(_BOUNDS_S):
    LATENCY_BOUNDS_NS[_i] = <uint64_t>round(_b * 1e9)

# a session's run buffer larger than this is freed when its runs are observed, not kept
cdef uint32_t KEEP_ACK_RUNS = 4096


cdef inline void _note_ack(Outbound o, const Event *ev, bint live) noexcept nogil:
    # ev's acknowledgement has just been buffered for ev.session_id (its _reserve succeeded)
    cdef SessionOut *s
    cdef AckRun *runs
    cdef uint32_t cap
    if not live or ev.recv_ts == 0:
        return
    s = &o.sessions[ev.session_id]
    if s.n_acks and s.acks[s.n_acks - 1].recv_ts == ev.recv_ts:
        s.acks[s.n_acks - 1].count += 1
        return
    if s.n_acks == s.acks_cap:
        cap = s.acks_cap * 2 if s.acks_cap else 16
        runs = <AckRun *>realloc(s.acks, cap * sizeof(AckRun))
        if runs == NULL:
            o.out_of_memory = True
            return
        s.acks = runs
        s.acks_cap = cap
    s.acks[s.n_acks].recv_ts = ev.recv_ts
    s.acks[s.n_acks].count = 1
    s.n_acks += 1


cdef void _observe_runs(Outbound o, SessionOut *s, uint64_t written_ns) noexcept nogil:
    cdef uint32_t i
    cdef uint64_t d, ts
    cdef int b
    if written_ns:
        for i in range(s.n_acks):
            ts = s.acks[i].recv_ts
            d = written_ns - ts if written_ns > ts else 0
            b = 0
            while b < N_LATENCY_BOUNDS and d > LATENCY_BOUNDS_NS[b]:
                b += 1
            o.latency_counts[b] += s.acks[i].count
            o.latency_sum_ns += d * s.acks[i].count
    s.n_acks = 0
    if s.acks_cap > KEEP_ACK_RUNS:
        free(s.acks)
        s.acks = NULL
        s.acks_cap = 0


cdef tuple _latency(Outbound o):
    cdef int i
    cdef uint64_t total = 0
    counts = []
    for i in range(N_LATENCY_BOUNDS + 1):
        total += o.latency_counts[i]
        counts.append(total)
    return list(_BOUNDS_S) + [float("inf")], counts, o.latency_sum_ns / 1e9
