/* Tools that run commands, ask git, or query the symbol index (tools.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "repo.h"
#include "sandbox.h"
#include "tools_int.h"

/* ---- commands ---------------------------------------------------------------------------- */

static void format_run(struct ctx_buf *b, const char *command, const struct agent_run_result *r,
                       int timeout_ms)
{
    ctx_buf_printf(b, "$ %s\n", command);
    if (r->cancelled)
        ctx_buf_puts(b, "[killed: the user cancelled the request]\n");
    else if (r->timed_out)
        ctx_buf_printf(b, "[killed after the %d s timeout, with every process it started]\n", timeout_ms / 1000);
    else if (r->signal)
        ctx_buf_printf(b, "[killed by signal %d]\n", r->signal);
    else
        ctx_buf_printf(b, "[exit code %d]\n", r->exit_code);
    ctx_buf_put(b, r->output, r->output_len);
    if (r->output_len && r->output[r->output_len - 1] != '\n')
        ctx_buf_puts(b, "\n");
    if (r->truncated)
        ctx_buf_printf(b, "[output truncated: the first %zu of %zu bytes are shown; redirect to a file "
                     "and read parts of it, or filter with grep/head/tail]\n",
                  r->output_len, r->total_output);
}

/* Run with the policy's sandbox rules. `trusted`: the user configured this command (run_tests),
 * so the allow/ask/deny patterns do not apply, only the sandbox and its fallback. */
static int run_checked(struct agent_tools *t, const char *command, int timeout_ms, bool trusted,
                       struct agent_tool_result *out, struct ctx_err *e)
{
    const struct agent_policy *pol = t->c.policy ? t->c.policy : agent_policy_default();
    if (!trusted) {
        const char *pat;
        enum agent_decision d = agent_policy_decide(pol, command, &pat);
        if (d == AGENT_DENY)
            return tools_fail(t, out, e, "the command was not run: the user's command policy denies "
                              "it (pattern \"%s\"). This is a policy decision, not a failure of the "
                              "command or the toolchain; do not retry it or work around it. Use the "
                              "file tools, or say in your answer what the user should run",
                              pat ? pat : "default: deny");
        if (d == AGENT_ASK && !(t->c.ask && t->c.ask(t->c.ask_ud, command)))
            return tools_fail(t, out, e, "the command was not run: the user %s. Do not retry the "
                              "same command; continue without it or explain what you need",
                              t->c.ask ? "declined it" : "was not available to approve it (commands "
                              "outside the allow list need approval)");
    }
    char why[256];
    bool sandbox = agent_sandbox_probe(why, sizeof why);
    if (!sandbox) {
        enum agent_decision fb = agent_policy_fallback(pol);
        if (fb == AGENT_DENY)
            return tools_fail(t, out, e, "the command was not run: commands need the sandbox "
                              "(Linux user namespaces), which is unavailable here (%s), and the "
                              "policy's fallback is deny. Continue with the file tools", why);
        if (fb == AGENT_ASK && !(t->c.ask && t->c.ask(t->c.ask_ud, command)))
            return tools_fail(t, out, e, "the command was not run: the sandbox is unavailable (%s) "
                              "and the user did not approve running it unsandboxed", why);
    }
    struct agent_run_opts o = {
        .root = t->root,
        .timeout_ms = timeout_ms,
        .max_output = t->c.max_output ? t->c.max_output / 2 : 16384,
        .sandbox = sandbox,
        .cancel = t->c.cancel,
    };
    struct agent_run_result r;
    struct ctx_err re = {0};
    int rc = agent_run(command, &o, &r, &re);
    if (rc == CTX_ENOMEM)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (rc)
        return tools_fail(t, out, e, "the command could not be started: %s", re.msg);
    struct ctx_buf b = {0};
    format_run(&b, command, &r, o.timeout_ms);
    bool err = r.timed_out || r.cancelled || r.signal || r.exit_code != 0;
    if (!sandbox)
        ctx_buf_printf(&b, "[ran without the sandbox: %s]\n", why);
    else if (err)
        /* Explain the sandbox to the model, so that a denied write or connection is not taken
         * for a broken toolchain and worked around. */
        ctx_buf_puts(&b, "[sandbox: there is no network, and only the repository is writable (its .git "
                    "and .ctx read-only, /tmp private); errors such as \"Network is unreachable\" "
                    "or \"Read-only file system\" come from the sandbox, not from the project. "
                    "Do not try to work around them; say in your answer what the user should run "
                    "outside the sandbox]\n");
    agent_run_result_free(&r);
    /* Commands may change files the tools do not see: the caller re-reads the working tree. */
    return tools_finish(t, &b, err, true, out, e);
}

