# Little-endian loads and stores at any alignment (byteorder.h: why memcpy, and why one move).
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t


cdef extern from "byteorder.h" nogil:
    uint16_t ld16 "hftgw_ld16" (const char *p)
    uint32_t ld32 "hftgw_ld32" (const char *p)
    uint64_t ld64 "hftgw_ld64" (const char *p)
    int64_t ldi64 "hftgw_ldi64" (const char *p)
    void st16 "hftgw_st16" (char *p, uint16_t v)
    void st32 "hftgw_st32" (char *p, uint32_t v)
    void st64 "hftgw_st64" (char *p, uint64_t v)
    void sti64 "hftgw_sti64" (char *p, int64_t v)
