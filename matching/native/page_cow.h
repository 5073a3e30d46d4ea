/* Copy-on-write capture of one memory range, page by page (hftgw issue 12: a snapshot of the
 * matching core must not stop the event loop).
 *
 * The pages fully inside the range are made read-only.  A write to one of them traps
 * (SIGSEGV, SEGV_ACCERR): the handler copies the page's old content to the shadow buffer and
 * makes it writable again, so the writer goes on after a few microseconds.  The owner copies
 * the other pages in bounded steps (hftgw_cow_step) between batches of work.  When every page
 * is copied, the shadow holds the range exactly as it was when the capture began, while the
 * live range was never blocked for longer than one page copy.  The partial pages at both ends
 * (shared with other allocations, which the kernel may write into: read(2) would fail with
 * EFAULT on a read-only page) are copied at once and never protected.
 *
 * Per-page states are atomic so that a writer on another thread than the stepper is safe.
 * Faults outside every registered range go to the handler that was installed before
 * (faulthandler's, or the default action).
 */
#ifndef HFTGW_PAGE_COW_H
#define HFTGW_PAGE_COW_H

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HFTGW_COW_SLOTS 64

typedef struct {
    const char *src;         /* the captured range */
    size_t len;
    char *shadow;            /* its copy, len bytes (an anonymous mapping of shadow_len) */
    size_t shadow_len;
    char *pbase;             /* first protected page */
    size_t npages;
    size_t page;
    size_t cursor;           /* next page the stepper looks at */
    unsigned char *state;    /* per page: 0 protected, 1 being copied, 2 copied (writable) */
    int slot;                /* index in hftgw_cow_regions, -1 when not registered */
} hftgw_cow;

static hftgw_cow *hftgw_cow_regions[HFTGW_COW_SLOTS];
static struct sigaction hftgw_cow_prev;

static void hftgw_cow_copy_page(hftgw_cow *r, size_t i)
{
    /* the caller owns page i (state 1) */
    char *p = r->pbase + i * r->page;
    memcpy(r->shadow + (p - r->src), p, r->page);
    __atomic_store_n(&r->state[i], 2, __ATOMIC_RELEASE);
}

