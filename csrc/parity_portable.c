/* Portable parity kernel: 64-bit SWAR for Horner's Q, byte tables for constant
 * multiplies, bytes for the tail. Also the tail handler of the vector kernels. */
#include <string.h>

#include "parity_impl.h"

static inline uint64_t ld(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline void st(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Multiply 8 field elements by 2: shift, and reduce bytes whose top bit fell off. */
static inline uint64_t mul2_64(uint64_t v)
{
    uint64_t top = v & 0x8080808080808080ULL;
    uint64_t mask = (top << 1) - (top >> 7); /* 0xff in each byte that had bit 7 */
    return ((v << 1) & 0xfefefefefefefefeULL) ^ (mask & 0x1d1d1d1d1d1d1d1dULL);
}

static inline uint8_t mul2_8(uint8_t v) { return (uint8_t)((v << 1) ^ (v & 0x80 ? 0x1d : 0)); }

static void xor_portable(uint8_t *dst, const uint8_t *const *s, int n, size_t off, size_t len)
{
    size_t o = off, end = off + len;
    for (; o + 8 <= end; o += 8) {
        uint64_t x = 0;
        for (int k = 0; k < n; k++)
            x ^= ld(s[k] + o);
        st(dst + o, x);
    }
    for (; o < end; o++) {
        uint8_t x = 0;
        for (int k = 0; k < n; k++)
            x ^= s[k][o];
        dst[o] = x;
    }
}

/* P and Q of 8 bytes at offset o (Horner from the highest exponent down). */
static inline void horner64(const uint8_t *const *s, int n, size_t o, uint64_t *p, uint64_t *q)
{
    uint64_t pp = 0, qq = 0;
    if (n > 0)
        pp = qq = ld(s[n - 1] + o);
    for (int i = n - 2; i >= 0; i--) {
        qq = mul2_64(qq);
        if (s[i]) {
            uint64_t d = ld(s[i] + o);
            pp ^= d;
            qq ^= d;
        }
    }
    *p = pp;
    *q = qq;
}

static inline void horner8(const uint8_t *const *s, int n, size_t o, uint8_t *p, uint8_t *q)
{
    uint8_t pp = 0, qq = 0;
    if (n > 0)
        pp = qq = s[n - 1][o];
    for (int i = n - 2; i >= 0; i--) {
        qq = mul2_8(qq);
        if (s[i]) {
            pp ^= s[i][o];
            qq ^= s[i][o];
        }
    }
    *p = pp;
    *q = qq;
}

static void pq_portable(const uint8_t *const *s, int n, uint8_t *p, uint8_t *q,
                        const struct fr_gfc *m2, size_t off, size_t len)
{
    (void)m2;
    size_t o = off, end = off + len;
    for (; o + 8 <= end; o += 8) {
        uint64_t pp, qq;
        horner64(s, n, o, &pp, &qq);
        if (p)
            st(p + o, pp);
        if (q)
            st(q + o, qq);
    }
    for (; o < end; o++) {
        uint8_t pp, qq;
        horner8(s, n, o, &pp, &qq);
        if (p)
            p[o] = pp;
        if (q)
            q[o] = qq;
    }
}

static inline uint8_t mulc(const struct fr_gfc *m, uint8_t v)
{
    return m->lo[v & 15] ^ m->hi[v >> 4];
}

static inline void combine(const uint8_t *p, const uint8_t *q, const struct fr_gfc *a,
                           const struct fr_gfc *b, uint8_t *x, uint8_t *y, size_t o,
                           uint8_t pp, uint8_t qq)
{
    uint8_t qxy = q[o] ^ qq;
    if (p) {
        uint8_t pxy = p[o] ^ pp;
        uint8_t dx = mulc(a, pxy) ^ mulc(b, qxy);
        x[o] = dx;
        y[o] = pxy ^ dx;
    } else {
        x[o] = mulc(b, qxy);
    }
}

static void rec_portable(const uint8_t *const *s, int n, const uint8_t *p, const uint8_t *q,
                         const struct fr_gfc *m2, const struct fr_gfc *a,
                         const struct fr_gfc *b, uint8_t *x, uint8_t *y, size_t off,
                         size_t len)
{
    (void)m2;
    size_t o = off, end = off + len;
    for (; o + 8 <= end; o += 8) {
        uint64_t pp, qq;
        uint8_t pb[8], qb[8];
        horner64(s, n, o, &pp, &qq);
        memcpy(pb, &pp, 8); /* byte k of the word is buffer byte o + k on any endianness */
        memcpy(qb, &qq, 8);
        for (int k = 0; k < 8; k++)
            combine(p, q, a, b, x, y, o + k, pb[k], qb[k]);
    }
    for (; o < end; o++) {
        uint8_t pp, qq;
        horner8(s, n, o, &pp, &qq);
        combine(p, q, a, b, x, y, o, pp, qq);
    }
}

static int always(void) { return 1; }

const struct fr_ops fr_ops_portable = {"portable", always, xor_portable, pq_portable,
                                       rec_portable};
