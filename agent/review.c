/* Review findings: format, parser, output, subject (review.h). */
#include "review.h"

#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static const char instructions[] =
    "Review the changes above. Use the read-only tools to check callers, definitions and tests "
    "as needed. Report only real problems: bugs, security issues, broken contracts, missing error "
    "handling, clear performance problems; no style nits. Finish with your findings as a JSON array "
    "in one fenced block tagged findings:\n"
    "```findings\n"
    "[{\"file\": \"path/in/repo.c\", \"line\": 12, \"end_line\": 12, \"severity\": \"error\", "
    "\"message\": \"what is wrong and why\", \"replacement\": \"the corrected text of lines 12-12\\n\"}]\n"
    "```\n"
    "severity is \"error\", \"warning\" or \"info\"; line and end_line are 1-based lines of the new "
    "file; replacement is optional and replaces those whole lines exactly. Write [] if there is "
    "nothing to report.\n";

const char *agent_review_instructions(void) { return instructions; }

const char *agent_severity_name(enum agent_severity s)
{
    switch (s) {
    case AGENT_SEV_ERROR: return "error";
    case AGENT_SEV_WARNING: return "warning";
    case AGENT_SEV_INFO: return "info";
    }
    return "?";
}

void agent_findings_free(struct agent_findings *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].file);
        free(f->v[i].message);
        free(f->v[i].replacement);
    }
    free(f->v);
    f->v = NULL;
    f->n = 0;
}

static const char *find_block(const char *s, size_t len, size_t *blen)
{
    const char *tag = "```findings";
    size_t tl = strlen(tag);
    for (size_t i = 0; i + tl <= len; i++) {
        if (memcmp(s + i, tag, tl) || (i && s[i - 1] != '\n'))
            continue;
        const char *body = memchr(s + i, '\n', len - i);
        if (!body)
            return NULL;
        body++;
        for (const char *p = body; p + 3 <= s + len; p++) {
            if (!memcmp(p, "```", 3) && (p == body || p[-1] == '\n')) {
                *blen = (size_t)(p - body);
                return body;
            }
        }
        return NULL;
    }
    return NULL;
}