int tool_run_command(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e)
{
    int rc = 0;
    const char *cmd;
    long long to;
    int def = t->c.command_timeout_ms > 0 ? t->c.command_timeout_ms : 120000;
    if (!arg_str(t, a, "command", true, &cmd, out, &rc, e) ||
        !arg_int(t, a, "timeout_s", def / 1000 ? def / 1000 : 1, 1, 1800, &to, out, &rc, e))
        return rc;
    if (!*cmd)
        return tools_fail(t, out, e, "the command is empty");
    int ms = (int)to * 1000;
    if (ms > def && cJSON_GetObjectItemCaseSensitive(a, "timeout_s") == NULL)
        ms = def;
    return run_checked(t, cmd, ms, false, out, e);
}

int tool_run_tests(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e)
{
    (void)a;
    char *path = tools_abs(t, ".ctx/config.json");
    if (!path)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    struct ctx_err ce = {0};
    cJSON *cfg = NULL;
    FILE *f = fopen(path, "r");
    if (f) {
        fclose(f);
        cfg = ctx_json_read_file(path, 1 << 20, &ce);
    }
    free(path);
    if (!f)
        return tools_fail(t, out, e, "no test command is configured for this repository: "
                          ".ctx/config.json does not exist. Ask the user to add {\"test_command\": "
                          "\"...\"} there (the agent may not write .ctx/), or run a test command "
                          "you know with run_command");
    if (!cfg)
        return tools_fail(t, out, e, ".ctx/config.json cannot be used: %s; ask the user to fix it", ce.msg);
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(cfg, "test_command");
    const cJSON *tt = cJSON_GetObjectItemCaseSensitive(cfg, "test_timeout_s");
    if (!cJSON_IsString(tc) || !*tc->valuestring) {
        cJSON_Delete(cfg);
        return tools_fail(t, out, e, "no test command is configured: .ctx/config.json has no "
                          "\"test_command\" string. Ask the user to add one, or run a test "
                          "command you know with run_command");
    }
    int ms = t->c.command_timeout_ms > 0 ? t->c.command_timeout_ms : 120000;
    if (cJSON_IsNumber(tt) && tt->valuedouble >= 1 && tt->valuedouble <= 3600)
        ms = (int)tt->valuedouble * 1000;
    char *cmd = strdup(tc->valuestring);
    cJSON_Delete(cfg);
    if (!cmd)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = run_checked(t, cmd, ms, true, out, e);
    free(cmd);
    return rc;
}

/* ---- git --------------------------------------------------------------------------------- */

static int git_fail_result(struct agent_tools *t, struct agent_tool_result *out, struct ctx_err *e,
                           const char *what)
{
    const git_error *g = git_error_last();
    return tools_fail(t, out, e, "%s failed: %s", what, g && g->message ? g->message : "libgit2 error");
}

static char status_char(unsigned s, bool index)
{
    if (index) {
        if (s & GIT_STATUS_INDEX_NEW) return 'A';
        if (s & GIT_STATUS_INDEX_MODIFIED) return 'M';
        if (s & GIT_STATUS_INDEX_DELETED) return 'D';
        if (s & GIT_STATUS_INDEX_RENAMED) return 'R';
        if (s & GIT_STATUS_INDEX_TYPECHANGE) return 'T';
        return ' ';
    }
    if (s & GIT_STATUS_WT_NEW) return '?';
    if (s & GIT_STATUS_WT_MODIFIED) return 'M';
    if (s & GIT_STATUS_WT_DELETED) return 'D';
    if (s & GIT_STATUS_WT_RENAMED) return 'R';
    if (s & GIT_STATUS_WT_TYPECHANGE) return 'T';
    return ' ';
}

