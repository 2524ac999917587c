/* Dispatcher and GF(2^8) field helpers for the parity kernel.
 *
 * The implementation is chosen on first use: FUSERAID_KERNEL=<name> if set and
 * runnable, else the fastest one this CPU supports. Callers may switch with
 * fr_impl_select (tests and benchmarks do, to exercise every implementation). */
#include <stdlib.h>
#include <string.h>

#include "parity.h"
#include "parity_impl.h"

#define FR_MAX_BLOCKS 255 /* exponents live in Z/255 */

/* Fastest first. */
static const struct fr_ops *const ALL_OPS[] = {
    &fr_ops_avx512_gfni,
    &fr_ops_avx512bw,
    &fr_ops_avx2,
    &fr_ops_ssse3,
    &fr_ops_portable,
};
#define N_OPS (sizeof(ALL_OPS) / sizeof(ALL_OPS[0]))

/* A data race here is benign: every thread computes and stores the same pointer. */
static const struct fr_ops *volatile current;

static const struct fr_ops *find(const char *name)
{
    for (size_t i = 0; i < N_OPS; i++)
        if (strcmp(ALL_OPS[i]->name, name) == 0)
            return ALL_OPS[i]->supported() ? ALL_OPS[i] : NULL;
    return NULL;
}

static const struct fr_ops *ops(void)
{
    const struct fr_ops *o = current;
    if (o)
        return o;
    __builtin_cpu_init();
    const char *env = getenv("FUSERAID_KERNEL");
    if (env && *env)
        o = find(env);
    for (size_t i = 0; !o && i < N_OPS; i++)
        if (ALL_OPS[i]->supported())
            o = ALL_OPS[i];
    current = o;
    return o;
}

const char *fr_impl_name(void) { return ops()->name; }

int fr_impl_supported(const char *name)
{
    __builtin_cpu_init();
    return find(name) != NULL;
}

int fr_impl_select(const char *name)
{
    __builtin_cpu_init();
    const struct fr_ops *o = find(name);
    if (!o)
        return -1;
    current = o;
    return 0;
}

/* Log/antilog tables of the generator 2, built once when the library loads. */
static uint8_t gf_exp[510];
static uint8_t gf_log[256];

__attribute__((constructor)) static void gf_tables(void)
{
    unsigned v = 1;
    for (int e = 0; e < 255; e++) {
        gf_exp[e] = gf_exp[e + 255] = (uint8_t)v;
        gf_log[v] = (uint8_t)e;
        v <<= 1;
        if (v & 0x100)
            v ^= 0x11d;
    }
}

uint8_t fr_gf_mul(uint8_t a, uint8_t b)
{
    return a && b ? gf_exp[gf_log[a] + gf_log[b]] : 0;
}

uint8_t fr_gf_pow2(int e)
{
    e %= 255; /* 2 generates the whole multiplicative group, order 255 */
    return gf_exp[e < 0 ? e + 255 : e];
}

uint8_t fr_gf_inv(uint8_t a)
{
    return a ? gf_exp[(255 - gf_log[a]) % 255] : 0; /* 0 has no inverse; callers avoid it */
}

static void gfc_init(struct fr_gfc *m, uint8_t c)
{
    /* c * x is linear in x's bits: c * 2^j for j = 0..7 is all we need. */
    uint8_t bit[8];
    bit[0] = c;
    for (int j = 1; j < 8; j++)
        bit[j] = (uint8_t)((bit[j - 1] << 1) ^ (bit[j - 1] & 0x80 ? 0x1d : 0));
    for (int k = 0; k < 16; k++) {
        uint8_t lo = 0, hi = 0;
        for (int j = 0; j < 4; j++)
            if (k & (1 << j)) {
                lo ^= bit[j];
                hi ^= bit[j + 4];
            }
        m->lo[k] = lo;
        m->hi[k] = hi;
    }
    /* Affine matrix: byte 7-i of the qword holds the input bits feeding output bit i. */
    uint64_t aff = 0;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++)
            if ((bit[j] >> i) & 1)
                aff |= (uint64_t)1 << (8 * (7 - i) + j);
    m->aff = aff;
}

/* Multiply-by-2 is used by every Q computation; build it once. */
static struct fr_gfc gfc_mul2;

__attribute__((constructor)) static void init_mul2(void) { gfc_init(&gfc_mul2, 2); }

static const struct fr_gfc *mul2(void) { return &gfc_mul2; }

/* Number of blocks after dropping trailing NULLs, so s[n-1] is non-NULL when n > 0. */
static int trim(const uint8_t *const *s, int n)
{
    while (n > 0 && !s[n - 1])
        n--;
    return n;
}

