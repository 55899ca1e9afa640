/* ctx tokenize: the engine's tokenizer on stdin, in-process (no daemon).
 *   ctx tokenize --tokenizer FILE [--plain] [--count] [--json]   stdin text -> ids as a JSON array
 *   ctx tokenize --tokenizer FILE --decode [--plain]              stdin JSON array of ids -> text
 * FILE is a Hugging Face tokenizer.json; by default DeepSeek V4's special tokens are added to it
 * (inf_tokenizer_load_v4), --plain loads the file exactly as written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "util.h"
#include "json.h"
#include "tokenizer.h"

static void tokenize_usage(FILE *f)
{
    fprintf(f,
            "usage: ctx tokenize --tokenizer FILE [--decode] [--count] [--plain] [--json]\n"
            "  stdin text -> token ids as a JSON array (no BOS/EOS added); with --decode, stdin\n"
            "  JSON array of ids -> text. --count prints only the number of ids. --plain loads\n"
            "  FILE as written instead of adding DeepSeek V4's special tokens.\n");
}


int ctx_cmd_tokenize(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *path = NULL;
    bool decode = false, count = false, plain = false, json = cli->json;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--decode"))
            decode = true;
        else if (!strcmp(argv[i], "--count"))
            count = true;
        else if (!strcmp(argv[i], "--plain"))
            plain = true;
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            tokenize_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ctx tokenize: unknown argument \"%s\"\n", argv[i]);
            tokenize_usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "ctx tokenize: --tokenizer FILE is required\n");
        tokenize_usage(stderr);
        return 2;
    }
    struct ctx_err e = {0};
    struct inf_tokenizer *t;
    if ((plain ? inf_tokenizer_load(path, &t, &e) : inf_tokenizer_load_v4(path, &t, &e)) != 0) {
        fprintf(stderr, "ctx tokenize: %s\n", e.msg);
        return 1;
    }
    char *in;
    size_t len;
    int status = 1;
    if (ctx_cli_read_stdin(&in, &len) != 0) {
        fprintf(stderr, "ctx tokenize: reading stdin failed\n");
        inf_tokenizer_free(t);
        return 1;
    }
    if (decode) {
        cJSON *arr = ctx_json_parse(in, len, "stdin", &e);
        if (!arr || !cJSON_IsArray(arr)) {
            fprintf(stderr, "ctx tokenize: %s\n", arr ? "stdin must be a JSON array of ids" : e.msg);
            cJSON_Delete(arr);
            goto out;
        }
        size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
        int32_t *ids = malloc((n + 1) * sizeof *ids);
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            if (!cJSON_IsNumber(c) || c->valuedouble != (double)(int32_t)c->valuedouble) {
                fprintf(stderr, "ctx tokenize: stdin[%zu] is not an integer id\n", i);
                free(ids);
                cJSON_Delete(arr);
                goto out;
            }
            ids[i] = (int32_t)c->valuedouble;
        }
        cJSON_Delete(arr);
        char *text;
        size_t tl;
        if (inf_tokenizer_decode(t, ids, n, &text, &tl, &e) != 0) {
            fprintf(stderr, "ctx tokenize: %s\n", e.msg);
            free(ids);
            goto out;
        }
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "text", text);
            char *s = cJSON_PrintUnformatted(o);
            puts(s);
            free(s);
            cJSON_Delete(o);
        } else
            fwrite(text, 1, tl, stdout);
        free(text);
        free(ids);
        status = 0;
        goto out;
    }
    if (count) {
        size_t n;
        if (inf_tokenizer_count(t, in, len, &n, &e) != 0) {
            fprintf(stderr, "ctx tokenize: %s\n", e.msg);
            goto out;
        }
        if (json)
            printf("{\"count\":%zu,\"bytes\":%zu}\n", n, len);
        else
            printf("%zu\n", n);
        status = 0;
        goto out;
    }
    int32_t *ids;
    size_t n;
    if (inf_tokenizer_encode(t, in, len, &ids, &n, &e) != 0) {
        fprintf(stderr, "ctx tokenize: %s\n", e.msg);
        goto out;
    }
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    puts("]");
    free(ids);
    status = 0;
out:
    free(in);
    inf_tokenizer_free(t);
    return status;
}
