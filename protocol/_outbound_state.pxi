# Included by outbound.pyx: what a restart keeps of the encoder (Outbound.export_state /
# import_state), every session's last seqNum.

#: version of ``Outbound.export_state``
OUTBOUND_STATE_VERSION = 1


cdef bytes _export_state(Outbound o):
    cdef uint32_t i, n = 0
    cdef char *w
    for i in range(o.max_sessions):
        if o.sessions[i].last_seq:
            n = i + 1
    out = bytearray(16 + 8 * <size_t>n)
    w = out
    memcpy(w, <const char *>b"HFTGWOUT", 8)
    st32(w + 8, OUTBOUND_STATE_VERSION)
    st32(w + 12, n)
    for i in range(n):
        memcpy(w + 16 + 8 * <size_t>i, &o.sessions[i].last_seq, 8)
    return bytes(out)


cdef void _import_state(Outbound o, data) except *:
    cdef const unsigned char[::1] v = memoryview(data).cast("B")
    cdef uint32_t i, n, version
    if v.shape[0] < 16 or memcmp(&v[0], <const char *>b"HFTGWOUT", 8) != 0:
        raise ValueError("outbound state: bad magic or truncated")
    version = ld32(<const char *>&v[8])
    n = ld32(<const char *>&v[12])
    if version != OUTBOUND_STATE_VERSION:
        raise ValueError(f"outbound state: version {version}, this build reads "
                         f"{OUTBOUND_STATE_VERSION}")
    if <size_t>v.shape[0] != 16 + 8 * <size_t>n:
        raise ValueError("outbound state: length does not match its header")
    if n > o.max_sessions:
        raise ValueError(f"outbound state: {n} sessions, max_sessions is {o.max_sessions}")
    for i in range(n):
        memcpy(&o.sessions[i].last_seq, &v[16 + 8 * <size_t>i], 8)
