/* A small deterministic random number generator (xoshiro256** seeded through splitmix64) for
 * initialisation, dropout and shuffling. Its whole state is the four words of amc_rng, so a
 * training checkpoint can save and restore it exactly. */
#ifndef ALTMOE_CORE_RNG_H
#define ALTMOE_CORE_RNG_H

#include <stdint.h>

typedef struct amc_rng {
    uint64_t s[4];
} amc_rng;

/* Seeds rng from one 64-bit value; every seed, 0 included, gives a valid state. */
void amc_rng_seed(amc_rng *rng, uint64_t seed);

/* Next 64 random bits. */
uint64_t amc_rng_next(amc_rng *rng);

/* Uniform float in [0, 1) with 24 random bits. */
float amc_rng_uniform(amc_rng *rng);

/* Uniform integer in [0, n) without modulo bias; n >= 1. */
uint64_t amc_rng_below(amc_rng *rng, uint64_t n);

#endif
