/* ctx complete FILE LINE:COL: fill-in-the-middle completion at a cursor (fim.complete), the
 * request an editor's inline completion makes, from the command line: the file's text before the
 * cursor is the prefix, the rest the suffix. --stdin reads the buffer from standard input instead
 * of FILE (FILE still names it), as an editor with unsaved text would. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "util.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: ctx complete FILE LINE:COL [--stdin] [--max-tokens N] [--budget TOKENS] [--stop TEXT]...\n"
               "                    [--temperature T] [--seed N] [--repo PATH] [--json]\n"
               "Fill-in-the-middle completion at LINE:COL of FILE (1-based; COL counts bytes), as an editor's\n"
               "inline completion asks for it: the text before the cursor is the prefix, the rest the suffix.\n"
               "--stdin takes the buffer from standard input (unsaved text). Prints the completion; --json the\n"
               "whole result (tokens, stop reason, trimming). Exit: 0 ok, 1 failure, 2 usage.\n");
}

/* Byte offset of LINE:COL in text, or -1 when the position is not in it. */
static long cursor_offset(const char *text, size_t len, long line, long col)
{
    size_t off = 0;
    for (long l = 1; l < line; l++) {
        const char *nl = memchr(text + off, '\n', len - off);
        if (!nl)
            return -1;
        off = (size_t)(nl - text) + 1;
    }
    const char *nl = memchr(text + off, '\n', len - off);
    size_t line_len = (nl ? (size_t)(nl - text) : len) - off;
    if (col < 1 || (size_t)(col - 1) > line_len)
        return -1;
    return (long)(off + (size_t)(col - 1));
}

int ctx_cmd_complete(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *file = NULL, *pos = NULL, *repo = NULL;
    bool json = cli->json, from_stdin = false;
    cJSON *params = cJSON_CreateObject(), *stops = cJSON_CreateArray();
    int rc = 2;
    char *text = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--stdin") == 0) {
            from_stdin = true;
        } else if (strcmp(a, "--help") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if ((strcmp(a, "--max-tokens") == 0 || strcmp(a, "--budget") == 0 || strcmp(a, "--seed") == 0) &&
                   i + 1 < argc) {
            long v = 0;
            if (!ctx_cli_long("complete", a, argv[++i], 0, LONG_MAX, &v))
                goto out;
            cJSON_AddNumberToObject(params, strcmp(a, "--max-tokens") == 0 ? "max_tokens"
                                            : strcmp(a, "--budget") == 0   ? "budget"
                                                                           : "seed",
                                    (double)v);
        } else if (strcmp(a, "--temperature") == 0 && i + 1 < argc) {
            double t = 0;
            if (!ctx_cli_double("complete", a, argv[++i], 0, 100, &t))
                goto out;
            cJSON_AddNumberToObject(params, "temperature", t);
        } else if (strcmp(a, "--stop") == 0 && i + 1 < argc) {
            cJSON_AddItemToArray(stops, cJSON_CreateString(argv[++i]));
        } else if (strcmp(a, "--repo") == 0 && i + 1 < argc) {
            repo = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "ctx complete: unknown option \"%s\"\n", a);
            goto out;
        } else if (!file) {
            file = a;
        } else if (!pos) {
            pos = a;
        } else {
            fprintf(stderr, "ctx complete: unexpected argument \"%s\"\n", a);
            goto out;
        }
    }
    if (!file || !pos) {
        usage(stderr);
        goto out;
    }
    char *end = NULL;
    long line = strtol(pos, &end, 10), col = 0;
    if (end != pos && *end == ':')
        col = strtol(end + 1, &end, 10);
    if (line < 1 || col < 1 || *end) {
        fprintf(stderr, "ctx complete: the cursor is LINE:COL (1-based), not \"%s\"\n", pos);
        goto out;
    }
    size_t len = 0;
    struct ctx_err e = {0};
    if (from_stdin ? ctx_cli_read_stdin(&text, &len) != 0 : ctx_read_file(file, (size_t)64 << 20, &text, &len, &e) != 0) {
        fprintf(stderr, "ctx complete: %s\n", from_stdin ? "cannot read standard input" : e.msg);
        rc = 1;
        goto out;
    }
    if (memchr(text, 0, len)) {
        fprintf(stderr, "ctx complete: %s is binary (it contains a NUL byte)\n", file);
        rc = 1;
        goto out;
    }
    long off = cursor_offset(text, len, line, col);
    if (off < 0) {
        fprintf(stderr, "ctx complete: %s has no position %ld:%ld\n", file, line, col);
        goto out;
    }
    char abs[PATH_MAX];
    cJSON_AddStringToObject(params, "file", realpath(file, abs) ? abs : file);
    if (repo)
        cJSON_AddStringToObject(params, "path", repo);
    char save = text[off];
    text[off] = 0;
    cJSON_AddStringToObject(params, "prefix", text);
    text[off] = save;
    cJSON_AddStringToObject(params, "suffix", text + off);
    if (cJSON_GetArraySize(stops) > 0) {
        cJSON_AddItemToObject(params, "stop", stops);
        stops = NULL;
    }
    struct ctxd_client *c = ctx_cli_connect(cli, "complete", true);
    if (!c) {
        rc = 1;
        goto out;
    }
    cJSON *r = NULL;
    int crc = ctxd_client_call(c, "fim.complete", params, NULL, NULL, 0, &r, &e);
    params = NULL; /* the call took it */
    ctxd_client_close(c);
    if (crc) {
        fprintf(stderr, "ctx complete: %s\n", e.msg);
        rc = 1;
        goto out;
    }
    if (json) {
        ctx_cli_print_json(r);
    } else {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "text");
        if (cJSON_IsString(t))
            printf("%s\n", t->valuestring);
    }
    cJSON_Delete(r);
    rc = 0;
out:
    cJSON_Delete(params);
    cJSON_Delete(stops);
    free(text);
    return rc;
}
