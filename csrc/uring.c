#include "uring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

struct fr_ring {
    struct io_uring ring;
    int efd;
    int unsent;
    unsigned sqe_flags;
};

fr_ring *fr_ring_open(unsigned entries, int *err)
{
    fr_ring *r = calloc(1, sizeof(*r));
    if (!r) {
        *err = ENOMEM;
        return NULL;
    }
    int rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) {
        *err = -rc;
        free(r);
        return NULL;
    }
    /* FUSERAID_URING_ASYNC=1 (an experiment, docs/PERFORMANCE.md): IOSQE_ASYNC sends
     * each write straight to an io-wq thread, skipping the non-blocking attempt that
     * a buffered write on ext4 always fails. */
    const char *async = getenv("FUSERAID_URING_ASYNC");
    r->sqe_flags = async && strcmp(async, "1") == 0 ? IOSQE_ASYNC : 0;
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->efd < 0) {
        *err = errno;
        io_uring_queue_exit(&r->ring);
        free(r);
        return NULL;
    }
    rc = io_uring_register_eventfd(&r->ring, r->efd);
    if (rc < 0) {
        *err = -rc;
        close(r->efd);
        io_uring_queue_exit(&r->ring);
        free(r);
        return NULL;
    }
    return r;
}

int fr_ring_eventfd(fr_ring *r) { return r->efd; }

void fr_ring_close(fr_ring *r)
{
    if (!r)
        return;
    io_uring_unregister_eventfd(&r->ring);
    close(r->efd);
    io_uring_queue_exit(&r->ring);
    free(r);
}

int fr_ring_write(fr_ring *r, const fr_op *ops, unsigned n)
{
    unsigned queued = 0;
    while (queued < n) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        if (!sqe)
            break;
        const fr_op *op = &ops[queued];
        io_uring_prep_write(sqe, op->fd, op->buf, op->len, op->off);
        io_uring_sqe_set_data64(sqe, op->tag);
        if (r->sqe_flags)
            io_uring_sqe_set_flags(sqe, r->sqe_flags);
        queued++;
    }
    if (queued)
        r->unsent = 1;
    return (int)queued;
}

int fr_ring_submit(fr_ring *r)
{
    if (!r->unsent)
        return 0;
    /* A failed io_uring_enter (EAGAIN, EINTR) leaves the SQEs in the shared ring and
     * the next call sends them. The caller bounds the writes in flight by the ring
     * size, so the CQ cannot overflow. */
    int rc = io_uring_submit(&r->ring);
    if (rc >= 0)
        r->unsent = 0;
    return rc;
}

unsigned fr_ring_reap(fr_ring *r, fr_done *out, unsigned max)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&r->ring, head, cqe) {
        if (n == max)
            break;
        out[n].tag = io_uring_cqe_get_data64(cqe);
        out[n].res = cqe->res;
        n++;
    }
    io_uring_cq_advance(&r->ring, n);
    return n;
}
