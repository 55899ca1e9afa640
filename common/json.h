/* Small helpers over cJSON that turn missing or mistyped fields into ctx_err messages naming the
 * field, plus file reading and compact printing. */
#ifndef CTX_JSON_H
#define CTX_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Parse len bytes (need not be NUL-terminated). On failure names `what` and the byte offset. */
cJSON *ctx_json_parse(const char *buf, size_t len, const char *what, struct ctx_err *e);

/* Read and parse a whole file; `max_bytes` bounds the size (0: 256 MiB). */
cJSON *ctx_json_read_file(const char *path, size_t max_bytes, struct ctx_err *e);

/* Field getters. `obj` must be an object; `required` false returns `def` when the field is absent
 * (a present field of the wrong type is still an error). The error names `ctx_name.field`. */
int ctx_json_get_string(const cJSON *obj, const char *field, bool required, const char *def,
                        const char **out, const char *ctx_name, struct ctx_err *e);
int ctx_json_get_int(const cJSON *obj, const char *field, bool required, int64_t def,
                     int64_t *out, const char *ctx_name, struct ctx_err *e);
int ctx_json_get_double(const cJSON *obj, const char *field, bool required, double def,
                        double *out, const char *ctx_name, struct ctx_err *e);
int ctx_json_get_bool(const cJSON *obj, const char *field, bool required, bool def, bool *out,
                      const char *ctx_name, struct ctx_err *e);

/* Compact one-line text (malloc'd, caller frees); NULL on allocation failure. */
char *ctx_json_print(const cJSON *v);

/* Read a whole file into a malloc'd, NUL-terminated buffer; bounded by max_bytes (0: 256 MiB). */
int ctx_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, struct ctx_err *e);

#endif
