/* libFuzzer target: the report formats of agent/report.c over arbitrary model output: the bytes as
 * a suggest diff (parsed, split into changes, written as github/rdjsonl/sarif), and the bytes as a
 * review answer (```findings block parsed, then written in every format that needs no files). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

int agent_fuzz_report_one(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0; /* the diff entry takes text; an embedded NUL ends it, as it would for the CLI */
    for (int f = AGENT_REPORT_TEXT; f <= AGENT_REPORT_SARIF; f++) {
        char *out = NULL;
        struct ctx_err e = {0};
        if (agent_report_diff((enum agent_report_format)f, s, &out, &e) == 0)
            free(out);
    }
    struct agent_findings fs = {0};
    struct ctx_err e = {0};
    if (agent_review_parse((const char *)data, size, &fs, &e) == 0) {
        static const enum agent_report_format fmts[] = {AGENT_REPORT_TEXT, AGENT_REPORT_JSON, AGENT_REPORT_GITHUB,
                                                        AGENT_REPORT_RDJSONL, AGENT_REPORT_SARIF};
        for (size_t i = 0; i < sizeof fmts / sizeof *fmts; i++) {
            char *out = NULL;
            if (agent_report_findings(fmts[i], fs.v, fs.n, NULL, &out, &e) == 0)
                free(out);
        }
        agent_findings_free(&fs);
    }
    free(s);
    return 0;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agent_fuzz_report_one(data, size);
    return 0;
}
#endif
