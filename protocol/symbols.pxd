# Symbol name <-> uint32 symbol id for the order path (protocol/symbols.pyx).
from libc.stdint cimport uint32_t, uint64_t

from matching.native.byteorder cimport ld64
from matching.records cimport UNKNOWN_SYMBOL_ID


cdef inline uint64_t symbol_key(const char *p) noexcept nogil:
    # The 8 symbol bytes as a little-endian integer with trailing NUL/space padding cleared, so
    # that "AAPL\0\0\0\0" and "AAPL    " map to the same key; all blank -> 0.
    cdef uint64_t k = ld64(p)
    cdef int i
    cdef uint64_t b
    for i in range(7, -1, -1):
        b = (k >> (8 * i)) & 0xFF
        if b != 0 and b != 0x20:
            break
        k &= ~((<uint64_t>0xFF) << (8 * i))
    return k


cdef class SymbolTable:
    cdef uint64_t *slot_keys       # open addressing, linear probing; key 0 = empty slot
    cdef uint32_t *slot_ids
    cdef uint64_t *keys_by_id      # symbol id -> key, i.e. the NUL-padded wire bytes
    cdef uint64_t mask
    cdef int shift
    cdef uint32_t id_cap           # ids keys_by_id has room for
    cdef readonly uint32_t count
    cdef list _names

    cdef int _alloc(self, uint64_t cap, uint32_t id_cap) except -1
    cdef void _insert(self, uint64_t k, uint32_t symbol_id) noexcept

    cdef inline uint32_t lookup_key(self, uint64_t k) noexcept nogil:
        cdef uint64_t i
        if k == 0:
            return UNKNOWN_SYMBOL_ID
        i = (k * <uint64_t>0x9E3779B97F4A7C15) >> self.shift
        while self.slot_keys[i] != 0:
            if self.slot_keys[i] == k:
                return self.slot_ids[i]
            i = (i + 1) & self.mask
        return UNKNOWN_SYMBOL_ID

    cdef inline uint32_t lookup_raw(self, const char *p) noexcept nogil:
        return self.lookup_key(symbol_key(p))

    cdef inline uint64_t key_of(self, uint32_t symbol_id) noexcept nogil:
        # the wire bytes of a symbol id; 0 (all NUL) for an id outside the table
        if symbol_id < self.count:
            return self.keys_by_id[symbol_id]
        return 0
