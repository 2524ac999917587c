/* Shared body of the SIMD parity kernels (SSSE3, AVX2, AVX-512BW, AVX-512+GFNI).
 *
 * Not a standalone header: each parity_<isa>.c includes it once, after defining
 *
 *   FR_T               __attribute__((target(...))) put on every function
 *   FR_SUFFIX          name suffix of the generated functions (xor_<suffix>, ...)
 *   FR_V, FR_VB        the vector type and its width in bytes
 *   FR_MM(op)          the intrinsic _mm<bits>_<op> (e.g. _mm256_##op)
 *   FR_SI(op)          the intrinsic _mm<bits>_<op>_si<bits> (e.g. _mm256_##op##_si256)
 *   tab(t)             static inline FR_T: the 16-byte table t in every 128-bit lane,
 *                      unless FR_MULC is defined
 *
 * and optionally
 *
 *   FR_MUL2(v)         v * 2 in GF(2^8) mod 0x11d; default: add plus 0x1d masked in by
 *                      a signed compare (SSE2/AVX2)
 *   FR_MULC_DECL(m, g) declare the multiplier m for the constant struct fr_gfc *g, and
 *   FR_MULC(v, m)      v * (the constant of multiplier m); default: two pshufb lookups
 *                      in the nibble tables g->lo and g->hi (loaded with tab())
 *   FR_XOR3(a, b, c)   a ^ b ^ c in one instruction: the XOR kernel then adds sources
 *                      two at a time
 *   FR_HORNER_FUSED    Horner steps compute q = q * 2 ^ d in one expression per source
 *                      (instead of doubling all lanes first, then XORing the data in)
 *   FR_MUL2_PARAM      extra leading parameter(s) of horner() that FR_MUL2 needs,
 *   FR_MUL2_ARG        the matching argument(s), and
 *   FR_MUL2_SETUP(m2)  the declaration(s) producing them from struct fr_gfc *m2 in the
 *                      pq/rec kernels (e.g. a broadcast GF2P8AFFINEQB matrix).
 *   FR_REC_SPLIT       the recovery kernel branches on p first and computes
 *                      x = a*pxy ^ b*qxy in one expression instead of accumulating into
 *                      b*qxy (GFNI uses it: it measured faster there than the other form)
 *
 * The generated kernels do the whole-STEP part of [off, off + len) and hand the tail to
 * the portable kernel; see parity_impl.h for the contract. */
#ifndef FR_V
#error "define the FR_* ISA macros before including parity_vec_tmpl.h"
#endif

#ifndef FR_MUL2_PARAM
#define FR_MUL2_PARAM
#define FR_MUL2_ARG
#define FR_MUL2_SETUP(m2)
#endif

#define FR_ZERO() FR_SI(setzero)()
#define FR_XOR(a, b) FR_SI(xor)(a, b)

static inline FR_T FR_V ld(const uint8_t *p) { return FR_SI(loadu)((const FR_V *)p); }
static inline FR_T void st(uint8_t *p, FR_V v) { FR_SI(storeu)((FR_V *)p, v); }

#ifndef FR_MUL2
static inline FR_T FR_V mul2(FR_V v)
{
    FR_V top = FR_MM(cmpgt_epi8)(FR_ZERO(), v); /* bytes with bit 7 set */
    return FR_XOR(FR_MM(add_epi8)(v, v), FR_SI(and)(top, FR_MM(set1_epi8)(0x1d)));
}
#define FR_MUL2(v) mul2(v)
#endif

#ifndef FR_MULC
static inline FR_T FR_V mulc(FR_V v, FR_V lo, FR_V hi)
{
    FR_V m = FR_MM(set1_epi8)(0x0f);
    FR_V l = FR_SI(and)(v, m);
    FR_V h = FR_SI(and)(FR_MM(srli_epi16)(v, 4), m);
    return FR_XOR(FR_MM(shuffle_epi8)(lo, l), FR_MM(shuffle_epi8)(hi, h));
}
#define FR_MULC_DECL(m, g) FR_V m##lo = tab((g)->lo), m##hi = tab((g)->hi)
#define FR_MULC(v, m) mulc(v, m##lo, m##hi)
#endif

#define FR_CAT_(a, b) a##b
#define FR_CAT(a, b) FR_CAT_(a, b)
#define FR_FN(name) FR_CAT(name##_, FR_SUFFIX)