static void hftgw_cow_claim_copy(hftgw_cow *r, size_t i)
{
    /* page i copied, by this caller or by the one that claimed it first */
    unsigned char expect = 0;
    if (__atomic_compare_exchange_n(&r->state[i], &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        hftgw_cow_copy_page(r, i);
    else
        while (__atomic_load_n(&r->state[i], __ATOMIC_ACQUIRE) != 2)
            ;
}

static int hftgw_cow_rescue(hftgw_cow *r)
{
    /* mprotect of one page or run failed (each isolated writable page is a mapping of its
     * own: vm.max_map_count): copy every page left and make the whole range writable in one
     * call, which merges the mappings again */
    size_t i;
    for (i = 0; i < r->npages; i++)
        hftgw_cow_claim_copy(r, i);
    return mprotect(r->pbase, r->npages * r->page, PROT_READ | PROT_WRITE);
}

static void hftgw_cow_take(hftgw_cow *r, size_t i)
{
    /* make page i writable, its old content copied first (async-signal-safe) */
    hftgw_cow_claim_copy(r, i);
    if (mprotect(r->pbase + i * r->page, r->page, PROT_READ | PROT_WRITE) != 0
            && hftgw_cow_rescue(r) != 0)
        signal(SIGSEGV, SIG_DFL);   /* cannot go on: the fault repeats and ends the process */
}

static void hftgw_cow_handler(int sig, siginfo_t *si, void *ctx)
{
    int k;
    if (si->si_code == SEGV_ACCERR) {
        char *a = (char *)si->si_addr;
        for (k = 0; k < HFTGW_COW_SLOTS; k++) {
            hftgw_cow *r = __atomic_load_n(&hftgw_cow_regions[k], __ATOMIC_ACQUIRE);
            if (r != NULL && a >= r->pbase && a < r->pbase + r->npages * r->page) {
                hftgw_cow_take(r, (size_t)(a - r->pbase) / r->page);
                return;
            }
        }
    }
    if (hftgw_cow_prev.sa_flags & SA_SIGINFO) {
        if (hftgw_cow_prev.sa_sigaction != NULL) {
            hftgw_cow_prev.sa_sigaction(sig, si, ctx);
            return;
        }
    } else if (hftgw_cow_prev.sa_handler != SIG_DFL && hftgw_cow_prev.sa_handler != SIG_IGN) {
        hftgw_cow_prev.sa_handler(sig);
        return;
    }
    /* no handler before ours: the faulting instruction runs again and gets the default action */
    signal(sig, SIG_DFL);
}

static int hftgw_cow_install(void)
{
    /* (again) at every capture: faulthandler.enable() may have replaced ours since */
    struct sigaction cur, sa;
    if (sigaction(SIGSEGV, NULL, &cur) != 0)
        return -1;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == hftgw_cow_handler)
        return 0;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = hftgw_cow_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    hftgw_cow_prev = cur;
    return sigaction(SIGSEGV, &sa, NULL);
}

/* Start capturing [src, src + len): the shadow is allocated, the partial pages copied, the
 * others protected.  Returns NULL (errno set) when memory, a free slot or mprotect fails. */
static hftgw_cow *hftgw_cow_begin(const char *src, size_t len)
{
    hftgw_cow *r = (hftgw_cow *)calloc(1, sizeof(hftgw_cow));
    uintptr_t lo, hi;
    int k;
    if (r == NULL)
        return NULL;
    r->src = src;
    r->len = len;
    r->slot = -1;
    r->page = (size_t)sysconf(_SC_PAGESIZE);
    /* 4 KiB pages: each costs a fault on its first write (the copy runs ~3x the memcpy), but
     * huge pages (MADV_HUGEPAGE) made a fault compact memory now and then: one step took
     * 6-9 ms instead of ~0.6 (bench/snapshot_stall_bench.py) */
    r->shadow_len = len ? len : 1;
    r->shadow = (char *)mmap(NULL, r->shadow_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                             -1, 0);
    if (r->shadow == MAP_FAILED)
        r->shadow = NULL;
    lo = ((uintptr_t)src + r->page - 1) & ~(uintptr_t)(r->page - 1);
    hi = ((uintptr_t)src + len) & ~(uintptr_t)(r->page - 1);
    r->npages = hi > lo ? (hi - lo) / r->page : 0;
    r->pbase = r->npages ? (char *)lo : (char *)src;
    r->state = (unsigned char *)calloc(r->npages ? r->npages : 1, 1);
    if (r->shadow == NULL || r->state == NULL || hftgw_cow_install() != 0)
        goto fail;
    if (r->npages == 0) {
        memcpy(r->shadow, src, len);
        return r;
    }
    memcpy(r->shadow, src, (size_t)(r->pbase - src));
    memcpy(r->shadow + (hi - (uintptr_t)src), (const char *)hi, (uintptr_t)src + len - hi);
    for (k = 0; k < HFTGW_COW_SLOTS; k++) {
        hftgw_cow *none = NULL;
        if (__atomic_compare_exchange_n(&hftgw_cow_regions[k], &none, r, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            r->slot = k;
            break;
        }
    }
    if (r->slot < 0 || mprotect(r->pbase, r->npages * r->page, PROT_READ) != 0)
        goto fail;
    return r;
fail:
    if (r->slot >= 0)
        __atomic_store_n(&hftgw_cow_regions[r->slot], NULL, __ATOMIC_RELEASE);
    if (r->shadow != NULL)
        munmap(r->shadow, r->shadow_len);
    free(r->state);
    free(r);
    return NULL;
}

/* Copy up to max_pages not yet copied pages (runs of them, one mprotect a run); returns the
 * pages left to copy (0: the shadow is complete and nothing is protected any more). */
static size_t hftgw_cow_step(hftgw_cow *r, size_t max_pages)
{
    size_t done = 0, start, i;
    while (r->cursor < r->npages && done < max_pages) {
        start = r->cursor;
        while (r->cursor < r->npages && done < max_pages) {
            unsigned char expect = 0;
            if (!__atomic_compare_exchange_n(&r->state[r->cursor], &expect, 1, 0, __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE))
                break;
            r->cursor++;
            done++;
        }
        if (r->cursor > start) {
            memcpy(r->shadow + (r->pbase + start * r->page - r->src), r->pbase + start * r->page,
                   (r->cursor - start) * r->page);
            for (i = start; i < r->cursor; i++)
                __atomic_store_n(&r->state[i], 2, __ATOMIC_RELEASE);
            if (mprotect(r->pbase + start * r->page, (r->cursor - start) * r->page,
                         PROT_READ | PROT_WRITE) != 0) {
                r->cursor = r->npages;
                if (hftgw_cow_rescue(r) != 0)
                    abort();    /* pages left read-only that the core will write: no way on */
            }
        } else {
            /* taken by a writer: wait for its copy, which also makes it writable */
            while (__atomic_load_n(&r->state[r->cursor], __ATOMIC_ACQUIRE) != 2)
                ;
            r->cursor++;
        }
    }
    return r->npages - r->cursor;
}

/* Stop: every page writable again, the region unregistered.  The shadow stays (owner frees
 * it with hftgw_cow_free). */
static void hftgw_cow_end(hftgw_cow *r)
{
    if (r->slot < 0)
        return;
    if (r->cursor < r->npages && mprotect(r->pbase, r->npages * r->page, PROT_READ | PROT_WRITE) != 0)
        abort();        /* read-only pages the core will write, and no handler for them */
    __atomic_store_n(&hftgw_cow_regions[r->slot], NULL, __ATOMIC_RELEASE);
    r->slot = -1;
}

static void hftgw_cow_free(hftgw_cow *r)
{
    if (r == NULL)
        return;
    hftgw_cow_end(r);
    if (r->shadow != NULL)
        munmap(r->shadow, r->shadow_len);
    free(r->state);
    free(r);
}

#endif
