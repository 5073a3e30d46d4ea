/* Little-endian loads and stores at any alignment, for every layer's wire and file formats (SBE
 * blocks, journal frames, snapshots, COPY payloads); declared for Cython in byteorder.pxd.
 * x86-64 and aarch64 are little-endian like the formats, so each is one unaligned move after
 * inlining; memcpy keeps it defined behaviour (no type punning through a cast pointer).  One
 * macro makes every width, so the widths cannot drift apart. */
#ifndef HFTGW_BYTEORDER_H
#define HFTGW_BYTEORDER_H
#include <stdint.h>
#include <string.h>

#define HFTGW_LOAD_STORE(T, load, store)                                          \
    static inline T load(const char *p) { T v; memcpy(&v, p, sizeof v); return v; } \
    static inline void store(char *p, T v) { memcpy(p, &v, sizeof v); }

HFTGW_LOAD_STORE(uint16_t, hftgw_ld16, hftgw_st16)
HFTGW_LOAD_STORE(uint32_t, hftgw_ld32, hftgw_st32)
HFTGW_LOAD_STORE(uint64_t, hftgw_ld64, hftgw_st64)
HFTGW_LOAD_STORE(int64_t, hftgw_ldi64, hftgw_sti64)

#undef HFTGW_LOAD_STORE
#endif