int tool_git_status(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e)
{
    (void)a;
    git_status_options o;
    git_status_options_init(&o, GIT_STATUS_OPTIONS_VERSION);
    o.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR;
    o.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS |
              GIT_STATUS_OPT_RENAMES_HEAD_TO_INDEX | GIT_STATUS_OPT_SORT_CASE_SENSITIVELY;
    git_status_list *l;
    if (git_status_list_new(&l, t->repo, &o) != 0)
        return git_fail_result(t, out, e, "git status");
    struct ctx_buf b = {0};
    git_reference *head = NULL;
    if (git_repository_head(&head, t->repo) == 0) {
        ctx_buf_printf(&b, "on branch %s\n", git_reference_shorthand(head));
        git_reference_free(head);
    } else {
        ctx_buf_puts(&b, "no commits yet\n");
    }
    size_t n = git_status_list_entrycount(l);
    for (size_t i = 0; i < n; i++) {
        const git_status_entry *s = git_status_byindex(l, i);
        if (s->status == GIT_STATUS_CURRENT || (s->status & GIT_STATUS_IGNORED))
            continue;
        const git_diff_delta *d = s->head_to_index ? s->head_to_index : s->index_to_workdir;
        char x = status_char(s->status, true), y = status_char(s->status, false);
        if (y == '?')
            x = '?';
        if (s->status & GIT_STATUS_CONFLICTED)
            x = y = 'U';
        if (s->head_to_index && (s->status & GIT_STATUS_INDEX_RENAMED))
            ctx_buf_printf(&b, "%c%c %s -> %s\n", x, y, s->head_to_index->old_file.path,
                      s->head_to_index->new_file.path);
        else
            ctx_buf_printf(&b, "%c%c %s\n", x, y, d ? d->new_file.path : "?");
    }
    if (!n)
        ctx_buf_puts(&b, "nothing to commit, working tree clean\n");
    git_status_list_free(l);
    return tools_finish(t, &b, false, false, out, e);
}

static int print_cb(const git_diff_delta *d, const git_diff_hunk *h, const git_diff_line *l, void *ud)
{
    (void)d;
    (void)h;
    struct ctx_buf *b = ud;
    if (l->origin == GIT_DIFF_LINE_CONTEXT || l->origin == GIT_DIFF_LINE_ADDITION ||
        l->origin == GIT_DIFF_LINE_DELETION)
        ctx_buf_put(b, &l->origin, 1);
    ctx_buf_put(b, l->content, l->content_len);
    return 0;
}

int tool_git_diff(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e)
{
    int rc = 0;
    bool staged;
    const char *path;
    if (!arg_bool(t, a, "staged", false, &staged, out, &rc, e) ||
        !arg_str(t, a, "path", false, &path, out, &rc, e))
        return rc;
    char *rel = NULL;
    if (path) {
        struct ctx_err pe = {0};
        int r = agent_path_resolve(t->root, path, false, &rel, &pe);
        if (r == CTX_ENOMEM)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        if (r)
            return tools_fail(t, out, e, "%s", pe.msg);
    }
    git_diff_options o;
    git_diff_options_init(&o, GIT_DIFF_OPTIONS_VERSION);
    char *spec[1] = {rel};
    if (rel && *rel) {
        o.pathspec.strings = spec;
        o.pathspec.count = 1;
    }
    o.flags |= GIT_DIFF_INCLUDE_UNTRACKED | GIT_DIFF_SHOW_UNTRACKED_CONTENT | GIT_DIFF_RECURSE_UNTRACKED_DIRS;
    git_diff *d = NULL;
    int g;
    if (staged) {
        git_object *tree = NULL;
        git_tree *tr = NULL;
        if (git_revparse_single(&tree, t->repo, "HEAD^{tree}") == 0)
            tr = (git_tree *)tree;
        g = git_diff_tree_to_index(&d, t->repo, tr, NULL, &o);
        git_object_free(tree);
    } else {
        g = git_diff_index_to_workdir(&d, t->repo, NULL, &o);
    }
    free(rel);
    if (g)
        return git_fail_result(t, out, e, "git diff");
    struct ctx_buf b = {0};
    git_diff_print(d, GIT_DIFF_FORMAT_PATCH, print_cb, &b);
    if (!b.len && !b.oom)
        ctx_buf_printf(&b, "no %s changes\n", staged ? "staged" : "unstaged");
    git_diff_free(d);
    return tools_finish(t, &b, false, false, out, e);
}

/* ---- symbols ----------------------------------------------------------------------------- */

/* The snapshot's symbols rather than store/'s tables: the snapshot lists references with their
 * positions (store/ keeps only a count per name), reflects the working tree including the agent's
 * own edits (the changed files are refreshed before each query), and needs no per-thread database
 * connection. */
