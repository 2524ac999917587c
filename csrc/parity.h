#include <stddef.h>
#include <stdint.h>
void fr_xor(uint8_t *dst, const uint8_t *const *srcs, int n, size_t len);
