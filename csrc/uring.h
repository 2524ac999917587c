/* Member writes through io_uring: the trio thread queues buffered writes and goes on;
 * the kernel completes them (inline or in its io-wq threads) and signals an eventfd
 * that trio watches. No Python thread, no GIL hand-off per request. */
#ifndef FUSERAID_URING_H
#define FUSERAID_URING_H

#include <stdint.h>

typedef struct fr_ring fr_ring;

typedef struct {
    int fd;
    uint32_t len;
    uint64_t off;
    uint64_t tag;
    const void *buf;
} fr_op;

typedef struct {
    uint64_t tag;
    int32_t res;
} fr_done;

/* A ring of `entries` slots with an eventfd registered for completions; NULL and
 * *err = errno when io_uring is unavailable (old kernel, io_uring_disabled, seccomp). */
fr_ring *fr_ring_open(unsigned entries, int *err);
int fr_ring_eventfd(fr_ring *ring);
void fr_ring_close(fr_ring *ring);
/* Queue up to n writes (no syscall); returns how many were queued (fewer when the
 * submission queue is full). Each queued write completes exactly once, after a
 * fr_ring_submit. */
int fr_ring_write(fr_ring *ring, const fr_op *ops, unsigned n);
/* Hand every queued write to the kernel (one io_uring_enter); >= 0 or -errno (the
 * writes stay queued and the next call retries). */
int fr_ring_submit(fr_ring *ring);
/* Harvest up to max completions without waiting; returns how many. */
unsigned fr_ring_reap(fr_ring *ring, fr_done *out, unsigned max);

#endif
