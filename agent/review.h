/* Review mode: what the model is asked to review (staged changes, a commit range, files), the
 * format it must answer in, and the parser of its findings.
 *
 * The final answer must contain one fenced block tagged `findings` holding a JSON array:
 *
 *   ```findings
 *   [{"file": "src/a.c", "line": 12, "end_line": 13, "severity": "error",
 *     "message": "off-by-one: the loop reads buf[n]", "replacement": "for (i = 0; i < n; i++)\n"}]
 *   ```
 *
 * file: repository-relative path; line (1-based) and optional end_line (default line): the lines
 * the finding is about, in the new version of the file; severity: "error", "warning" or "info";
 * message: one or more sentences; replacement (optional): the exact new text of lines
 * line..end_line (a GitHub suggestion / reviewdog suggestion). `[]` when there is nothing to
 * report. JSON was chosen over a line format because messages and replacements are free text
 * (colons, newlines, code) that a line format would have to escape anyway. */
#ifndef AGENT_REVIEW_H
#define AGENT_REVIEW_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* The instructions appended to a review request (constant text). */
const char *agent_review_instructions(void);

enum agent_severity { AGENT_SEV_ERROR = 0, AGENT_SEV_WARNING, AGENT_SEV_INFO };
const char *agent_severity_name(enum agent_severity s);

struct agent_finding {
    char *file;
    unsigned line, end_line;
    enum agent_severity severity;
    char *message;
    char *replacement; /* NULL when none */
};

struct agent_findings {
    struct agent_finding *v;
    size_t n;
};

/* Parse the final answer. CTX_ENOTFOUND when there is no ```findings block; CTX_EFORMAT naming
 * findings[i].field for a bad entry (the text is meant to go back to the model as is). */
int agent_review_parse(const char *answer, size_t len, struct agent_findings *out, struct ctx_err *e);
void agent_findings_free(struct agent_findings *f);

/* Output formats: JSON array (the shape above), human text ("path:line: severity: message"), and
 * reviewdog rdjsonl (one diagnostic per line, linewise suggestions; defined in report.c, see
 * report.h for every output format). */
cJSON *agent_findings_json(const struct agent_findings *f);
char *agent_findings_text(const struct agent_findings *f);
char *agent_findings_rdjsonl(const struct agent_findings *f);

/* The subject of a review as unified diff text (libgit2): staged changes (index vs HEAD), a range
 * "A..B" (tree of A vs tree of B), or, when neither, the working tree vs the index. "" when there
 * is no change. *out malloc'd. */
int agent_review_diff(const char *root, bool staged, const char *range, char **out, size_t *len,
                      struct ctx_err *e);

#endif
