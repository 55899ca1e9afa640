/* bench_dsml_guide: the per-token cost of grammar-constrained DSML decoding
 * (inference/text/dsml_guide.h): one inf_dsml_guide_mask call over the whole vocabulary, in the
 * states a completion passes through, for each tokenizer given. The floor is one pass that reads
 * every byte of every token (the O(vocab x bytes per token) bound the guide must stay within),
 * measured in the same run; the third column adds the decoder's own pass that writes -inf into the
 * refused logits.
 *
 * usage: bench_dsml_guide [--reps N] TOKENIZER_JSON...   (V3-style files get V4's special tokens) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench.h"

#include "dsml_guide.h"
#include "sample.h"
#include "err.h"
#include "tokenizer.h"

#define D INF_DSML_TOKEN
#define BLK "Let me look.\n\n<" D "tool_calls>\n"

static const char tools_json[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"read_file\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"path\": {\"type\": \"string\"}, \"start_line\": {\"type\": \"integer\"}, "
    "\"end_line\": {\"type\": \"integer\"}}, \"required\": [\"path\"]}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"search\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"pattern\": {\"type\": \"string\"}, \"path\": {\"type\": \"string\"}, \"glob\": {\"type\": "
    "\"string\"}, \"case_insensitive\": {\"type\": \"boolean\"}, \"max_results\": {\"type\": \"integer\"}}, "
    "\"required\": [\"pattern\"]}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"git_diff\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"staged\": {\"type\": \"boolean\"}, \"paths\": {\"type\": \"array\"}}}}}]";

static const struct {
    const char *name;
    enum inf_dsml_mode mode;
    const char *text;
} states[] = {
    {"reasoning", INF_DSML_THINKING, "The user wants the definition"},
    {"content", INF_DSML_CHAT, "The function is defined in"},
    {"tool name", INF_DSML_CHAT, BLK "<" D "invoke name=\""},
    {"parameter name", INF_DSML_CHAT, BLK "<" D "invoke name=\"search\">\n<" D "parameter name=\""},
    {"string value", INF_DSML_CHAT, BLK "<" D "invoke name=\"read_file\">\n<" D "parameter name=\"path\" string=\"true\">src"},
    {"string value after '/'", INF_DSML_CHAT,
     BLK "<" D "invoke name=\"read_file\">\n<" D "parameter name=\"path\" string=\"true\">src/"},
    {"string value after '<'", INF_DSML_CHAT,
     BLK "<" D "invoke name=\"read_file\">\n<" D "parameter name=\"path\" string=\"true\">a<"},
    {"JSON array", INF_DSML_CHAT,
     BLK "<" D "invoke name=\"git_diff\">\n<" D "parameter name=\"paths\" string=\"false\">[\"a.c\", "},
    {"JSON string", INF_DSML_CHAT,
     BLK "<" D "invoke name=\"git_diff\">\n<" D "parameter name=\"paths\" string=\"false\">[\"src/ma"},
    {"between parameters", INF_DSML_CHAT,
     BLK "<" D "invoke name=\"read_file\">\n<" D "parameter name=\"path\" string=\"true\">a.c</" D "parameter>\n"},
};

int main(int argc, char **argv)
{
    int reps = 200, first = 1;
    if (argc > 2 && !strcmp(argv[1], "--reps")) {
        reps = atoi(argv[2]);
        first = 3;
    }
    if (first >= argc || reps < 1) {
        fprintf(stderr, "usage: bench_dsml_guide [--reps N] TOKENIZER_JSON...\n");
        return 2;
    }
    cJSON *tools = cJSON_Parse(tools_json);
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int a = first; a < argc; a++) {
        struct inf_tokenizer *tok = NULL;
        struct inf_dsml_guide *g = NULL;
        struct ctx_err e = {0};
        if (inf_tokenizer_load_v4(argv[a], &tok, &e) || inf_dsml_guide_new(tok, tools, &g, &e)) {
            fprintf(stderr, "bench_dsml_guide: %s: %s\n", argv[a], e.msg);
            return 1;
        }
        size_t n = inf_tokenizer_vocab_size(tok), bytes = 0;
        uint8_t *allow = malloc(n);
        float *logits = malloc(n * sizeof *logits);
        /* the floor: read every byte of every token once, from one flat copy of them */
        for (size_t id = 0; id < n; id++) {
            size_t l = 0;
            if (inf_tokenizer_id_bytes(tok, (int32_t)id, &l))
                bytes += l;
        }
        unsigned char *flat = malloc(bytes + 1);
        for (size_t id = 0, off = 0; id < n; id++) {
            size_t l = 0;
            const char *b = inf_tokenizer_id_bytes(tok, (int32_t)id, &l);
            if (b)
                memcpy(flat + off, b, l);
            off += b ? l : 0;
        }
        volatile unsigned sink = 0;
        for (int r = 0; r < reps; r++) {
            double t0 = bench_now();
            unsigned acc = 0;
            for (size_t i = 0; i < bytes; i++)
                acc += flat[i] == '<';
            sink += acc;
            t[r] = bench_now() - t0;
        }
        free(flat);
        double floor_us = bench_median(t, reps) * 1e6;
        printf("\n%s: %zu ids, %.2f bytes per token\n", argv[a], n, (double)bytes / (double)n);
        printf("%-24s %10s %10s %12s %8s %10s\n", "state", "mask us", "+apply us", "allowed ids", "/floor", "lazy us");
        printf("%-24s %10.1f %10s %12s %8s %10s\n", "floor: read all bytes", floor_us, "", "", "1.00", "");
        for (size_t k = 0; k < sizeof states / sizeof *states; k++) {
            struct inf_dsml_guide_state s;
            inf_dsml_guide_start(g, states[k].mode, &s);
            if (inf_dsml_guide_feed(g, &s, states[k].text, strlen(states[k].text))) {
                fprintf(stderr, "bench_dsml_guide: state \"%s\" refused\n", states[k].name);
                return 1;
            }
            size_t allowed = 0;
            for (int r = 0; r < reps; r++) {
                double t0 = bench_now();
                allowed = inf_dsml_guide_mask(g, &s, allow, n);
                t[r] = bench_now() - t0;
            }
            double mask_us = bench_median(t, reps) * 1e6;
            for (int r = 0; r < reps; r++) {
                for (size_t id = 0; id < n; id++)
                    logits[id] = 0.5f;
                double t0 = bench_now();
                inf_dsml_guide_mask(g, &s, allow, n);
                for (size_t id = 0; id < n; id++)
                    if (!allow[id])
                        logits[id] = -INFINITY;
                t[r] = bench_now() - t0;
            }
            double apply_us = bench_median(t, reps) * 1e6;
            /* lazy (ctxd's decoder, greedy): the argmax of the raw logits, kept when the grammar allows
             * it; the mask only when it does not. Random logits; "*" marks a state whose argmax here
             * was refused (the decoder then pays the mask too). */
            unsigned long long x = 99 + k;
            for (size_t id = 0; id < n; id++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                logits[id] = (float)(x >> 40) * 0x1.0p-24f * 20.f - 10.f;
            }
            bool ok = false;
            for (int r = 0; r < reps; r++) {
                double t0 = bench_now();
                int32_t am = inf_argmax(logits, (int)n);
                ok = inf_dsml_guide_allows(g, &s, am);
                t[r] = bench_now() - t0;
            }
            double lazy_us = bench_median(t, reps) * 1e6;
            printf("%-24s %10.1f %10.1f %12zu %8.2f %9.1f%s\n", states[k].name, mask_us, apply_us, allowed,
                   mask_us / floor_us, lazy_us, ok ? " " : "*");
        }
        (void)sink;
        free(allow);
        free(logits);
        inf_dsml_guide_free(g);
        inf_tokenizer_free(tok);
    }
    free(t);
    cJSON_Delete(tools);
    return 0;
}
