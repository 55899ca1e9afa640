/* What every GPU test here shares: TAP output (plain TAP, no cmocka: the GPU machine has none) and,
 * when the test defines TEST_RNG_SEED before including this, a seeded xorshift64 generator with its
 * uniform and normal draws (the same streams the tests used when each had its own copy). */
#ifndef TESTS_KERNELS_TAP_H
#define TESTS_KERNELS_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

static int n_test, n_fail;

static void tap(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tap(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", ok ? "ok" : "not ok", ++n_test);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    n_fail += !ok;
}

#ifdef TEST_RNG_SEED
static uint64_t rng = TEST_RNG_SEED;
static inline uint64_t next_u64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
/* [0, 1) in 53 bits */
static inline double uniform(void) { return (double)(next_u64() >> 11) * 0x1p-53; }
/* Box-Muller, one draw per two uniforms */
static inline double gauss(void)
{
    double u = uniform() + 1e-300, v = uniform();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
#endif

#endif
