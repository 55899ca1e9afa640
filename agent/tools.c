/* Tool registry, path confinement, the overlay and the file tools (tools.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tools_int.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "patch.h"
#include "repo.h"
#include "undo.h"

/* ---- schemas ----------------------------------------------------------------------------- */

/* Frozen: this text is part of every cached prompt prefix. Change it only with a reason to
 * re-prefill every repository (tests/agent/test_tools.c pins its hash). */
static const char schema_text[] =
    "["
    "{\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"description\":\"Read a text file of the repository with line numbers. Use start_line/end_line (1-based, inclusive) for long files.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"description\":\"Path relative to the repository root\"},\"start_line\":{\"type\":\"integer\"},\"end_line\":{\"type\":\"integer\"}},\"required\":[\"path\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"list_dir\",\"description\":\"List a directory of the repository (ignored files left out). Directories end with '/'.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"description\":\"Directory relative to the repository root; default the root\"},\"depth\":{\"type\":\"integer\",\"description\":\"Levels to descend, 1 to 4; default 1\"}},\"required\":[]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"search\",\"description\":\"Search the working tree with a PCRE2 regular expression, line by line. Ignored and binary files are skipped.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"pattern\":{\"type\":\"string\"},\"path\":{\"type\":\"string\",\"description\":\"Directory or file to search; default the root\"},\"glob\":{\"type\":\"string\",\"description\":\"Only files matching this glob (e.g. *.c, src/**/*.py)\"},\"case_insensitive\":{\"type\":\"boolean\"},\"max_results\":{\"type\":\"integer\"}},\"required\":[\"pattern\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"find_symbol\",\"description\":\"Find definitions (functions, types, macros, classes...) by name in the repository index: exact matches first, then names containing the text.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":[\"name\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"find_references\",\"description\":\"Find references to (uses of) a symbol by its exact name in the repository index.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":[\"name\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"edit_file\",\"description\":\"Replace old_string with new_string in a file. old_string must match exactly once (include surrounding lines to make it unique) unless replace_all is true.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},\"old_string\":{\"type\":\"string\"},\"new_string\":{\"type\":\"string\"},\"replace_all\":{\"type\":\"boolean\"}},\"required\":[\"path\",\"old_string\",\"new_string\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"write_file\",\"description\":\"Create a file or replace its whole content.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},\"content\":{\"type\":\"string\"}},\"required\":[\"path\",\"content\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"apply_patch\",\"description\":\"Apply a unified diff (--- a/path, +++ b/path, @@ hunks; /dev/null to create or delete files). All files and hunks apply or nothing does.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"patch\":{\"type\":\"string\"}},\"required\":[\"patch\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"run_command\",\"description\":\"Run a shell command in the repository root (sandboxed: no network, only the repository is writable) and return its exit code and output.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"command\":{\"type\":\"string\"},\"timeout_s\":{\"type\":\"integer\"}},\"required\":[\"command\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"run_tests\",\"description\":\"Run the repository's configured test command and return its exit code and output.\",\"parameters\":{\"type\":\"object\",\"properties\":{},\"required\":[]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"git_status\",\"description\":\"Show changed, staged and untracked files.\",\"parameters\":{\"type\":\"object\",\"properties\":{},\"required\":[]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"git_diff\",\"description\":\"Show the diff of the working tree against the index, or of the index against HEAD when staged is true.\",\"parameters\":{\"type\":\"object\",\"properties\":{\"staged\":{\"type\":\"boolean\"},\"path\":{\"type\":\"string\"}},\"required\":[]}}}"
    "]";

const char *agent_tools_schema_text(void) { return schema_text; }

static const char *const read_only_tools[] = {"read_file", "list_dir", "search", "find_symbol",
                                              "find_references", "git_status", "git_diff"};

bool agent_tool_is_read_only(const char *name)
{
    for (size_t i = 0; i < sizeof read_only_tools / sizeof *read_only_tools; i++)
        if (!strcmp(name, read_only_tools[i]))
            return true;
    return false;
}

const char *agent_mode_name(enum agent_mode m)
{
    switch (m) {
    case AGENT_MODE_INTERACTIVE: return "interactive";
    case AGENT_MODE_REVIEW: return "review";
    case AGENT_MODE_SUGGEST: return "suggest";
    }
    return "?";
}

/* ---- buffers and results ----------------------------------------------------------------- */

static size_t max_output(const struct agent_tools *t) { return t->c.max_output ? t->c.max_output : 32768; }

int tools_finish(struct agent_tools *t, struct ctx_buf *b, bool is_error, bool changed,
                 struct agent_tool_result *out, struct ctx_err *e)
{
    if (!b->p && !b->oom)
        ctx_buf_puts(b, "");
    if (b->oom) {
        free(b->p);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    size_t cap = max_output(t);
    if (b->len > cap) {
        size_t total = b->len, cut = cap;
        /* Cut at a line end when one is near, never inside a UTF-8 character. */
        const char *nl = memrchr(b->p, '\n', cut);
        if (nl && (size_t)(nl - b->p) > cut / 2)
            cut = (size_t)(nl - b->p) + 1;
        while (cut && ((unsigned char)b->p[cut] & 0xC0) == 0x80)
            cut--;
        b->len = cut;
        ctx_buf_printf(b, "\n[output truncated: %zu of %zu bytes shown; narrow the request (a line range, "
                     "a path, a more specific pattern) to see the rest]\n", cut, total);
        if (b->oom) {
            free(b->p);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
    }
    out->text = b->p;
    out->len = b->len;
    out->is_error = is_error;
    out->changed = changed;
    return 0;
}

int tools_fail(struct agent_tools *t, struct agent_tool_result *out, struct ctx_err *e,
               const char *fmt, ...)
{
    struct ctx_buf b = {0};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctx_buf_puts(&b, "error: ");
    ctx_buf_puts(&b, msg);
    return tools_finish(t, &b, true, false, out, e);
}

void agent_tool_result_free(struct agent_tool_result *r)
{
    if (!r)
        return;
    free(r->text);
    r->text = NULL;
    r->len = 0;
}

bool arg_str(struct agent_tools *t, const cJSON *a, const char *name, bool required, const char **v,
             struct agent_tool_result *out, int *rc, struct ctx_err *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(a, name);
    *v = NULL;
    if (!j || cJSON_IsNull(j)) {
        if (!required)
            return true;
        *rc = tools_fail(t, out, e, "missing required argument \"%s\" (a string)", name);
        return false;
    }
    if (!cJSON_IsString(j)) {
        *rc = tools_fail(t, out, e, "argument \"%s\" must be a string (string=\"true\")", name);
        return false;
    }
    *v = j->valuestring;
    return true;
}

bool arg_int(struct agent_tools *t, const cJSON *a, const char *name, long long def, long long lo,
             long long hi, long long *v, struct agent_tool_result *out, int *rc, struct ctx_err *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(a, name);
    *v = def;
    if (!j || cJSON_IsNull(j))
        return true;
    double d = j->valuedouble;
    if (cJSON_IsString(j)) { /* a number sent with string="true" is still meant as a number */
        char *end;
        d = strtod(j->valuestring, &end);
        if (end == j->valuestring || *end) {
            *rc = tools_fail(t, out, e, "argument \"%s\" must be an integer", name);
            return false;
        }
    } else if (!cJSON_IsNumber(j)) {
        *rc = tools_fail(t, out, e, "argument \"%s\" must be an integer", name);
        return false;
    }
    if (d != (double)(long long)d || d < (double)lo || d > (double)hi) {
        *rc = tools_fail(t, out, e, "argument \"%s\" must be an integer from %lld to %lld", name, lo, hi);
        return false;
    }
    *v = (long long)d;
    return true;
}

bool arg_bool(struct agent_tools *t, const cJSON *a, const char *name, bool def, bool *v,
              struct agent_tool_result *out, int *rc, struct ctx_err *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(a, name);
    *v = def;
    if (!j || cJSON_IsNull(j))
        return true;
    if (cJSON_IsBool(j)) {
        *v = cJSON_IsTrue(j);
        return true;
    }
    if (cJSON_IsString(j) && (!strcmp(j->valuestring, "true") || !strcmp(j->valuestring, "false"))) {
        *v = !strcmp(j->valuestring, "true");
        return true;
    }
    *rc = tools_fail(t, out, e, "argument \"%s\" must be true or false", name);
    return false;
}

/* ---- paths ------------------------------------------------------------------------------- */

char *tools_abs(const struct agent_tools *t, const char *rel)
{
    size_t l = strlen(t->root) + strlen(rel) + 2;
    char *p = malloc(l);
    if (p)
        snprintf(p, l, "%s%s%s", t->root, *rel ? "/" : "", rel);
    return p;
}

static bool protected_dir(const char *rel, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(rel, dir, n) && (rel[n] == 0 || rel[n] == '/');
}

int agent_path_resolve(const char *root, const char *path, bool for_write, char **rel,
                       struct ctx_err *e)
{
    *rel = NULL;
    if (!path)
        return ctx_err_set(e, CTX_EINVAL, "no path given");
    if (path[0] == '/')
        return ctx_err_set(e, CTX_EDENIED, "\"%s\" is an absolute path; paths are relative to the "
                           "repository root (e.g. src/main.c)", path);
    char *rroot = realpath(root, NULL);
    if (!rroot)
        return ctx_err_errno(e, CTX_EIO, errno, "repository root %s", root);
    size_t pl = strlen(path);
    char *norm = malloc(pl + 1);
    if (!norm) {
        free(rroot);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    /* Normalize: drop "." and empty components; refuse "..". */
    size_t w = 0;
    int rc = 0;
    for (const char *s = path; *s;) {
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : strlen(s);
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            rc = ctx_err_set(e, CTX_EDENIED, "\"%s\" contains \"..\"; paths must stay inside the "
                             "repository (write them relative to the root without \"..\")", path);
            break;
        }
        if (n && !(n == 1 && s[0] == '.')) {
            if (w)
                norm[w++] = '/';
            memcpy(norm + w, s, n);
            w += n;
        }
        s += n;
        if (*s == '/')
            s++;
    }
    norm[w] = 0;
    if (!rc && for_write && (protected_dir(norm, ".git") || protected_dir(norm, ".ctx")))
        rc = ctx_err_set(e, CTX_EDENIED, "\"%s\" is under %s/, which the agent may not change",
                         path, protected_dir(norm, ".git") ? ".git" : ".ctx");
    if (!rc && for_write && !*norm)
        rc = ctx_err_set(e, CTX_EINVAL, "\"%s\" is the repository root, not a file", path);
    /* Symlinks: the longest existing prefix must resolve inside the root; the rest does not
     * exist yet (a new file), so it cannot be a link. */
    if (!rc) {
        char *abs = malloc(strlen(rroot) + w + 2);
        if (!abs) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        } else {
            sprintf(abs, "%s%s%s", rroot, w ? "/" : "", norm);
            size_t al = strlen(abs);
            char *real = NULL;
            for (;;) {
                real = realpath(abs, NULL);
                if (real || errno != ENOENT)
                    break;
                char *sl = strrchr(abs, '/');
                if (!sl || (size_t)(sl - abs) < strlen(rroot))
                    break;
                *sl = 0;
            }
            (void)al;
            size_t rl = strlen(rroot);
            if (!real) {
                rc = ctx_err_errno(e, CTX_EIO, errno, "\"%s\"", path);
            } else if (strncmp(real, rroot, rl) != 0 || (real[rl] != 0 && real[rl] != '/')) {
                rc = ctx_err_set(e, CTX_EDENIED, "\"%s\" resolves (through a symbolic link) to %s, "
                                 "outside the repository; only files inside it can be used", path, real);
            } else if (for_write) {
                const char *inside = real[rl] ? real + rl + 1 : "";
                if (protected_dir(inside, ".git") || protected_dir(inside, ".ctx"))
                    rc = ctx_err_set(e, CTX_EDENIED, "\"%s\" resolves (through a symbolic link) to "
                                     "%s, which the agent may not change", path, inside);
            }
            /* A final component that is itself a link, even to a file inside: writing through
             * it would change the link target, not the link; refuse and say so. */
            if (!rc && for_write && w) {
                struct stat st;
                sprintf(abs, "%s/%s", rroot, norm);
                if (lstat(abs, &st) == 0 && S_ISLNK(st.st_mode))
                    rc = ctx_err_set(e, CTX_EDENIED, "\"%s\" is a symbolic link; edit the file it "
                                     "points to instead", path);
            }
            free(real);
            free(abs);
        }
    }
    free(rroot);
    if (rc) {
        free(norm);
        return rc;
    }
    *rel = norm;
    return 0;
}

static int resolve(struct agent_tools *t, const char *path, bool for_write, char **rel,
                   struct agent_tool_result *out, int *rc, struct ctx_err *e)
{
    struct ctx_err pe = {0};
    int r = agent_path_resolve(t->root, path, for_write, rel, &pe);
    if (r == CTX_ENOMEM) {
        *rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        return r;
    }
    if (r)
        *rc = tools_fail(t, out, e, "%s", pe.msg);
    return r;
}

int agent_write_atomic(const char *abs_path, const char *data, size_t len, unsigned mode,
                       struct ctx_err *e)
{
    char *dir = strdup(abs_path);
    if (!dir)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    char *sl = strrchr(dir, '/');
    if (sl && sl != dir)
        *sl = 0;
    /* Parents, one component at a time. */
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            int rc = ctx_err_errno(e, CTX_EIO, errno, "creating directory %s", dir);
            free(dir);
            return rc;
        }
        *p = '/';
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        int rc = ctx_err_errno(e, CTX_EIO, errno, "creating directory %s", dir);
        free(dir);
        return rc;
    }
    struct stat st;
    if (!mode)
        mode = stat(abs_path, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 0644;
    size_t tl = strlen(abs_path) + 32;
    char *tmp = malloc(tl);
    if (!tmp) {
        free(dir);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    snprintf(tmp, tl, "%s.ctx-tmp-XXXXXX", abs_path);
    int fd = mkstemp(tmp);
    int rc = 0;
    if (fd < 0) {
        rc = ctx_err_errno(e, CTX_EIO, errno, "creating a temporary file next to %s", abs_path);
    } else {
        for (size_t off = 0; !rc && off < len;) {
            ssize_t n = write(fd, data + off, len - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                rc = ctx_err_errno(e, CTX_EIO, errno, "writing %s", tmp);
            else
                off += (size_t)n;
        }
        if (!rc && fchmod(fd, mode) != 0)
            rc = ctx_err_errno(e, CTX_EIO, errno, "chmod %s", tmp);
        if (!rc && fsync(fd) != 0)
            rc = ctx_err_errno(e, CTX_EIO, errno, "fsync %s", tmp);
        if (close(fd) != 0 && !rc)
            rc = ctx_err_errno(e, CTX_EIO, errno, "closing %s", tmp);
        if (!rc && rename(tmp, abs_path) != 0)
            rc = ctx_err_errno(e, CTX_EIO, errno, "renaming into %s", abs_path);
        if (rc)
            unlink(tmp);
    }
    if (!rc) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(tmp);
    free(dir);
    return rc;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

int agent_tools_new(const struct agent_tools_config *c, struct agent_tools **out, struct ctx_err *e)
{
    *out = NULL;
    if (!c || !c->root)
        return ctx_err_set(e, CTX_EINVAL, "agent tools: no repository root");
    git_libgit2_init();
    struct agent_tools *t = calloc(1, sizeof *t);
    if (!t) {
        git_libgit2_shutdown();
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    t->c = *c;
    t->root = realpath(c->root, NULL);
    if (!t->root) {
        int rc = ctx_err_errno(e, CTX_EIO, errno, "repository root %s", c->root);
        agent_tools_free(t);
        return rc;
    }
    t->c.root = t->root;
    if (git_repository_open_ext(&t->repo, t->root, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) != 0) {
        const git_error *g = git_error_last();
        int rc = ctx_err_set(e, CTX_EINVAL, "%s is not a git repository: %s", t->root,
                             g && g->message ? g->message : "?");
        agent_tools_free(t);
        return rc;
    }
    /* .ctxignore (what the repository keeps away from the model) applies like .gitignore. */
    char *ig = tools_abs(t, ".ctxignore");
    char *text = NULL;
    size_t tl = 0;
    struct ctx_err ie = {0};
    if (ig && access(ig, F_OK) == 0) {
        int rc = ctx_read_file(ig, 1 << 20, &text, &tl, &ie);
        if (!rc)
            rc = repo_ignore_parse(text, tl, &t->ctxignore, &ie);
        free(text);
        if (rc) {
            free(ig);
            agent_tools_free(t);
            return ctx_err_set(e, rc, ".ctxignore: %s", ie.msg);
        }
    }
    free(ig);
    if (!(t->schemas = cJSON_Parse(schema_text))) {
        agent_tools_free(t);
        return ctx_err_set(e, CTX_EINTERNAL, "the built-in tool schemas do not parse");
    }
    *out = t;
    return 0;
}

void agent_tools_free(struct agent_tools *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nov; i++) {
        free(t->ov[i].path);
        free(t->ov[i].data);
    }
    free(t->ov);
    for (size_t i = 0; i < t->nbufs; i++) {
        free(t->bufs[i].path);
        free(t->bufs[i].data);
    }
    free(t->bufs);
    agent_tools_paths_free(t->changed, t->nchanged);
    repo_snapshot_free(t->own_snap);
    repo_ignore_free(t->ctxignore);
    cJSON_Delete(t->schemas);
    git_repository_free(t->repo);
    free(t->root);
    free(t);
    git_libgit2_shutdown();
}

const cJSON *agent_tools_schemas(const struct agent_tools *t) { return t->schemas; }

void agent_tools_paths_free(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int agent_tools_take_changed(struct agent_tools *t, char ***paths, size_t *n)
{
    qsort(t->changed, t->nchanged, sizeof *t->changed, cmp_str);
    *paths = t->changed;
    *n = t->nchanged;
    t->changed = NULL;
    t->nchanged = 0;
    return 0;
}

static int note_changed(struct agent_tools *t, const char *rel)
{
    for (size_t i = 0; i < t->nchanged; i++)
        if (!strcmp(t->changed[i], rel))
            return 0;
    char **n = realloc(t->changed, (t->nchanged + 1) * sizeof *n);
    if (!n)
        return CTX_ENOMEM;
    t->changed = n;
    if (!(n[t->nchanged] = strdup(rel)))
        return CTX_ENOMEM;
    t->nchanged++;
    return 0;
}

/* ---- file access through the overlay ----------------------------------------------------- */

static struct ov_entry *ov_find(struct agent_tools *t, const char *rel)
{
    for (size_t i = 0; i < t->nov; i++)
        if (!strcmp(t->ov[i].path, rel))
            return &t->ov[i];
    return NULL;
}

static struct ov_entry *buf_find(struct agent_tools *t, const char *rel)
{
    for (size_t i = 0; i < t->nbufs; i++)
        if (!strcmp(t->bufs[i].path, rel))
            return &t->bufs[i];
    return NULL;
}

int agent_tools_set_buffer(struct agent_tools *t, const char *rel, const char *text, size_t len,
                           struct ctx_err *e)
{
    struct ov_entry *b = buf_find(t, rel);
    char *data = malloc(len + 1);
    if (!data)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    memcpy(data, text, len);
    data[len] = 0;
    if (!b) {
        struct ov_entry *n = realloc(t->bufs, (t->nbufs + 1) * sizeof *n);
        char *p = strdup(rel);
        if (!n || !p) {
            if (n)
                t->bufs = n;
            free(p);
            free(data);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
        t->bufs = n;
        b = &t->bufs[t->nbufs++];
        b->path = p;
        b->data = NULL;
    }
    free(b->data);
    b->data = data;
    b->len = len;
    return 0;
}

#define MAX_FILE (16u << 20)

/* Read a file (overlay first). *exists false when absent; directories are CTX_EINVAL. */
static int read_text(struct agent_tools *t, const char *rel, char **buf, size_t *len, bool *exists,
                     struct ctx_err *e)
{
    *buf = NULL;
    *len = 0;
    *exists = false;
    struct ov_entry *o = ov_find(t, rel);
    if (!o)
        o = buf_find(t, rel); /* the user's unsaved buffer, under the agent's own overlay */
    if (o) {
        if (!o->data)
            return 0;
        if (!(*buf = malloc(o->len + 1)))
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        memcpy(*buf, o->data, o->len);
        (*buf)[o->len] = 0;
        *len = o->len;
        *exists = true;
        return 0;
    }
    char *abs = tools_abs(t, rel);
    if (!abs)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    struct stat st;
    int rc = 0;
    if (stat(abs, &st) != 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            rc = ctx_err_errno(e, CTX_EIO, errno, "%s", rel);
    } else if (S_ISDIR(st.st_mode)) {
        rc = ctx_err_set(e, CTX_EINVAL, "%s is a directory; use list_dir to see its entries", rel);
    } else if (!S_ISREG(st.st_mode)) {
        rc = ctx_err_set(e, CTX_EINVAL, "%s is not a regular file", rel);
    } else if ((size_t)st.st_size > MAX_FILE) {
        rc = ctx_err_set(e, CTX_ERANGE, "%s is %lld bytes, over the %u MiB the tools handle", rel,
                         (long long)st.st_size, MAX_FILE >> 20);
    } else {
        rc = ctx_read_file(abs, MAX_FILE, buf, len, e);
        if (!rc)
            *exists = true;
    }
    free(abs);
    return rc;
}

static bool is_binary(const char *buf, size_t len)
{
    return memchr(buf, 0, len < 8000 ? len : 8000) != NULL;
}

/* Change a file: overlay in suggest mode, else undo record + atomic write (data NULL: delete). */
static int write_text(struct agent_tools *t, const char *rel, const char *data, size_t len,
                      struct ctx_err *e)
{
    if (t->c.mode == AGENT_MODE_SUGGEST) {
        struct ov_entry *o = ov_find(t, rel);
        if (!o) {
            struct ov_entry *n = realloc(t->ov, (t->nov + 1) * sizeof *n);
            if (!n)
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            t->ov = n;
            o = &t->ov[t->nov];
            memset(o, 0, sizeof *o);
            if (!(o->path = strdup(rel)))
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            t->nov++;
        }
        free(o->data);
        o->data = NULL;
        o->len = 0;
        if (data) {
            if (!(o->data = malloc(len + 1)))
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            memcpy(o->data, data, len);
            o->data[len] = 0;
            o->len = len;
        }
        return 0;
    }
    if (buf_find(t, rel))
        return ctx_err_set(e, CTX_EDENIED,
                           "%s has unsaved changes in the user's editor; it was not changed (writing it would "
                           "overwrite or diverge from the editor's text). Tell the user what to change instead, "
                           "or ask them to save the file first",
                           rel);
    int rc = 0;
    if (t->c.undo && (rc = agent_undo_record(t->c.undo, rel, e)))
        return rc;
    char *abs = tools_abs(t, rel);
    if (!abs)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (data)
        rc = agent_write_atomic(abs, data, len, 0, e);
    else if (unlink(abs) != 0 && errno != ENOENT)
        rc = ctx_err_errno(e, CTX_EIO, errno, "removing %s", rel);
    free(abs);
    if (!rc && note_changed(t, rel))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    return rc;
}

/* An is_error result from a failed file operation (ENOMEM passes through). */
static int op_fail(struct agent_tools *t, int r, struct ctx_err *oe, struct agent_tool_result *out,
                   struct ctx_err *e)
{
    if (r == CTX_ENOMEM)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    return tools_fail(t, out, e, "%s", oe->msg);
}

/* ---- read_file --------------------------------------------------------------------------- */

static int tool_read_file(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out,
                          struct ctx_err *e)
{
    int rc = 0;
    const char *path;
    long long s, en;
    if (!arg_str(t, a, "path", true, &path, out, &rc, e) ||
        !arg_int(t, a, "start_line", 1, 1, 100000000, &s, out, &rc, e) ||
        !arg_int(t, a, "end_line", 0, 0, 100000000, &en, out, &rc, e))
        return rc;
    char *rel;
    if (resolve(t, path, false, &rel, out, &rc, e))
        return rc;
    char *buf;
    size_t len;
    bool exists;
    struct ctx_err oe = {0};
    int r = read_text(t, rel, &buf, &len, &exists, &oe);
    if (r) {
        free(rel);
        return op_fail(t, r, &oe, out, e);
    }
    if (!exists) {
        rc = tools_fail(t, out, e, "%s does not exist; use list_dir or search to find the right path", rel);
        free(rel);
        return rc;
    }
    if (is_binary(buf, len)) {
        rc = tools_fail(t, out, e, "%s is a binary file (%zu bytes); only text files can be read", rel, len);
        free(buf);
        free(rel);
        return rc;
    }
    size_t total = 0;
    for (size_t i = 0; i < len; i++)
        total += buf[i] == '\n';
    if (len && buf[len - 1] != '\n')
        total++;
    size_t maxl = t->c.max_read_lines ? t->c.max_read_lines : 2000;
    size_t first = (size_t)s, last = en ? (size_t)en : total;
    if (en && (size_t)en < first) {
        rc = tools_fail(t, out, e, "end_line %lld is before start_line %lld", en, s);
        free(buf);
        free(rel);
        return rc;
    }
    if (total == 0) {
        struct ctx_buf b = {0};
        ctx_buf_printf(&b, "%s is empty (0 lines)\n", rel);
        free(buf);
        free(rel);
        return tools_finish(t, &b, false, false, out, e);
    }
    if (first > total) {
        rc = tools_fail(t, out, e, "start_line %zu is past the end of %s, which has %zu lines", first, rel, total);
        free(buf);
        free(rel);
        return rc;
    }
    if (last > total)
        last = total;
    bool cut = false;
    if (last - first + 1 > maxl) {
        last = first + maxl - 1;
        cut = true;
    }
    struct ctx_buf b = {0};
    size_t ln = 1, size_cap = max_output(t) > 512 ? max_output(t) - 256 : max_output(t) / 2;
    for (size_t i = 0; i < len && ln <= last;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) : len;
        if (ln >= first) {
            if (b.len + (end - i) + 16 > size_cap && ln > first) {
                last = ln - 1;
                cut = true;
                break;
            }
            ctx_buf_printf(&b, "%6zu\t", ln);
            ctx_buf_put(&b, buf + i, end - i);
            ctx_buf_puts(&b, "\n");
        }
        ln++;
        i = end + 1;
    }
    if (cut)
        ctx_buf_printf(&b, "[lines %zu-%zu of %zu shown; call read_file with start_line=%zu for more]\n",
                  first, last, total, last + 1);
    else if (first > 1 || last < total)
        ctx_buf_printf(&b, "[lines %zu-%zu of %zu]\n", first, last, total);
    free(buf);
    free(rel);
    return tools_finish(t, &b, false, false, out, e);
}

/* ---- list_dir ---------------------------------------------------------------------------- */

static bool ignored(struct agent_tools *t, const char *rel, bool is_dir)
{
    int ig = 0;
    if (!strcmp(rel, ".git") || !strncmp(rel, ".git/", 5))
        return true;
    if (t->ctxignore && repo_ignore_match(t->ctxignore, rel, is_dir))
        return true;
    return git_ignore_path_is_ignored(&ig, t->repo, rel) == 0 && ig;
}

struct dent {
    char *name;
    bool dir;
};

static int cmp_dent(const void *a, const void *b)
{
    return strcmp(((const struct dent *)a)->name, ((const struct dent *)b)->name);
}

/* Sorted entries of a directory (with overlay files added and overlay deletions removed). */
static int read_dir(struct agent_tools *t, const char *rel, struct dent **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char *abs = tools_abs(t, rel);
    if (!abs)
        return CTX_ENOMEM;
    DIR *d = opendir(abs);
    free(abs);
    size_t cap = 0;
    struct dent *v = NULL;
    int rc = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        size_t l = strlen(rel) + strlen(de->d_name) + 2;
        char *child = malloc(l);
        if (!child) {
            rc = CTX_ENOMEM;
            break;
        }
        snprintf(child, l, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        struct ov_entry *o = ov_find(t, child);
        struct stat st;
        char *ca = tools_abs(t, child);
        bool isdir = ca && lstat(ca, &st) == 0 && S_ISDIR(st.st_mode);
        free(ca);
        bool skip = ignored(t, child, isdir) || (o && !o->data);
        free(child);
        if (skip)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 32;
            struct dent *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                rc = CTX_ENOMEM;
                break;
            }
            v = nv;
        }
        if (!(v[*n].name = strdup(de->d_name))) {
            rc = CTX_ENOMEM;
            break;
        }
        v[(*n)++].dir = isdir;
    }
    if (d)
        closedir(d);
    /* Overlay files created in this directory. */
    size_t rl = strlen(rel);
    for (size_t i = 0; !rc && i < t->nov; i++) {
        const char *p = t->ov[i].path;
        if (!t->ov[i].data || (rl && (strncmp(p, rel, rl) || p[rl] != '/')))
            continue;
        const char *name = rl ? p + rl + 1 : p;
        const char *sl = strchr(name, '/');
        size_t nl = sl ? (size_t)(sl - name) : strlen(name);
        bool have = false;
        for (size_t k = 0; k < *n && !have; k++)
            have = strlen(v[k].name) == nl && !strncmp(v[k].name, name, nl);
        if (have)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 32;
            struct dent *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                rc = CTX_ENOMEM;
                break;
            }
            v = nv;
        }
        if (!(v[*n].name = strndup(name, nl))) {
            rc = CTX_ENOMEM;
            break;
        }
        v[(*n)++].dir = sl != NULL;
    }
    if (*n)
        qsort(v, *n, sizeof *v, cmp_dent);
    *out = v;
    return rc;
}

static void free_dents(struct dent *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

static int list_rec(struct agent_tools *t, struct ctx_buf *b, const char *rel, int depth, int indent,
                    size_t *count, size_t limit)
{
    struct dent *v;
    size_t n;
    int rc = read_dir(t, rel, &v, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        if (*count >= limit) {
            (*count)++;
            continue;
        }
        (*count)++;
        ctx_buf_printf(b, "%*s%s%s\n", indent * 2, "", v[i].name, v[i].dir ? "/" : "");
        if (v[i].dir && depth > 1) {
            size_t l = strlen(rel) + strlen(v[i].name) + 2;
            char *child = malloc(l);
            if (!child) {
                rc = CTX_ENOMEM;
                break;
            }
            snprintf(child, l, "%s%s%s", rel, *rel ? "/" : "", v[i].name);
            rc = list_rec(t, b, child, depth - 1, indent + 1, count, limit);
            free(child);
        }
    }
    free_dents(v, n);
    return rc;
}

static int tool_list_dir(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out,
                         struct ctx_err *e)
{
    int rc = 0;
    const char *path;
    long long depth;
    if (!arg_str(t, a, "path", false, &path, out, &rc, e) ||
        !arg_int(t, a, "depth", 1, 1, 4, &depth, out, &rc, e))
        return rc;
    char *rel;
    if (resolve(t, path ? path : ".", false, &rel, out, &rc, e))
        return rc;
    char *abs = tools_abs(t, rel);
    struct stat st;
    bool isdir = abs && stat(abs, &st) == 0 && S_ISDIR(st.st_mode);
    free(abs);
    if (!isdir) {
        bool ovdir = false;
        size_t rl = strlen(rel);
        for (size_t i = 0; i < t->nov && !ovdir; i++)
            ovdir = t->ov[i].data && !strncmp(t->ov[i].path, rel, rl) && t->ov[i].path[rl] == '/';
        if (!ovdir) {
            char *ab = tools_abs(t, rel);
            struct ov_entry *o = ov_find(t, rel);
            bool present = o ? o->data != NULL : ab && access(ab, F_OK) == 0;
            free(ab);
            rc = tools_fail(t, out, e, "%s is not a directory%s", *rel ? rel : ".",
                            present ? "; use read_file for files" : " (it does not exist)");
            free(rel);
            return rc;
        }
    }
    if (*rel && ignored(t, rel, true)) {
        rc = tools_fail(t, out, e, "%s is ignored by the repository's ignore rules (or is .git)", rel);
        free(rel);
        return rc;
    }
    struct ctx_buf b = {0};
    size_t count = 0, limit = 1000;
    int r = list_rec(t, &b, rel, (int)depth, 0, &count, limit);
    if (r) {
        free(b.p);
        free(rel);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    if (!count)
        ctx_buf_printf(&b, "%s is empty\n", *rel ? rel : ".");
    if (count > limit)
        ctx_buf_printf(&b, "[%zu of %zu entries shown; list a subdirectory or use a smaller depth]\n", limit, count);
    free(rel);
    return tools_finish(t, &b, false, false, out, e);
}

/* ---- search ------------------------------------------------------------------------------ */

struct search {
    struct agent_tools *t;
    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    const char *glob;
    size_t max, found;
    size_t files;
    struct ctx_buf *b;
};

static bool glob_ok(const char *glob, const char *rel)
{
    if (!glob)
        return true;
    if (!strchr(glob, '/')) {
        const char *base = strrchr(rel, '/');
        return fnmatch(glob, base ? base + 1 : rel, 0) == 0;
    }
    /* "**" across directories: fnmatch without FNM_PATHNAME lets '*' match '/' already. */
    return fnmatch(glob, rel, 0) == 0;
}

static void search_text(struct search *s, const char *rel, const char *buf, size_t len)
{
    if (is_binary(buf, len))
        return;
    s->files++;
    size_t ln = 1;
    for (size_t i = 0; i <= len;) {
        const char *nl = i < len ? memchr(buf + i, '\n', len - i) : NULL;
        size_t end = nl ? (size_t)(nl - buf) : len;
        if (i == len && !nl)
            break;
        int r = pcre2_match(s->re, (PCRE2_SPTR)(buf + i), end - i, 0, 0, s->md, s->mc);
        if (r >= 0) {
            s->found++;
            if (s->found <= s->max) {
                size_t n = end - i;
                ctx_buf_printf(s->b, "%s:%zu: %.*s%s\n", rel, ln, (int)(n > 300 ? 300 : n), buf + i,
                          n > 300 ? " [line cut at 300 bytes]" : "");
            }
        }
        ln++;
        i = end + 1;
    }
}

static int search_file(struct search *s, const char *rel)
{
    if (!glob_ok(s->glob, rel))
        return 0;
    char *buf;
    size_t len;
    bool exists;
    struct ctx_err oe = {0};
    int r = read_text(s->t, rel, &buf, &len, &exists, &oe);
    if (r == CTX_ENOMEM)
        return r;
    if (r || !exists)
        return 0; /* too large or unreadable: skipped */
    search_text(s, rel, buf, len);
    free(buf);
    return 0;
}

static int search_rec(struct search *s, const char *rel)
{
    struct dent *v;
    size_t n;
    int rc = read_dir(s->t, rel, &v, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        size_t l = strlen(rel) + strlen(v[i].name) + 2;
        char *child = malloc(l);
        if (!child) {
            rc = CTX_ENOMEM;
            break;
        }
        snprintf(child, l, "%s%s%s", rel, *rel ? "/" : "", v[i].name);
        char *abs = tools_abs(s->t, child);
        struct stat st;
        bool link = abs && lstat(abs, &st) == 0 && S_ISLNK(st.st_mode);
        free(abs);
        if (link)
            ; /* never followed: a link could lead out of the repository or loop */
        else if (v[i].dir)
            rc = search_rec(s, child);
        else
            rc = search_file(s, child);
        free(child);
    }
    free_dents(v, n);
    return rc;
}

static int tool_search(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out,
                       struct ctx_err *e)
{
    int rc = 0;
    const char *pat, *path, *glob;
    bool ci;
    long long maxr;
    size_t defmax = t->c.max_search_results ? t->c.max_search_results : 200;
    if (!arg_str(t, a, "pattern", true, &pat, out, &rc, e) ||
        !arg_str(t, a, "path", false, &path, out, &rc, e) ||
        !arg_str(t, a, "glob", false, &glob, out, &rc, e) ||
        !arg_bool(t, a, "case_insensitive", false, &ci, out, &rc, e) ||
        !arg_int(t, a, "max_results", (long long)defmax, 1, 10000, &maxr, out, &rc, e))
        return rc;
    if (!*pat)
        return tools_fail(t, out, e, "the pattern is empty");
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (ci ? PCRE2_CASELESS : 0),
                                   &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return tools_fail(t, out, e, "the pattern is not a valid PCRE2 regular expression: %s at "
                          "offset %zu; escape special characters such as ( [ { . * + ? with a backslash",
                          (const char *)msg, (size_t)off);
    }
    char *rel;
    if (resolve(t, path ? path : ".", false, &rel, out, &rc, e)) {
        pcre2_code_free(re);
        return rc;
    }
    struct ctx_buf b = {0};
    struct search s = {.t = t, .re = re, .md = pcre2_match_data_create_from_pattern(re, NULL),
                       .glob = glob, .max = (size_t)maxr, .b = &b};
    if (!s.md) {
        pcre2_code_free(re);
        free(rel);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    /* Bound the work of pathological patterns per line. */
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (mc)
        pcre2_set_match_limit(mc, 1000000);
    s.mc = mc;
    char *abs = tools_abs(t, rel);
    struct stat st;
    bool dir = !*rel || (abs && stat(abs, &st) == 0 && S_ISDIR(st.st_mode));
    free(abs);
    int r;
    if (dir) {
        r = search_rec(&s, rel);
    } else {
        char *x;
        size_t xl;
        bool ex = false;
        struct ctx_err oe = {0};
        r = read_text(t, rel, &x, &xl, &ex, &oe);
        free(x);
        if (r != CTX_ENOMEM && (r || !ex)) {
            pcre2_match_context_free(mc);
            pcre2_match_data_free(s.md);
            pcre2_code_free(re);
            rc = tools_fail(t, out, e, "%s", r ? oe.msg : "the path to search does not exist; use list_dir");
            free(rel);
            return rc;
        }
        s.glob = NULL;
        r = r ? r : search_file(&s, rel);
    }
    pcre2_match_context_free(mc);
    pcre2_match_data_free(s.md);
    pcre2_code_free(re);
    if (r) {
        free(b.p);
        free(rel);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    if (!s.found)
        ctx_buf_printf(&b, "no matches for /%s/ in %s%s%s (%zu files searched)\n", pat, *rel ? rel : ".",
                  glob ? " matching " : "", glob ? glob : "", s.files);
    else if (s.found > s.max)
        ctx_buf_printf(&b, "[%zu of %zu matches shown; narrow the pattern, path or glob, or raise max_results]\n",
                  s.max, s.found);
    free(rel);
    return tools_finish(t, &b, false, false, out, e);
}

/* ---- edit_file --------------------------------------------------------------------------- */

static size_t count_occ(const char *hay, size_t hl, const char *needle, size_t nl, size_t *first)
{
    size_t n = 0;
    *first = SIZE_MAX;
    if (!nl || nl > hl)
        return 0;
    for (const char *p = hay; (p = memmem(p, hl - (size_t)(p - hay), needle, nl)); p += nl) {
        if (!n)
            *first = (size_t)(p - hay);
        n++;
    }
    return n;
}

static size_t line_of(const char *buf, size_t off)
{
    size_t n = 1;
    for (size_t i = 0; i < off; i++)
        n += buf[i] == '\n';
    return n;
}

struct span {
    const char *p;
    size_t len;
};

static size_t split_lines(const char *s, size_t len, struct span **out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == '\n';
    n += (len && s[len - 1] != '\n');
    struct span *v = malloc((n + 1) * sizeof *v);
    if (!v) {
        *out = NULL;
        return SIZE_MAX;
    }
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(s + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - s) : len;
        v[k].p = s + i;
        v[k].len = end - i;
        k++;
        i = end + 1;
    }
    *out = v;
    return k;
}

static struct span trim(struct span s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.len--;
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t' || s.p[s.len - 1] == '\r'))
        s.len--;
    return s;
}

/* Edit distance of two (trimmed, cut to 200 bytes) lines, for naming the closest line. */
static size_t lev(struct span a, struct span b)
{
    size_t al = a.len > 200 ? 200 : a.len, bl = b.len > 200 ? 200 : b.len;
    size_t row[201];
    for (size_t j = 0; j <= bl; j++)
        row[j] = j;
    for (size_t i = 1; i <= al; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= bl; j++) {
            size_t tmp = row[j];
            size_t c = prev + (a.p[i - 1] != b.p[j - 1]);
            if (row[j] + 1 < c)
                c = row[j] + 1;
            if (row[j - 1] + 1 < c)
                c = row[j - 1] + 1;
            row[j] = c;
            prev = tmp;
        }
    }
    return row[bl];
}

static int tool_edit_file(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out,
                          struct ctx_err *e)
{
    int rc = 0;
    const char *path, *old_s, *new_s;
    bool all;
    if (!arg_str(t, a, "path", true, &path, out, &rc, e) ||
        !arg_str(t, a, "old_string", true, &old_s, out, &rc, e) ||
        !arg_str(t, a, "new_string", true, &new_s, out, &rc, e) ||
        !arg_bool(t, a, "replace_all", false, &all, out, &rc, e))
        return rc;
    if (!*old_s)
        return tools_fail(t, out, e, "old_string is empty; to create a file or replace all of it use write_file");
    if (!strcmp(old_s, new_s))
        return tools_fail(t, out, e, "old_string and new_string are the same; nothing to change");
    char *rel;
    if (resolve(t, path, true, &rel, out, &rc, e))
        return rc;
    char *buf;
    size_t len;
    bool exists;
    struct ctx_err oe = {0};
    int r = read_text(t, rel, &buf, &len, &exists, &oe);
    if (r) {
        free(rel);
        return op_fail(t, r, &oe, out, e);
    }
    if (!exists) {
        rc = tools_fail(t, out, e, "%s does not exist; use write_file to create it", rel);
        free(rel);
        return rc;
    }
    size_t ol = strlen(old_s), nl = strlen(new_s), first;
    size_t occ = count_occ(buf, len, old_s, ol, &first);
    struct ctx_buf b = {0};
    char *res = NULL;
    size_t rlen = 0;
    const char *how = "exact match";
    if (occ > 1 && !all) {
        ctx_buf_printf(&b, "error: old_string occurs %zu times in %s (lines", occ, rel);
        size_t k = 0;
        for (const char *p = buf; k < 10 && (p = memmem(p, len - (size_t)(p - buf), old_s, ol)); p += ol, k++)
            ctx_buf_printf(&b, " %zu", line_of(buf, (size_t)(p - buf)));
        ctx_buf_puts(&b, occ > 10 ? " ...)" : ")");
        ctx_buf_puts(&b, "; include more surrounding lines to make it unique, or set replace_all to true\n");
        free(buf);
        free(rel);
        return tools_finish(t, &b, true, false, out, e);
    }
    if (occ >= 1) {
        size_t cap = len + occ * nl + 1;
        if (!(res = malloc(cap))) {
            free(buf);
            free(rel);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
        const char *p = buf, *q;
        while ((q = memmem(p, len - (size_t)(p - buf), old_s, ol))) {
            memcpy(res + rlen, p, (size_t)(q - p));
            rlen += (size_t)(q - p);
            memcpy(res + rlen, new_s, nl);
            rlen += nl;
            p = q + ol;
            if (!all)
                break;
        }
        memcpy(res + rlen, p, len - (size_t)(p - buf));
        rlen += len - (size_t)(p - buf);
    } else {
        /* Whitespace-tolerant: the old lines equal file lines once leading and trailing white
         * space is ignored. The matched lines are replaced whole, re-indented by the difference
         * between the file's indentation and old_string's. */
        struct span *fl, *olines;
        size_t nf = split_lines(buf, len, &fl), no = split_lines(old_s, ol, &olines);
        if (nf == SIZE_MAX || no == SIZE_MAX) {
            free(fl);
            free(olines);
            free(buf);
            free(rel);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
        /* Blank lines at either end of old_string do not anchor anything. */
        size_t o0 = 0, o1 = no;
        while (o0 < o1 && !trim(olines[o0]).len)
            o0++;
        while (o1 > o0 && !trim(olines[o1 - 1]).len)
            o1--;
        size_t m = o1 - o0, hits = 0, at = 0;
        for (size_t i = 0; m && i + m <= nf; i++) {
            bool ok = true;
            for (size_t k = 0; ok && k < m; k++) {
                struct span x = trim(fl[i + k]), y = trim(olines[o0 + k]);
                ok = x.len == y.len && !memcmp(x.p, y.p, x.len);
            }
            if (ok) {
                if (!hits)
                    at = i;
                hits++;
            }
        }
        if (hits == 1) {
            const char *start = fl[at].p;
            const char *end = fl[at + m - 1].p + fl[at + m - 1].len; /* before its '\n' */
            size_t find = (size_t)(trim(fl[at]).p - fl[at].p);
            size_t oind = (size_t)(trim(olines[o0]).p - olines[o0].p);
            struct ctx_buf nb = {0};
            ctx_buf_put(&nb, buf, (size_t)(start - buf));
            /* New text, each line's indentation shifted from old_string's to the file's. */
            const char *s = new_s;
            while (*s == '\n')
                s++;
            size_t sl = strlen(s);
            while (sl && s[sl - 1] == '\n')
                sl--;
            for (size_t i = 0; i < sl;) {
                const char *lnl = memchr(s + i, '\n', sl - i);
                size_t lend = lnl ? (size_t)(lnl - s) : sl;
                size_t ind = 0;
                while (i + ind < lend && (s[i + ind] == ' ' || s[i + ind] == '\t'))
                    ind++;
                if (lend > i + ind) {
                    ctx_buf_put(&nb, fl[at].p, find);
                    size_t extra = ind > oind ? ind - oind : 0;
                    ctx_buf_put(&nb, s + i + ind - extra, lend - i - ind + extra);
                }
                if (lnl)
                    ctx_buf_puts(&nb, "\n");
                i = lend + 1;
            }
            ctx_buf_put(&nb, end, len - (size_t)(end - buf));
            if (nb.oom) {
                free(nb.p);
                free(fl);
                free(olines);
                free(buf);
                free(rel);
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            }
            res = nb.p ? nb.p : strdup("");
            rlen = nb.len;
            occ = 1;
            first = (size_t)(start - buf);
            how = "match ignoring leading/trailing white space";
        } else if (hits > 1) {
            ctx_buf_printf(&b, "error: old_string is not in %s exactly, and ignoring white space it "
                      "matches %zu places (first at line %zu); copy the text exactly from read_file "
                      "output (without the line-number prefix) with enough lines to be unique\n",
                      rel, hits, at + 1);
        } else {
            /* Name the closest line: the file line nearest (edit distance) to old_string's first
             * non-blank line, with the file's text around it. */
            size_t best = SIZE_MAX, bi = 0;
            struct span want = m ? trim(olines[o0]) : (struct span){old_s, 0};
            for (size_t i = 0; i < nf; i++) {
                size_t d = lev(trim(fl[i]), want);
                if (d < best)
                    best = d, bi = i;
            }
            ctx_buf_printf(&b, "error: old_string was not found in %s, not even ignoring white space. ", rel);
            if (nf) {
                ctx_buf_printf(&b, "The closest line is %zu; the file has there:\n", bi + 1);
                size_t from = bi >= 2 ? bi - 2 : 0, to = bi + m + 2 < nf ? bi + m + 2 : nf;
                for (size_t i = from; i < to; i++)
                    ctx_buf_printf(&b, "%6zu\t%.*s\n", i + 1, (int)(fl[i].len > 300 ? 300 : fl[i].len), fl[i].p);
                ctx_buf_puts(&b, "Read the file again and copy old_string exactly (without the line-number prefix).\n");
            } else {
                ctx_buf_puts(&b, "The file is empty; use write_file.\n");
            }
        }
        free(fl);
        free(olines);
        if (!res) {
            free(buf);
            free(rel);
            return tools_finish(t, &b, true, false, out, e);
        }
    }
    r = write_text(t, rel, res, rlen, &oe);
    if (r) {
        free(res);
        free(buf);
        free(rel);
        return op_fail(t, r, &oe, out, e);
    }
    ctx_buf_printf(&b, "edited %s: replaced %zu occurrence%s (%s) at line %zu%s\n", rel, occ,
              occ == 1 ? "" : "s", how, line_of(buf, first),
              t->c.mode == AGENT_MODE_SUGGEST ? " [in the suggestion overlay]" : "");
    free(res);
    free(buf);
    free(rel);
    return tools_finish(t, &b, false, true, out, e);
}

/* ---- write_file -------------------------------------------------------------------------- */

static int tool_write_file(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out,
                           struct ctx_err *e)
{
    int rc = 0;
    const char *path, *content;
    if (!arg_str(t, a, "path", true, &path, out, &rc, e) ||
        !arg_str(t, a, "content", true, &content, out, &rc, e))
        return rc;
    char *rel;
    if (resolve(t, path, true, &rel, out, &rc, e))
        return rc;
    char *abs = tools_abs(t, rel);
    struct stat st;
    if (abs && stat(abs, &st) == 0 && S_ISDIR(st.st_mode) && !ov_find(t, rel)) {
        free(abs);
        rc = tools_fail(t, out, e, "%s is a directory; give a file path", rel);
        free(rel);
        return rc;
    }
    free(abs);
    char *old;
    size_t olen;
    bool exists;
    struct ctx_err oe = {0};
    int r = read_text(t, rel, &old, &olen, &exists, &oe);
    free(old);
    size_t len = strlen(content);
    if (!r)
        r = write_text(t, rel, content, len, &oe);
    if (r) {
        free(rel);
        return op_fail(t, r, &oe, out, e);
    }
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += content[i] == '\n';
    lines += len && content[len - 1] != '\n';
    struct ctx_buf b = {0};
    ctx_buf_printf(&b, "%s %s: %zu bytes, %zu lines%s\n", exists ? "replaced" : "created", rel, len, lines,
              t->c.mode == AGENT_MODE_SUGGEST ? " [in the suggestion overlay]" : "");
    free(rel);
    return tools_finish(t, &b, false, true, out, e);
}

/* ---- apply_patch ------------------------------------------------------------------------- */

struct planned {
    char *rel;       /* target path */
    char *data;      /* NULL: delete */
    size_t len;
};

static int tool_apply_patch(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out,
                            struct ctx_err *e)
{
    int rc = 0;
    const char *text;
    if (!arg_str(t, a, "patch", true, &text, out, &rc, e))
        return rc;
    struct agent_patch *p;
    struct ctx_err pe = {0};
    int r = agent_patch_parse(text, strlen(text), &p, &pe);
    if (r == CTX_ENOMEM)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (r)
        return tools_fail(t, out, e, "the patch does not parse: %s", pe.msg);
    /* Compute every new text first: nothing is written unless all files and hunks apply. */
    struct planned *plan = calloc(2 * p->nfiles + 1, sizeof *plan);
    size_t np = 0;
    struct ctx_buf b = {0};
    bool failed = false;
    if (!plan)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && !failed && i < p->nfiles; i++) {
        struct agent_patch_file *f = &p->files[i];
        char *orel = NULL, *nrel = NULL;
        struct ctx_err oe = {0};
        if ((f->old_path && (r = agent_path_resolve(t->root, f->old_path, true, &orel, &oe))) ||
            (f->new_path && (r = agent_path_resolve(t->root, f->new_path, true, &nrel, &oe)))) {
            if (r == CTX_ENOMEM)
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            else
                ctx_buf_printf(&b, "error: file %zu of the patch: %s; nothing was changed\n", i + 1, oe.msg);
            failed = true;
            free(orel);
            free(nrel);
            break;
        }
        char *old = NULL;
        size_t olen = 0;
        bool exists = false;
        if (orel && (r = read_text(t, orel, &old, &olen, &exists, &oe))) {
            if (r == CTX_ENOMEM)
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            else
                ctx_buf_printf(&b, "error: %s; nothing was changed\n", oe.msg);
            failed = true;
        } else if (orel && !exists) {
            ctx_buf_printf(&b, "error: %s does not exist (the patch's \"--- a/%s\"); to create a file use "
                      "\"--- /dev/null\"; nothing was changed\n", orel, f->old_path);
            failed = true;
        } else if (!orel) {
            char *x;
            size_t xl;
            bool ex;
            if ((r = read_text(t, nrel, &x, &xl, &ex, &oe)) == CTX_ENOMEM) {
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            } else if (r || ex) {
                ctx_buf_printf(&b, "error: the patch creates %s (\"--- /dev/null\") but it already exists; "
                          "patch it as an existing file or use write_file; nothing was changed\n", nrel);
                failed = true;
            }
            free(x);
        }
        char *res = NULL;
        size_t rlen = 0;
        if (!rc && !failed && nrel) {
            r = agent_patch_apply_file(f, old, olen, &res, &rlen, &oe);
            if (r == CTX_ENOMEM) {
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            } else if (r) {
                ctx_buf_printf(&b, "error: %s; nothing was changed\n", oe.msg);
                failed = true;
            }
        }
        free(old);
        if (rc || failed) {
            free(orel);
            free(nrel);
            free(res);
            break;
        }
        if (nrel) {
            plan[np].rel = nrel;
            plan[np].data = res;
            plan[np].len = rlen;
            np++;
        }
        if (orel && (!nrel || strcmp(orel, nrel))) {
            plan[np++].rel = orel; /* deleted, or renamed away */
        } else {
            free(orel);
        }
    }
    for (size_t i = 0; !rc && !failed && i < np; i++) {
        struct ctx_err oe = {0};
        r = write_text(t, plan[i].rel, plan[i].data, plan[i].len, &oe);
        if (r == CTX_ENOMEM)
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        else if (r) {
            ctx_buf_printf(&b, "error: writing %s failed after %zu of %zu files: %s (the earlier files are "
                      "recorded for undo)\n", plan[i].rel, i, np, oe.msg);
            failed = true;
        } else {
            ctx_buf_printf(&b, "%s %s\n", plan[i].data ? "patched" : "deleted", plan[i].rel);
        }
    }
    for (size_t i = 0; i < np; i++) {
        free(plan[i].rel);
        free(plan[i].data);
    }
    free(plan);
    agent_patch_free(p);
    if (rc) {
        free(b.p);
        return rc;
    }
    return tools_finish(t, &b, failed, !failed, out, e);
}

/* ---- overlay diff ------------------------------------------------------------------------ */

static int cmp_ov(const void *a, const void *b)
{
    return strcmp(((const struct ov_entry *)a)->path, ((const struct ov_entry *)b)->path);
}

static int diff_line_cb(const git_diff_delta *d, const git_diff_hunk *h, const git_diff_line *l, void *ud)
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

int agent_tools_overlay_diff(struct agent_tools *t, char **out, size_t *len, struct ctx_err *e)
{
    *out = NULL;
    *len = 0;
    qsort(t->ov, t->nov, sizeof *t->ov, cmp_ov);
    struct ctx_buf b = {0};
    ctx_buf_puts(&b, "");
    for (size_t i = 0; i < t->nov; i++) {
        struct ov_entry *o = &t->ov[i];
        char *abs = tools_abs(t, o->path);
        char *old = NULL;
        size_t olen = 0;
        struct ctx_err re = {0};
        struct ov_entry *ub = buf_find(t, o->path);
        bool had;
        if (ub) { /* the suggestion applies to the user's unsaved buffer */
            had = (old = malloc(ub->len + 1)) != NULL;
            if (had) {
                memcpy(old, ub->data, ub->len);
                old[ub->len] = 0;
                olen = ub->len;
            }
        } else {
            had = abs && access(abs, F_OK) == 0 && ctx_read_file(abs, MAX_FILE, &old, &olen, &re) == 0;
        }
        free(abs);
        if (!had && !o->data)
            continue;
        if (had && o->data && olen == o->len && !memcmp(old, o->data, olen)) {
            free(old);
            continue;
        }
        git_patch *gp = NULL;
        git_diff_options opts;
        git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
        int g = git_patch_from_buffers(&gp, had ? old : NULL, had ? olen : 0, had ? o->path : NULL,
                                       o->data, o->data ? o->len : 0, o->data ? o->path : NULL, &opts);
        if (g == 0) {
            ctx_buf_printf(&b, "--- %s%s\n+++ %s%s\n", had ? "a/" : "", had ? o->path : "/dev/null",
                      o->data ? "b/" : "", o->data ? o->path : "/dev/null");
            size_t nh = git_patch_num_hunks(gp);
            for (size_t h = 0; h < nh; h++) {
                const git_diff_hunk *hk;
                size_t nlines;
                git_patch_get_hunk(&hk, &nlines, gp, h);
                ctx_buf_put(&b, hk->header, hk->header_len);
                for (size_t k = 0; k < nlines; k++) {
                    const git_diff_line *l;
                    git_patch_get_line_in_hunk(&l, gp, h, k);
                    diff_line_cb(NULL, NULL, l, &b);
                }
            }
        }
        git_patch_free(gp);
        free(old);
        if (g) {
            free(b.p);
            const git_error *ge = git_error_last();
            return ctx_err_set(e, CTX_EIO, "diff of %s: %s", o->path, ge && ge->message ? ge->message : "?");
        }
    }
    if (b.oom) {
        free(b.p);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

typedef int (*tool_fn)(struct agent_tools *, const cJSON *, struct agent_tool_result *, struct ctx_err *);

static const struct {
    const char *name;
    tool_fn fn;
} registry[] = {
    {"read_file", tool_read_file},     {"list_dir", tool_list_dir},
    {"search", tool_search},           {"find_symbol", tool_find_symbol},
    {"find_references", tool_find_references}, {"edit_file", tool_edit_file},
    {"write_file", tool_write_file},   {"apply_patch", tool_apply_patch},
    {"run_command", tool_run_command}, {"run_tests", tool_run_tests},
    {"git_status", tool_git_status},   {"git_diff", tool_git_diff},
};

int agent_tools_call(struct agent_tools *t, const char *name, const char *args_json,
                     struct agent_tool_result *out, struct ctx_err *e)
{
    memset(out, 0, sizeof *out);
    tool_fn fn = NULL;
    for (size_t i = 0; i < sizeof registry / sizeof *registry; i++)
        if (!strcmp(registry[i].name, name))
            fn = registry[i].fn;
    if (!fn) {
        struct ctx_buf b = {0};
        ctx_buf_printf(&b, "error: there is no tool named \"%s\"; the tools are:", name);
        for (size_t i = 0; i < sizeof registry / sizeof *registry; i++)
            ctx_buf_printf(&b, " %s", registry[i].name);
        ctx_buf_puts(&b, "\n");
        return tools_finish(t, &b, true, false, out, e);
    }
    if (t->c.mode == AGENT_MODE_REVIEW && !agent_tool_is_read_only(name))
        return tools_fail(t, out, e, "review mode is read-only: %s is not available. Report the "
                          "problem as a finding (with a replacement if you have one) instead", name);
    if (t->c.mode == AGENT_MODE_SUGGEST && (!strcmp(name, "run_command") || !strcmp(name, "run_tests")))
        return tools_fail(t, out, e, "suggest mode does not run commands (your edits exist only as "
                          "a proposed diff, not on disk); finish with your explanation instead");
    cJSON *a = args_json && *args_json ? cJSON_Parse(args_json) : cJSON_CreateObject();
    if (!a || !cJSON_IsObject(a)) {
        cJSON_Delete(a);
        return tools_fail(t, out, e, "the arguments of %s are not a JSON object; give each argument "
                          "as its own parameter", name);
    }
    int rc = fn(t, a, out, e);
    cJSON_Delete(a);
    return rc;
}
