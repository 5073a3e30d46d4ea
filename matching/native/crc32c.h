/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as iSCSI RFC 3720 §B.4.
 *
 * Two implementations behind one entry point:
 *   - SSE4.2 `crc32` instruction, 8 bytes per step, chosen at run time when the CPU has it
 *     (the build stays portable: only this function is compiled for sse4.2);
 *   - slice-by-8 tables (8 KiB, built once by hftgw_crc32c_init) everywhere else.
 * Both are checked against each other and against the RFC vectors in tests/persistence/test_journal.py.
 *
 * hftgw_crc32c(crc, p, n) continues a running CRC: pass 0 to start, the previous result to
 * chain, exactly like the usual crc32c(data, value) libraries.
 */
#ifndef HFTGW_CRC32C_H
#define HFTGW_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint32_t hftgw_crc32c_table[8][256];
static int hftgw_crc32c_hw = -1;   /* -1 not initialised, 0 table, 1 SSE4.2 */

static uint32_t hftgw_crc32c_sw(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    /* slice-by-8 needs little-endian loads; byte-wise loop covers the unaligned head/tail */
    while (n && ((uintptr_t)p & 7)) {
        crc = hftgw_crc32c_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= crc;
        crc = hftgw_crc32c_table[7][w & 0xFF] ^
              hftgw_crc32c_table[6][(w >> 8) & 0xFF] ^
              hftgw_crc32c_table[5][(w >> 16) & 0xFF] ^
              hftgw_crc32c_table[4][(w >> 24) & 0xFF] ^
              hftgw_crc32c_table[3][(w >> 32) & 0xFF] ^
              hftgw_crc32c_table[2][(w >> 40) & 0xFF] ^
              hftgw_crc32c_table[1][(w >> 48) & 0xFF] ^
              hftgw_crc32c_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = hftgw_crc32c_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t hftgw_crc32c_sse42(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#define HFTGW_CRC32C_HAVE_SSE42 1
#else
#define HFTGW_CRC32C_HAVE_SSE42 0
#endif

/* Builds the tables and picks the implementation; call once before any other function
 * (the journal module does it at import).  force_sw != 0 keeps the table version, for tests. */
static void hftgw_crc32c_init(int force_sw)
{
    uint32_t i, k, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        hftgw_crc32c_table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = hftgw_crc32c_table[0][i];
        for (k = 1; k < 8; k++) {
            c = hftgw_crc32c_table[0][c & 0xFF] ^ (c >> 8);
            hftgw_crc32c_table[k][i] = c;
        }
    }
    hftgw_crc32c_hw = 0;
#if HFTGW_CRC32C_HAVE_SSE42
    if (!force_sw) {
        __builtin_cpu_init();
        hftgw_crc32c_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    }
#endif
}

static inline uint32_t hftgw_crc32c(uint32_t crc, const void *p, size_t n)
{
#if HFTGW_CRC32C_HAVE_SSE42
    if (hftgw_crc32c_hw == 1)
        return hftgw_crc32c_sse42(crc, (const unsigned char *)p, n);
#endif
    return hftgw_crc32c_sw(crc, (const unsigned char *)p, n);
}

#endif
