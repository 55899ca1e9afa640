/* A strict safetensors reader (mmap, no copies) and an atomic writer.
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
 * "__metadata__": {str: str}}, then the data. The reader checks: N within INF_ST_MAX_HEADER and the
 * file, valid JSON, known dtypes, non-negative integral shapes, offsets in range and not
 * overlapping (gaps are allowed: the format permits padding), and shape×dtype size == byte length.
 * Errors name the file and tensor. */
#ifndef INF_SAFETENSORS_H
#define INF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "weights.h"

#define INF_ST_MAX_HEADER (100u * 1024u * 1024u) /* 100 MiB, the limit the reference reader uses */

struct inf_st_file;

int inf_st_open(const char *path, struct inf_st_file **out, struct ctx_err *e);
int inf_st_count(const struct inf_st_file *f);
const struct inf_tensor *inf_st_tensor(const struct inf_st_file *f, int i); /* in data-offset order */
const struct inf_tensor *inf_st_find(const struct inf_st_file *f, const char *name);
const char *inf_st_path(const struct inf_st_file *f);
void inf_st_close(struct inf_st_file *f);

/* Write tensors (data copied from t[i].data, t[i].nbytes each) to path atomically: a temp file in
 * the same directory, fsync, rename, fsync of the directory. */
int inf_st_write(const char *path, const struct inf_tensor *tensors, int n, struct ctx_err *e);

/* The parsing core, exposed for the fuzzer and tests: parse a header's JSON (hdr, hdr_len bytes,
 * not NUL-terminated) for a data section of data_len bytes. On success *out / *n receive a malloc'd
 * array of tensors (names malloc'd, data = data_base + offset, or NULL when data_base is NULL: a
 * header checked against a data length alone), in data-offset order, freed by inf_st_free_tensors.
 * `what` names the source in messages. */
int inf_st_parse_header(const char *hdr, size_t hdr_len, const uint8_t *data_base, size_t data_len,
                        const char *what, struct inf_tensor **out, int *n, struct ctx_err *e);
void inf_st_free_tensors(struct inf_tensor *t, int n);
/* The whole-file form over a byte buffer (8-byte length + header + data), for the fuzzer. */
int inf_st_parse_bytes(const uint8_t *buf, size_t len, const char *what, struct inf_tensor **out, int *n,
                       struct ctx_err *e);

#endif