static int snapshot(struct agent_tools *t, struct repo_snapshot **s, struct ctx_err *e)
{
    if (t->c.snapshot) {
        *s = t->c.snapshot;
        return 0;
    }
    if (!t->own_snap) {
        struct repo_options o;
        repo_options_default(&o);
        o.allow_foreign_owner = true;
        int rc = repo_snapshot_open(t->root, &o, NULL, &t->own_snap, e);
        if (rc)
            return rc;
    }
    *s = t->own_snap;
    return 0;
}

/* Files changed through the tools since the index was read: refresh them before a query. */
static int refresh(struct agent_tools *t, struct repo_snapshot *s, struct ctx_err *e)
{
    if (!t->nchanged || s != t->own_snap)
        return 0; /* a borrowed snapshot is refreshed by its owner (agent_tools_take_changed) */
    return repo_snapshot_refresh(s, (const char *const *)t->changed, t->nchanged, e);
}

static void line_text(const struct repo_file *f, uint32_t line, const char **p, size_t *n)
{
    const char *s = f->text, *end = f->text + f->len;
    for (uint32_t l = 0; l < line && s < end; l++) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        s = nl ? nl + 1 : end;
    }
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    *p = s;
    *n = (size_t)((nl ? nl : end) - s);
    while (*n && (**p == ' ' || **p == '\t'))
        (*p)++, (*n)--;
    if (*n > 200)
        *n = 200;
}

static int symbols_query(struct agent_tools *t, const cJSON *a, bool defs, struct agent_tool_result *out,
                         struct ctx_err *e)
{
    int rc = 0;
    const char *name;
    if (!arg_str(t, a, "name", true, &name, out, &rc, e))
        return rc;
    if (!*name)
        return tools_fail(t, out, e, "the name is empty");
    struct repo_snapshot *s;
    struct ctx_err se = {0};
    int r = snapshot(t, &s, &se);
    if (!r)
        r = refresh(t, s, &se);
    if (r == CTX_ENOMEM)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (r)
        return tools_fail(t, out, e, "the symbol index is unavailable: %s; use search instead", se.msg);
    size_t nl = strlen(name), shown = 0, total = 0, limit = 100;
    struct ctx_buf b = {0};
    /* Pass 0: exact names; pass 1 (definitions only): names containing the text, any case. */
    for (int pass = 0; pass < (defs ? 2 : 1); pass++) {
        for (size_t i = 0; i < s->nfiles; i++) {
            const struct repo_file *f = &s->files[i];
            if (!f->text)
                continue;
            for (size_t k = 0; k < f->nsyms; k++) {
                const struct repo_symbol *y = &f->syms[k];
                if ((bool)y->is_def != defs)
                    continue;
                const char *sn = f->text + y->name_off;
                bool exact = y->name_len == nl && !memcmp(sn, name, nl);
                bool hit = pass == 0 && exact;
                if (pass == 1 && !exact) {
                    hit = false;
                    for (size_t o = 0; !hit && o + nl <= y->name_len; o++)
                        hit = !strncasecmp(sn + o, name, nl);
                }
                if (!hit)
                    continue;
                total++;
                if (shown >= limit)
                    continue;
                shown++;
                const char *lp;
                size_t ln;
                line_text(f, y->line, &lp, &ln);
                if (defs)
                    ctx_buf_printf(&b, "%s:%u: %s %.*s: %.*s\n", f->path, y->line + 1,
                              repo_sym_kind_name((enum repo_sym_kind)y->kind), (int)y->name_len, sn,
                              (int)ln, lp);
                else
                    ctx_buf_printf(&b, "%s:%u:%u: %.*s\n", f->path, y->line + 1, y->col + 1, (int)ln, lp);
            }
        }
    }
    if (!total)
        ctx_buf_printf(&b, "no %s named \"%s\" in the index%s\n", defs ? "definitions" : "references", name,
                  defs ? "; try search with a regular expression" : "; try search for the text");
    else if (total > shown)
        ctx_buf_printf(&b, "[%zu of %zu shown; use a more specific name]\n", shown, total);
    return tools_finish(t, &b, false, false, out, e);
}

int tool_find_symbol(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e)
{
    return symbols_query(t, a, true, out, e);
}

int tool_find_references(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e)
{
    return symbols_query(t, a, false, out, e);
}
