/* libFuzzer target: the DSML decoding guide (inference/text/dsml_guide.c) on arbitrary bytes, a
 * bytes-only guide over a fixed set of tools with typed and required parameters. The first byte
 * picks the mode and a chunk size; the rest is completion text. Invariants (abort on violation):
 *   - feeding in chunks and byte by byte refuse at the same byte and end in the same state;
 *   - soundness: whatever the guide accepts and calls closed, inf_dsml_parse accepts, with calls
 *     of declared tools, declared parameters only, the required ones present;
 *   - the forced close: where close_text or close_value_text gives a text, the accepted prefix plus
 *     that text is closed and parses the same way.
 * tests/text/test_dsml_guide.c runs this entry on hostile inputs. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsml.h"
#include "dsml_guide.h"

static const char fuzz_guide_tools[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"read_file\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"path\": {\"type\": \"string\"}, \"start_line\": {\"type\": \"integer\"}, "
    "\"end_line\": {\"type\": \"integer\"}}, \"required\": [\"path\"]}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"search\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"pattern\": {\"type\": \"string\"}, \"case_insensitive\": {\"type\": \"boolean\"}, "
    "\"max_results\": {\"type\": \"integer\"}, \"globs\": {\"type\": \"array\"}, \"extra\": {}}, "
    "\"required\": [\"pattern\"]}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"list_dir\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"path\": {\"type\": \"string\"}, \"depth\": {\"type\": \"integer\"}}, \"required\": []}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"run_tests\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {}, \"required\": []}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"git_diff\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"staged\": {\"type\": \"boolean\"}, \"opts\": {\"type\": [\"object\", \"null\"]}}}}}]";

static struct inf_dsml_guide *fuzz_guide;
static cJSON *fuzz_guide_schema;

static int fuzz_guide_same(const struct inf_dsml_guide_state *a, const struct inf_dsml_guide_state *b)
{
    return a->phase == b->phase && a->scan == b->scan && a->taint == b->taint && a->jst == b->jst &&
           a->jlit == b->jlit && a->jdepth == b->jdepth && a->jflags == b->jflags && a->ptype == b->ptype &&
           a->lit == b->lit && a->pos == b->pos && a->lo == b->lo && a->hi == b->hi && a->tool == b->tool &&
           a->calls == b->calls && a->used == b->used && a->jstack == b->jstack;
}

static const cJSON *fuzz_guide_params(const char *name)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, fuzz_guide_schema) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        if (!strcmp(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, name))
            return cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    }
    return NULL;
}

/* The completion must parse, with schema-conforming calls. */
static void fuzz_guide_check(const char *text, size_t len, enum inf_dsml_mode mode)
{
    struct inf_dsml_parser_opts o = {.mode = mode, .tools = fuzz_guide_schema};
    cJSON *m = NULL;
    struct ctx_err e = {0};
    if (inf_dsml_parse(text, len, &o, &m, NULL, &e) != 0)
        abort();
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *params = fuzz_guide_params(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring);
        cJSON *args = cJSON_Parse(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
        if (!params || !cJSON_IsObject(args))
            abort();
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(params, "properties"), *a;
        cJSON_ArrayForEach(a, args) if (!cJSON_GetObjectItemCaseSensitive(props, a->string)) abort();
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(params, "required"))
            if (!cJSON_GetObjectItemCaseSensitive(args, a->valuestring))
                abort();
        cJSON_Delete(args);
    }
    cJSON_Delete(m);
}

/* Returns 0 (the invariants held). */
int inf_fuzz_dsml_guide_one(const uint8_t *data, size_t size)
{
    if (!fuzz_guide) {
        struct ctx_err e = {0};
        fuzz_guide_schema = cJSON_Parse(fuzz_guide_tools);
        if (!fuzz_guide_schema || inf_dsml_guide_new(NULL, fuzz_guide_schema, &fuzz_guide, &e))
            abort();
    }
    if (size == 0)
        return 0;
    enum inf_dsml_mode mode = (data[0] & 1) ? INF_DSML_THINKING : INF_DSML_CHAT;
    size_t step = (size_t)(data[0] >> 1) + 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    /* byte by byte: where it is refused */
    struct inf_dsml_guide_state a;
    inf_dsml_guide_start(fuzz_guide, mode, &a);
    size_t ok = 0;
    while (ok < len && inf_dsml_guide_feed(fuzz_guide, &a, text + ok, 1) == 0)
        ok++;
    struct inf_dsml_guide_state last_live = a;
    if (ok < len) {
        if (!inf_dsml_guide_dead(&a))
            abort();
        inf_dsml_guide_start(fuzz_guide, mode, &last_live);
        if (inf_dsml_guide_feed(fuzz_guide, &last_live, text, ok) != 0)
            abort();
    }
    /* in chunks: the same verdict and state */
    struct inf_dsml_guide_state b;
    inf_dsml_guide_start(fuzz_guide, mode, &b);
    int rc = 0;
    size_t i = 0;
    for (; i < len && !rc; i += step)
        rc = inf_dsml_guide_feed(fuzz_guide, &b, text + i, i + step > len ? len - i : step);
    if ((rc != 0) != (ok < len) || !fuzz_guide_same(&a, &b))
        abort();
    if (ok == len && inf_dsml_guide_closed(&a))
        fuzz_guide_check(text, len, mode);
    /* the forced close of the accepted prefix */
    char close[128];
    size_t cl = 0;
    int (*const closers[2])(const struct inf_dsml_guide *, const struct inf_dsml_guide_state *, char *, size_t,
                            size_t *) = {inf_dsml_guide_close_text, inf_dsml_guide_close_value_text};
    for (int k = 0; k < 2; k++) {
        if (closers[k](fuzz_guide, &last_live, close, sizeof close, &cl) != 0)
            continue;
        struct inf_dsml_guide_state c = last_live;
        if (inf_dsml_guide_feed(fuzz_guide, &c, close, cl) != 0 || !inf_dsml_guide_closed(&c))
            abort();
        char *all = malloc(ok + cl + 1);
        if (!all)
            abort();
        memcpy(all, text, ok);
        memcpy(all + ok, close, cl);
        fuzz_guide_check(all, ok + cl, mode);
        free(all);
    }
    return 0;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return inf_fuzz_dsml_guide_one(data, size);
}
#endif
