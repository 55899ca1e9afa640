/* Packed cache entries (spec §5.3): the layout the KV cache stores (store/kv_state.h) and the CUDA
 * engine unpacks on the device (kernels/), lossless for what the engine keeps in its caches.
 *
 * A compressed entry's nope dims went through FP8 QDQ in 64-wide blocks with power-of-two scales and
 * its rope dims are bf16; an indexer key went through FP4 QDQ in 32-wide blocks. So each block is
 * codes times one power of two:
 *   entry: head_dim - qk_rope_head_dim e4m3 codes (the nope dims, in order), one e8m0 scale per 64 of
 *          them (padded with zeros to a multiple of 8 bytes), then the qk_rope_head_dim rope dims as
 *          bf16, little-endian — 448 + 8 + 128 = 584 bytes at V4's shapes (2048 as floats);
 *   indexer key: index_head_dim e2m1 codes, two per byte (the even dim in the low nibble), then one
 *          e8m0 scale per 32 dims — 64 + 4 = 68 bytes for 128 dims (512 as floats).
 * Packing recovers each block's scale from its values (the QDQ rule's scale of the block's largest
 * magnitude, or half of it, when the largest code landed on half the range) and checks every value
 * bit for bit (-0 included): a value that no code x power of two reproduces is refused, never
 * rounded. FP8 scales are kept within 2^+-120 (the QDQ's are >= 2^-22). */
#ifndef INF_KVPACK_H
#define INF_KVPACK_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

size_t inf_kvpack_entry_bytes(const struct inf_config *c);
size_t inf_kvpack_ikey_bytes(const struct inf_config *c);
/* Pack one entry [head_dim] / key [index_head_dim] of floats into out: -1 when done, else the first
 * dim of the block (or the rope dim) that cannot be packed exactly. Unpacking is exact. */
int inf_kvpack_entry(const struct inf_config *c, const float *v, uint8_t *out);
void inf_kvunpack_entry(const struct inf_config *c, const uint8_t *in, float *v);
int inf_kvpack_ikey(const struct inf_config *c, const float *v, uint8_t *out);
void inf_kvunpack_ikey(const struct inf_config *c, const uint8_t *in, float *v);
/* The plain forms of the two packers (each value rounded to a code and multiplied back): the same
 * results, ~10x slower; what the fast ones are checked against (tests/store/test_kv_state.c) and
 * timed beside (bench/store). */
int inf_kvpack_entry_ref(const struct inf_config *c, const float *v, uint8_t *out);
int inf_kvpack_ikey_ref(const struct inf_config *c, const float *v, uint8_t *out);

#endif
