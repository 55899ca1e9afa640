/* Python `json` compatibility for the DSML encoder and parser: DeepSeek's reference
 * (encoding_dsv4.py) formats tool schemas and arguments with json.dumps(ensure_ascii=False) and
 * reads arguments with json.loads, so byte-exact prompts need the same spacing (", " and ": "),
 * escapes and number spelling. Internal to inference/text/. */
#ifndef INF_PYJSON_H
#define INF_PYJSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* A growable byte buffer; on allocation failure `oom` is set and further appends are dropped. */
struct inf_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

void inf_buf_put(struct inf_buf *b, const void *s, size_t n);
void inf_buf_puts(struct inf_buf *b, const char *s);
void inf_buf_free(struct inf_buf *b);

/* json.dumps(str, ensure_ascii=False) of n bytes of UTF-8, quotes included. */
void inf_py_dump_string(struct inf_buf *b, const char *s, size_t n);

/* Python's repr(float) (shortest round trip, exponent form outside 1e-4 <= |x| < 1e16). */
void inf_py_float_repr(struct inf_buf *b, double v);

/* json.dumps(value, ensure_ascii=False) of a cJSON tree. cJSON keeps numbers as doubles, so an
 * integral number below 2^53 is written as an int (a source "1.0" comes out as "1"); everything
 * else as Python writes a float. */
void inf_py_dump_cjson(struct inf_buf *b, const cJSON *v);

/* Re-serialise JSON text the way json.dumps(json.loads(text), ensure_ascii=False) would, keeping
 * integer spellings exactly (Python ints are unbounded) and floats as repr(float(lexeme)).
 * Returns 0, or -1 if json.loads would reject the text (with *err_at the byte offset). When the
 * top level is an object and `members` is not NULL, it is filled instead of `out`: see below. */
int inf_py_reserialize(const char *text, size_t len, struct inf_buf *out, size_t *err_at);

/* The members of a top-level JSON object, in json.loads order (a repeated key keeps its first
 * position and its last value): key (decoded), and either the decoded string value (is_string) or
 * the re-serialised value. Returns 0; -1 if not valid JSON (err_at set); -2 if valid JSON but not
 * an object. Free with inf_py_members_free. */
struct inf_py_member {
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    bool is_string;
};
int inf_py_object_members(const char *text, size_t len, struct inf_py_member **members, size_t *n,
                          size_t *err_at);
void inf_py_members_free(struct inf_py_member *m, size_t n);

#endif
