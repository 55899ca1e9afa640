/* Names of the vocabulary enums, language detection and the hash used for texts and segments. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *repo_status_name(enum repo_status s)
{
    static const char *const n[] = {"unmodified", "modified", "added", "deleted",
                                    "untracked", "renamed", "typechange", "conflicted"};
    return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "unknown";
}

const char *repo_skip_name(enum repo_skip s)
{
    static const char *const n[] = {"none", "deleted", "binary", "generated", "vendored",
                                    "too-large", "ctxignore", "submodule", "symlink", "unreadable"};
    return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "unknown";
}

const char *repo_lang_name(enum repo_lang l)
{
    static const char *const n[] = {"text", "c", "cpp", "python", "javascript", "typescript",
                                    "tsx", "go", "rust", "java", "bash"};
    return (unsigned)l < sizeof n / sizeof n[0] ? n[l] : "unknown";
}

const char *repo_sym_kind_name(enum repo_sym_kind k)
{
    static const char *const n[] = {"function", "method", "class", "interface", "type",
                                    "module", "macro", "constant", "variable", "call",
                                    "implementation", "import", "field", "identifier", "other"};
    return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "unknown";
}

const char *repo_seg_kind_name(enum repo_seg_kind k)
{
    static const char *const n[] = {"preamble", "map", "file", "outline", "report"};
    return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "unknown";
}

const char *repo_decision_name(enum repo_decision d)
{
    static const char *const n[] = {"full", "outline", "omitted", "skipped"};
    return (unsigned)d < sizeof n / sizeof n[0] ? n[d] : "unknown";
}

static const struct {
    const char *ext;
    enum repo_lang lang;
} ext_table[] = {
    {".c", REPO_LANG_C},        {".h", REPO_LANG_C},          {".cc", REPO_LANG_CPP},
    {".cpp", REPO_LANG_CPP},    {".cxx", REPO_LANG_CPP},      {".c++", REPO_LANG_CPP},
    {".hh", REPO_LANG_CPP},     {".hpp", REPO_LANG_CPP},      {".hxx", REPO_LANG_CPP},
    {".h++", REPO_LANG_CPP},    {".ipp", REPO_LANG_CPP},      {".tcc", REPO_LANG_CPP},
    {".cu", REPO_LANG_CPP},     {".cuh", REPO_LANG_CPP},      {".py", REPO_LANG_PYTHON},
    {".pyi", REPO_LANG_PYTHON}, {".js", REPO_LANG_JAVASCRIPT}, {".mjs", REPO_LANG_JAVASCRIPT},
    {".cjs", REPO_LANG_JAVASCRIPT}, {".jsx", REPO_LANG_JAVASCRIPT}, {".ts", REPO_LANG_TYPESCRIPT},
    {".mts", REPO_LANG_TYPESCRIPT}, {".cts", REPO_LANG_TYPESCRIPT}, {".tsx", REPO_LANG_TSX},
    {".go", REPO_LANG_GO},      {".rs", REPO_LANG_RUST},      {".java", REPO_LANG_JAVA},
    {".sh", REPO_LANG_BASH},    {".bash", REPO_LANG_BASH},    {".bats", REPO_LANG_BASH},
};

enum repo_lang repo_lang_detect(const char *path, const char *text, size_t len)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) {
        for (size_t i = 0; i < sizeof ext_table / sizeof ext_table[0]; i++)
            if (strcmp(dot, ext_table[i].ext) == 0) return ext_table[i].lang;
        if (strcmp(dot, ".d.ts") == 0) return REPO_LANG_TYPESCRIPT;
    }
    if (strcmp(base, ".bashrc") == 0 || strcmp(base, ".profile") == 0 || strcmp(base, ".bash_profile") == 0)
        return REPO_LANG_BASH;
    /* A shebang names the interpreter of extension-less scripts. */
    if (text && len > 2 && text[0] == '#' && text[1] == '!') {
        size_t end = 2;
        while (end < len && end < 128 && text[end] != '\n') end++;
        char line[130];
        memcpy(line, text, end);
        line[end] = 0;
        if (strstr(line, "python")) return REPO_LANG_PYTHON;
        if (strstr(line, "bash") || strstr(line, "/sh") || strstr(line, " sh")) return REPO_LANG_BASH;
        if (strstr(line, "node")) return REPO_LANG_JAVASCRIPT;
    }
    return REPO_LANG_NONE;
}

uint64_t repo_hash64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 if the byte at p does not start one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return len;
}

/* The model (and its tokenizer) take UTF-8 only: a Latin-1 or otherwise broken byte becomes U+FFFD,
 * as Rust's from_utf8_lossy would do it, byte by byte. Returns the new text (old one freed), or NULL
 * on allocation failure; *changed tells whether anything was replaced. */
char *repo_utf8_lossy(char *t, size_t *len, bool *changed)
{
    const unsigned char *p = (const unsigned char *)t;
    size_t n = *len, bad = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k) i += k;
        else {
            bad++;
            i++;
        }
    }
    *changed = bad > 0;
    if (!bad) return t;
    char *o = malloc(n + 2 * bad + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k) {
            memcpy(o + j, p + i, k);
            j += k;
            i += k;
        } else {
            memcpy(o + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
        }
    }
    o[j] = 0;
    free(t);
    *len = j;
    return o;
}