int agent_review_parse(const char *answer, size_t len, struct agent_findings *out, struct ctx_err *e)
{
    memset(out, 0, sizeof *out);
    size_t bl;
    const char *b = find_block(answer, len, &bl);
    if (!b)
        return ctx_err_set(e, CTX_ENOTFOUND, "no ```findings block (closed by ```) in the answer; "
                                             "finish with the findings JSON array in that block");
    cJSON *j = cJSON_ParseWithLength(b, bl);
    if (!j || !cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return ctx_err_set(e, CTX_EFORMAT, "the ```findings block is not a JSON array");
    }
    size_t n = (size_t)cJSON_GetArraySize(j), i = 0;
    out->v = calloc(n ? n : 1, sizeof *out->v);
    if (!out->v) {
        cJSON_Delete(j);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    int rc = 0;
    for (const cJSON *it = j->child; !rc && it; it = it->next, i++) {
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(it, "file");
        const cJSON *line = cJSON_GetObjectItemCaseSensitive(it, "line");
        const cJSON *end = cJSON_GetObjectItemCaseSensitive(it, "end_line");
        const cJSON *sev = cJSON_GetObjectItemCaseSensitive(it, "severity");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(it, "message");
        const cJSON *rep = cJSON_GetObjectItemCaseSensitive(it, "replacement");
        struct agent_finding *f = &out->v[i];
        if (!cJSON_IsObject(it))
            rc = ctx_err_set(e, CTX_EFORMAT, "findings[%zu] is not an object", i);
        else if (!cJSON_IsString(file) || !*file->valuestring)
            rc = ctx_err_set(e, CTX_EFORMAT, "findings[%zu].file must be a non-empty string", i);
        else if (!cJSON_IsNumber(line) || line->valuedouble < 1 || line->valuedouble > 1e8 ||
                 line->valuedouble != (double)(unsigned)line->valuedouble)
            rc = ctx_err_set(e, CTX_EFORMAT, "findings[%zu].line must be a positive integer", i);
        else if (end && !cJSON_IsNull(end) &&
                 (!cJSON_IsNumber(end) || end->valuedouble < line->valuedouble || end->valuedouble > 1e8 ||
                  end->valuedouble != (double)(unsigned)end->valuedouble))
            rc = ctx_err_set(e, CTX_EFORMAT, "findings[%zu].end_line must be an integer >= line", i);
        else if (!cJSON_IsString(sev) || (strcmp(sev->valuestring, "error") &&
                                          strcmp(sev->valuestring, "warning") &&
                                          strcmp(sev->valuestring, "info")))
            rc = ctx_err_set(e, CTX_EFORMAT, "findings[%zu].severity must be \"error\", \"warning\" "
                                             "or \"info\"", i);
        else if (!cJSON_IsString(msg) || !*msg->valuestring)
            rc = ctx_err_set(e, CTX_EFORMAT, "findings[%zu].message must be a non-empty string", i);
        else if (rep && !cJSON_IsNull(rep) && !cJSON_IsString(rep))
            rc = ctx_err_set(e, CTX_EFORMAT, "findings[%zu].replacement must be a string", i);
        if (rc)
            break;
        f->line = (unsigned)line->valuedouble;
        f->end_line = cJSON_IsNumber(end) ? (unsigned)end->valuedouble : f->line;
        f->severity = !strcmp(sev->valuestring, "error")     ? AGENT_SEV_ERROR
                      : !strcmp(sev->valuestring, "warning") ? AGENT_SEV_WARNING
                                                             : AGENT_SEV_INFO;
        f->file = strdup(file->valuestring);
        f->message = strdup(msg->valuestring);
        f->replacement = cJSON_IsString(rep) ? strdup(rep->valuestring) : NULL;
        out->n = i + 1;
        if (!f->file || !f->message || (cJSON_IsString(rep) && !f->replacement))
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    cJSON_Delete(j);
    if (rc)
        agent_findings_free(out);
    return rc;
}

cJSON *agent_findings_json(const struct agent_findings *f)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < f->n; i++) {
        const struct agent_finding *x = &f->v[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", x->file);
        cJSON_AddNumberToObject(o, "line", x->line);
        cJSON_AddNumberToObject(o, "end_line", x->end_line);
        cJSON_AddStringToObject(o, "severity", agent_severity_name(x->severity));
        cJSON_AddStringToObject(o, "message", x->message);
        if (x->replacement)
            cJSON_AddStringToObject(o, "replacement", x->replacement);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}


char *agent_findings_text(const struct agent_findings *f)
{
    struct ctx_buf b = {0};
    ctx_buf_puts(&b, "");
    char head[256];
    for (size_t i = 0; i < f->n; i++) {
        const struct agent_finding *x = &f->v[i];
        if (x->end_line != x->line)
            snprintf(head, sizeof head, ":%u-%u: %s: ", x->line, x->end_line, agent_severity_name(x->severity));
        else
            snprintf(head, sizeof head, ":%u: %s: ", x->line, agent_severity_name(x->severity));
        ctx_buf_puts(&b, x->file);
        ctx_buf_puts(&b, head);
        ctx_buf_puts(&b, x->message);
        ctx_buf_puts(&b, "\n");
        if (x->replacement) {
            ctx_buf_puts(&b, "  suggested replacement:\n");
            const char *s = x->replacement;
            while (*s) {
                const char *nl = strchr(s, '\n');
                size_t n = nl ? (size_t)(nl - s) : strlen(s);
                char *line = strndup(s, n);
                if (!line) {
                    b.oom = true;
                    break;
                }
                ctx_buf_puts(&b, "    | ");
                ctx_buf_puts(&b, line);
                ctx_buf_puts(&b, "\n");
                free(line);
                s += n + (nl ? 1 : 0);
            }
        }
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* agent_findings_rdjsonl lives in report.c with the other output formats. */

static int print_cb(const git_diff_delta *d, const git_diff_hunk *h, const git_diff_line *l, void *ud)
{
    (void)d;
    (void)h;
    struct ctx_buf *b = ud;
    char o[2] = {l->origin, 0};
    if (l->origin == GIT_DIFF_LINE_CONTEXT || l->origin == GIT_DIFF_LINE_ADDITION ||
        l->origin == GIT_DIFF_LINE_DELETION)
        ctx_buf_puts(b, o);
    char *c = strndup(l->content, l->content_len);
    if (!c) {
        b->oom = true;
        return 0;
    }
    ctx_buf_puts(b, c);
    free(c);
    return 0;
}

static int tree_of(git_repository *r, const char *spec, git_tree **t)
{
    git_object *o = NULL;
    int g = git_revparse_single(&o, r, spec);
    if (g)
        return g;
    g = git_object_peel((git_object **)t, o, GIT_OBJECT_TREE);
    git_object_free(o);
    return g;
}

int agent_review_diff(const char *root, bool staged, const char *range, char **out, size_t *len,
                      struct ctx_err *e)
{
    *out = NULL;
    *len = 0;
    git_libgit2_init();
    git_repository *r = NULL;
    git_diff *d = NULL;
    git_tree *a = NULL, *b = NULL;
    int rc = 0;
    if (git_repository_open_ext(&r, root, 0, NULL) != 0) {
        rc = CTX_EINVAL;
    } else if (range) {
        const char *dots = strstr(range, "..");
        if (!dots || dots == range || !dots[2]) {
            git_repository_free(r);
            git_libgit2_shutdown();
            return ctx_err_set(e, CTX_EINVAL, "range \"%s\": expected A..B", range);
        }
        char *left = strndup(range, (size_t)(dots - range));
        if (!left || tree_of(r, left, &a) || tree_of(r, dots + 2, &b) ||
            git_diff_tree_to_tree(&d, r, a, b, NULL))
            rc = CTX_EINVAL;
        free(left);
    } else if (staged) {
        tree_of(r, "HEAD", &a); /* unborn: everything staged is new */
        if (git_diff_tree_to_index(&d, r, a, NULL, NULL))
            rc = CTX_EIO;
    } else if (git_diff_index_to_workdir(&d, r, NULL, NULL)) {
        rc = CTX_EIO;
    }
    struct ctx_buf sb = {0};
    if (!rc) {
        ctx_buf_puts(&sb, "");
        git_diff_print(d, GIT_DIFF_FORMAT_PATCH, print_cb, &sb);
        if (sb.oom)
            rc = CTX_ENOMEM;
    }
    if (rc) {
        const git_error *g = git_error_last();
        free(sb.p);
        ctx_err_set(e, rc, "%s: %s", range ? range : root,
                    rc == CTX_ENOMEM ? "out of memory" : g && g->message ? g->message : "libgit2 error");
    } else {
        *out = sb.p;
        *len = sb.len;
    }
    git_diff_free(d);
    git_tree_free(a);
    git_tree_free(b);
    git_repository_free(r);
    git_libgit2_shutdown();
    return rc;
}