static int overlap(const uint8_t *a, const uint8_t *b, size_t len)
{
    return a && b && len && a < b + len && b < a + len;
}

/* Outputs must be disjoint from each other and either identical to or disjoint from
 * every input: kernels read a position's inputs before writing its outputs. */
static int check(const uint8_t *const *outs, int nout, const uint8_t *const *ins, int nin,
                 const uint8_t *const *srcs, int n, size_t len)
{
    for (int i = 0; i < nout; i++) {
        for (int j = i + 1; j < nout; j++)
            if (overlap(outs[i], outs[j], len))
                return FR_EOVERLAP_OUT;
        for (int j = 0; j < nin; j++)
            if (ins[j] != outs[i] && overlap(ins[j], outs[i], len))
                return FR_EOVERLAP_IN;
        for (int j = 0; j < n; j++)
            if (srcs[j] != outs[i] && overlap(srcs[j], outs[i], len))
                return FR_EOVERLAP_IN;
    }
    return 0;
}

int fr_xor(uint8_t *dst, const uint8_t *const *srcs, int n, size_t len)
{
    const uint8_t *outs[1] = {dst};
    if (n < 0)
        return FR_EARG;
    for (int k = 0; k < n; k++)
        if (!srcs[k])
            return FR_EARG;
    int err = check(outs, 1, NULL, 0, srcs, n, len);
    if (err)
        return err;
    ops()->xor_(dst, srcs, n, 0, len);
    return 0;
}

int fr_gen_pq(const uint8_t *const *srcs, int n, uint8_t *p, uint8_t *q, size_t len)
{
    const uint8_t *outs[2] = {p, q};
    if (n < 0 || n > FR_MAX_BLOCKS)
        return FR_EARG;
    int err = check(outs, 2, NULL, 0, srcs, n, len);
    if (err)
        return err;
    if (p || q)
        ops()->pq(srcs, trim(srcs, n), p, q, mul2(), 0, len);
    return 0;
}

int fr_rec_data_data(const uint8_t *const *srcs, int n, const uint8_t *p, const uint8_t *q,
                     int x, int y, uint8_t *out_x, uint8_t *out_y, size_t len)
{
    const uint8_t *s[FR_MAX_BLOCKS];
    if (n > FR_MAX_BLOCKS || x == y || x < 0 || y < 0 || x >= n || y >= n || !p || !q ||
        !out_x || !out_y)
        return FR_EARG;
    memcpy(s, srcs, sizeof(*s) * (size_t)n);
    s[x] = s[y] = NULL; /* ignored: they may even be out_x/out_y themselves */
    const uint8_t *outs[2] = {out_x, out_y}, *ins[2] = {p, q};
    int err = check(outs, 2, ins, 2, s, n, len);
    if (err)
        return err;
    /* D_x = (Qxy ^ g^y Pxy) / (g^x ^ g^y); D_y = Pxy ^ D_x */
    uint8_t gx = fr_gf_pow2(x), gy = fr_gf_pow2(y);
    uint8_t inv = fr_gf_inv(gx ^ gy);
    struct fr_gfc a, b;
    gfc_init(&a, fr_gf_mul(inv, gy));
    gfc_init(&b, inv);
    ops()->rec(s, trim(s, n), p, q, mul2(), &a, &b, out_x, out_y, 0, len);
    return 0;
}

int fr_rec_data_q(const uint8_t *const *srcs, int n, const uint8_t *q, int x,
                  uint8_t *out_x, size_t len)
{
    const uint8_t *s[FR_MAX_BLOCKS];
    if (n > FR_MAX_BLOCKS || x < 0 || x >= n || !q || !out_x)
        return FR_EARG;
    memcpy(s, srcs, sizeof(*s) * (size_t)n);
    s[x] = NULL;
    const uint8_t *outs[1] = {out_x}, *ins[1] = {q};
    int err = check(outs, 1, ins, 1, s, n, len);
    if (err)
        return err;
    struct fr_gfc b;
    gfc_init(&b, fr_gf_inv(fr_gf_pow2(x)));
    ops()->rec(s, trim(s, n), NULL, q, mul2(), &b, &b, out_x, NULL, 0, len);
    return 0;
}

int fr_mul(uint8_t *out, const uint8_t *src, uint8_t c, size_t len)
{
    const uint8_t *outs[1] = {out}, *ins[1] = {src};
    if (!out || !src)
        return FR_EARG;
    int err = check(outs, 1, ins, 1, NULL, 0, len);
    if (err)
        return err;
    struct fr_gfc b;
    gfc_init(&b, c);
    ops()->rec(NULL, 0, NULL, src, mul2(), &b, &b, out, NULL, 0, len);
    return 0;
}
