/* Acquire/release index access for the SPSC ring (DESIGN §1).  The producer publishes with a
 * release store of head after writing the slots; the consumer reads head with an acquire load
 * before reading them (and the mirror for tail), which is all an SPSC ring needs on x86-64 and
 * on weaker memory models alike. */
#ifndef HFTGW_RING_ATOMIC_H
#define HFTGW_RING_ATOMIC_H
#include <stdint.h>
static inline uint64_t hftgw_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void hftgw_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
#endif
