/* ctx-data: the tokenizer and training data of the small ctxd model (issue 12, tools/data/README.md).
 *   ctx-data tokenizer SOURCES.tsv OUTDIR [--vocab N] [--mb M] [--group-mb G]
 *   ctx-data build SOURCES.tsv TOKENIZER.json OUTDIR [options, see README.md] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bpe.h"
#include "corpus.h"
#include "data.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(void)
{
    fprintf(stderr, "usage: ctx-data tokenizer SOURCES.tsv OUTDIR [--vocab N] [--mb M] [--group-mb G]\n"
                    "       ctx-data build SOURCES.tsv TOKENIZER.json OUTDIR [--code-mb M] [--val-mb M]\n"
                    "                [--transcripts N] [--budget TOKENS] [--work DIR]\n");
    return 2;
}

static int cmd_tokenizer(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    size_t vocab = 8192;
    double mb = 40, group_mb = 1.5;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc)
            vocab = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--group-mb") && i + 1 < argc)
            group_mb = atof(argv[++i]);
        else
            return usage();
    }
    struct ctx_err e = {0};
    struct data_corpus c;
    double t0 = now_s();
    if (data_corpus_load(argv[1], &c, &e)) {
        fprintf(stderr, "ctx-data tokenizer: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "corpus: %zu unique files in %zu groups (%zu duplicates, %zu not text) %.1fs\n", c.n,
            c.n_groups, c.n_dup, c.n_bad, now_s() - t0);
    struct inf_tokenizer *pre = NULL;
    struct data_bpe *b = data_bpe_new();
    if (!b || data_pretokenizer_new(&pre, &e)) {
        fprintf(stderr, "ctx-data tokenizer: %s\n", e.msg);
        return 1;
    }
    /* Train text: training groups only, each capped so no single package shapes the vocabulary,
     * files visited in a hashed order so the cap takes a spread of each package. */
    size_t *order = malloc(c.n * sizeof *order);
    for (size_t i = 0; i < c.n; i++)
        order[i] = i;
    for (size_t i = c.n; i > 1; i--) {
        size_t j = data_hash64(&i, sizeof i) % i;
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    size_t total = 0, limit = (size_t)(mb * 1e6), glimit = (size_t)(group_mb * 1e6);
    size_t *gused = calloc(c.n_groups, sizeof *gused);
    for (size_t k = 0; k < c.n && total < limit; k++) {
        struct data_doc *d = &c.doc[order[k]];
        if (d->heldout)
            continue;
        size_t g = 0;
        while (c.groups[g] != d->group)
            g++;
        if (gused[g] + d->size > glimit)
            continue;
        size_t len;
        char *text = data_doc_read(d, &len);
        if (!text)
            continue;
        if (data_bpe_add_text(b, pre, text, len, &e)) {
            fprintf(stderr, "ctx-data tokenizer: %s: %s\n", d->path, e.msg);
            free(text);
            return 1;
        }
        free(text);
        gused[g] += len;
        total += len;
    }
    fprintf(stderr, "bpe: %.1f MB of text, %zu distinct pre-tokens, %.1fs\n", (double)total / 1e6,
            data_bpe_n_words(b), now_s() - t0);
    if (data_bpe_train(b, vocab, &e)) {
        fprintf(stderr, "ctx-data tokenizer: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "bpe: %zu merges, %.1fs\n", data_bpe_n_merges(b), now_s() - t0);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", argv[2]);
    int rc = data_bpe_write(b, vocab, path, &e);
    if (!rc) {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", argv[2]);
        rc = data_write_tokenizer_config(path, &e);
    }
    if (rc) {
        fprintf(stderr, "ctx-data tokenizer: %s\n", e.msg);
        return 1;
    }
    printf("wrote %s/tokenizer.json: vocabulary %zu (%zu merges)\n", argv[2], vocab, data_bpe_n_merges(b));
    free(gused);
    free(order);
    data_bpe_free(b);
    inf_tokenizer_free(pre);
    data_corpus_free(&c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (!strcmp(argv[1], "tokenizer"))
        return cmd_tokenizer(argc - 1, argv + 1);
    if (!strcmp(argv[1], "build"))
        return data_cmd_build(argc - 1, argv + 1);
    return usage();
}
