# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The symbol table of the order path: symbol name <-> uint32 symbol id.

On the wire a symbol is 8 bytes, NUL- or space-padded (``char symbol[8]`` in every block of
protocol/schema/hftgw-v1.xml); ``symbol_key`` (symbols.pxd) turns them into one uint64 with the
padding cleared, which is what the table hashes, so the decoder looks symbols up in C without the
GIL.  Symbol ids index every per-symbol array of the matching core and the risk layer.
"""
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from matching.records cimport UNKNOWN_SYMBOL_ID

__all__ = ["SymbolTable", "UNKNOWN_SYMBOL", "symbol_wire"]

#: symbol id of a name that is not in the table (as matching.records.UNKNOWN_SYMBOL)
UNKNOWN_SYMBOL = <uint32_t>UNKNOWN_SYMBOL_ID


def symbol_wire(name) -> bytes:
    """The 8 NUL-padded wire bytes of a symbol name.  Raises TypeError (not a str), ValueError
    (not ASCII, > 8 bytes)."""
    if not isinstance(name, str):
        raise TypeError(f"symbol must be a str, not {type(name).__name__}")
    raw = name.encode("ascii")
    if len(raw) > 8:
        raise ValueError(f"symbol {name!r} is longer than 8 bytes")
    return raw.ljust(8, b"\0")


cdef class SymbolTable:
    """Symbol name <-> uint32 symbol id (the index in ``names``), for the order path.

    names: distinct ASCII names of 1 to 8 characters, without NUL and not ending in a space
    (on the wire they are NUL- or space-padded to 8 bytes).  Raises ValueError otherwise.
    ``add`` appends a symbol at run time (the next id).  Lookups of the raw 8 wire bytes run in
    C (open addressing) without the GIL.
    """

    def __cinit__(self, names):
        names = list(names)
        self._names = []
        self.count = 0
        self._alloc(16, 16)
        for name in names:
            self.add(name)

    cdef int _alloc(self, uint64_t cap, uint32_t id_cap) except -1:
        # (Re)build the hash with ``cap`` slots (power of two) and room for ``id_cap`` ids.
        cdef uint64_t *keys = <uint64_t *>calloc(cap, sizeof(uint64_t))
        cdef uint32_t *ids = <uint32_t *>calloc(cap, sizeof(uint32_t))
        cdef uint64_t *by_id = <uint64_t *>calloc(id_cap + 1, sizeof(uint64_t))
        cdef uint32_t i
        if keys == NULL or ids == NULL or by_id == NULL:
            free(keys)
            free(ids)
            free(by_id)
            raise MemoryError()
        if self.keys_by_id != NULL:
            memcpy(by_id, self.keys_by_id, self.count * sizeof(uint64_t))
        free(self.slot_keys)
        free(self.slot_ids)
        free(self.keys_by_id)
        self.slot_keys = keys
        self.slot_ids = ids
        self.keys_by_id = by_id
        self.id_cap = id_cap
        self.mask = cap - 1
        self.shift = 64
        while (<uint64_t>1 << (64 - self.shift)) < cap:
            self.shift -= 1
        for i in range(self.count):
            self._insert(self.keys_by_id[i], i)
        return 0

    def add(self, name) -> int:
        """Give ``name`` the next symbol id and return it.  Raises ValueError for a bad or
        duplicate name, MemoryError."""
        cdef uint64_t k
        cdef bytes raw
        if not isinstance(name, str) or not name or "\0" in name or name.endswith(" "):
            raise ValueError(f"bad symbol name {name!r}")
        raw = symbol_wire(name)
        k = symbol_key(raw)
        if self.lookup_key(k) != UNKNOWN_SYMBOL_ID:
            raise ValueError(f"duplicate symbol {name!r}")
        if 2 * (<uint64_t>self.count + 1) > self.mask + 1 or self.count + 1 > self.id_cap:
            self._alloc(2 * (self.mask + 1), 2 * self.id_cap)
        self._insert(k, self.count)
        self.keys_by_id[self.count] = k
        self._names.append(name)
        self.count += 1
        return self.count - 1

    cdef void _insert(self, uint64_t k, uint32_t symbol_id) noexcept:
        cdef uint64_t i = (k * <uint64_t>0x9E3779B97F4A7C15) >> self.shift
        while self.slot_keys[i] != 0:
            i = (i + 1) & self.mask
        self.slot_keys[i] = k
        self.slot_ids[i] = symbol_id

    def __dealloc__(self):
        free(self.slot_keys)
        free(self.slot_ids)
        free(self.keys_by_id)

    def __len__(self):
        return self.count

    @property
    def names(self) -> list:
        return list(self._names)

    def lookup(self, symbol) -> int:
        """Symbol id of a name (str) or of wire bytes (at most 8, NUL or space padded);
        UNKNOWN_SYMBOL (0xFFFFFFFF) when absent."""
        cdef bytes raw
        if isinstance(symbol, str):
            try:
                raw = symbol_wire(symbol)
            except ValueError:
                return <uint32_t>UNKNOWN_SYMBOL_ID
        else:
            raw = bytes(symbol)
            if len(raw) > 8:
                return <uint32_t>UNKNOWN_SYMBOL_ID
            raw = raw.ljust(8, b"\0")
        return self.lookup_raw(raw)

    def name(self, uint32_t symbol_id) -> str:
        """The name of a symbol id.  Raises IndexError for an id outside the table."""
        if symbol_id >= self.count:
            raise IndexError(symbol_id)
        return self._names[symbol_id]