#define W 4 /* vectors per step, for instruction-level parallelism */
#define STEP (W * FR_VB)

static FR_T void FR_FN(xor)(uint8_t *dst, const uint8_t *const *s, int n, size_t off,
                            size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    for (size_t o = off; o < end; o += STEP) {
        FR_V x[W];
        int k = 0;
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            x[w] = FR_ZERO();
#ifdef FR_XOR3
        for (; k + 1 < n; k += 2)
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                x[w] = FR_XOR3(x[w], ld(s[k] + o + FR_VB * w), ld(s[k + 1] + o + FR_VB * w));
        if (k < n)
#else
        for (; k < n; k++)
#endif
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                x[w] = FR_XOR(x[w], ld(s[k] + o + FR_VB * w));
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            st(dst + o + FR_VB * w, x[w]);
    }
    fr_ops_portable.xor_(dst, s, n, end, len - main);
}

/* P and Q of STEP bytes at offset o. */
static inline FR_T void horner(const uint8_t *const *s, int n, size_t o, FR_MUL2_PARAM
                               FR_V p[W], FR_V q[W])
{
#pragma GCC unroll 4
    for (int w = 0; w < W; w++)
        p[w] = q[w] = n > 0 ? ld(s[n - 1] + o + FR_VB * w) : FR_ZERO();
    for (int i = n - 2; i >= 0; i--) {
#ifdef FR_HORNER_FUSED
        if (s[i]) {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++) {
                FR_V d = ld(s[i] + o + FR_VB * w);
                p[w] = FR_XOR(p[w], d);
                q[w] = FR_XOR(FR_MUL2(q[w]), d);
            }
        } else {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                q[w] = FR_MUL2(q[w]);
        }
#else
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            q[w] = FR_MUL2(q[w]);
        if (s[i]) {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++) {
                FR_V d = ld(s[i] + o + FR_VB * w);
                p[w] = FR_XOR(p[w], d);
                q[w] = FR_XOR(q[w], d);
            }
        }
#endif
    }
}

static FR_T void FR_FN(pq)(const uint8_t *const *s, int n, uint8_t *p, uint8_t *q,
                           const struct fr_gfc *m2, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    FR_MUL2_SETUP(m2)
    for (size_t o = off; o < end; o += STEP) {
        FR_V pv[W], qv[W];
        horner(s, n, o, FR_MUL2_ARG pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            if (p)
                st(p + o + FR_VB * w, pv[w]);
            if (q)
                st(q + o + FR_VB * w, qv[w]);
        }
    }
    fr_ops_portable.pq(s, n, p, q, m2, end, len - main);
}

static FR_T void FR_FN(rec)(const uint8_t *const *s, int n, const uint8_t *p,
                            const uint8_t *q, const struct fr_gfc *m2,
                            const struct fr_gfc *a, const struct fr_gfc *b, uint8_t *x,
                            uint8_t *y, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    FR_MUL2_SETUP(m2)
    FR_MULC_DECL(am, a);
    FR_MULC_DECL(bm, b);
    for (size_t o = off; o < end; o += STEP) {
        FR_V pv[W], qv[W];
        horner(s, n, o, FR_MUL2_ARG pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            FR_V qxy = FR_XOR(qv[w], ld(q + o + FR_VB * w));
#ifdef FR_REC_SPLIT
            if (p) {
                FR_V pxy = FR_XOR(pv[w], ld(p + o + FR_VB * w));
                FR_V dx = FR_XOR(FR_MULC(pxy, am), FR_MULC(qxy, bm));
                st(x + o + FR_VB * w, dx);
                st(y + o + FR_VB * w, FR_XOR(pxy, dx));
            } else {
                st(x + o + FR_VB * w, FR_MULC(qxy, bm));
            }
#else
            FR_V dx = FR_MULC(qxy, bm);
            if (p) {
                FR_V pxy = FR_XOR(pv[w], ld(p + o + FR_VB * w));
                dx = FR_XOR(dx, FR_MULC(pxy, am));
                st(y + o + FR_VB * w, FR_XOR(pxy, dx));
            }
            st(x + o + FR_VB * w, dx);
#endif
        }
    }
    fr_ops_portable.rec(s, n, p, q, m2, a, b, x, y, end, len - main);
}
