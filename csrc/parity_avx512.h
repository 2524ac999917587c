/* What the two AVX-512 kernels (parity_avx512bw.c, parity_avx512gfni.c) have in common,
 * for parity_vec_tmpl.h: 64-byte vectors, and VPTERNLOG as a three-operand XOR with the
 * Horner step in its fused form. Each file still defines its own FR_T and multiplies. */
#ifndef FR_PARITY_AVX512_H
#define FR_PARITY_AVX512_H
#define FR_V __m512i
#define FR_VB 64
#define FR_MM(op) _mm512_##op
#define FR_SI(op) _mm512_##op##_si512
#define FR_XOR3(a, b, c) _mm512_ternarylogic_epi64(a, b, c, 0x96)
#define FR_HORNER_FUSED
#endif
