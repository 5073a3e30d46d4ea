# Little-endian loads and stores at any alignment, for every layer's wire and file formats (SBE
# blocks, journal frames, snapshots, COPY payloads).  x86-64 and aarch64 are little-endian like
# the formats, so each is one unaligned move after inlining; memcpy keeps it defined behaviour
# (no type punning through a cast pointer).
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline uint16_t ld16(const char *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline uint32_t ld32(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t ld64(const char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline int64_t ldi64(const char *p) noexcept nogil:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


cdef inline void st16(char *p, uint16_t v) noexcept nogil:
    memcpy(p, &v, 2)


cdef inline void st32(char *p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)


cdef inline void st64(char *p, uint64_t v) noexcept nogil:
    memcpy(p, &v, 8)


cdef inline void sti64(char *p, int64_t v) noexcept nogil:
    memcpy(p, &v, 8)
