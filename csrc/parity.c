#include "parity.h"
void fr_xor(uint8_t *dst, const uint8_t *const *srcs, int n, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t x = 0;
        for (int k = 0; k < n; k++) x ^= srcs[k][i];
        dst[i] = x;
    }
}
