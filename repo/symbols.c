/* Definitions and references with tree-sitter tags queries (grammars/ and upstream tags.scm). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tree_sitter/api.h>

#include "queries.h"
#include "repo.h"

const TSLanguage *tree_sitter_c(void);
const TSLanguage *tree_sitter_cpp(void);
const TSLanguage *tree_sitter_python(void);
const TSLanguage *tree_sitter_javascript(void);
const TSLanguage *tree_sitter_typescript(void);
const TSLanguage *tree_sitter_tsx(void);
const TSLanguage *tree_sitter_go(void);
const TSLanguage *tree_sitter_rust(void);
const TSLanguage *tree_sitter_java(void);
const TSLanguage *tree_sitter_bash(void);

static const TSLanguage *grammar_for(enum repo_lang l)
{
    switch (l) {
    case REPO_LANG_C: return tree_sitter_c();
    case REPO_LANG_CPP: return tree_sitter_cpp();
    case REPO_LANG_PYTHON: return tree_sitter_python();
    case REPO_LANG_JAVASCRIPT: return tree_sitter_javascript();
    case REPO_LANG_TYPESCRIPT: return tree_sitter_typescript();
    case REPO_LANG_TSX: return tree_sitter_tsx();
    case REPO_LANG_GO: return tree_sitter_go();
    case REPO_LANG_RUST: return tree_sitter_rust();
    case REPO_LANG_JAVA: return tree_sitter_java();
    case REPO_LANG_BASH: return tree_sitter_bash();
    default: return NULL;
    }
}

/* The query predicates the C runtime leaves to its caller. #strip!, #select-adjacent! and
 * #set-adjacent! only shape doc comments, which we do not keep, so they are ignored. */
enum pred_op { PRED_EQ, PRED_NOT_EQ, PRED_MATCH, PRED_NOT_MATCH };

struct pred {
    enum pred_op op;
    uint32_t capture;
    const char *literal;   /* EQ / NOT_EQ against a string */
    uint32_t literal_len;
    pcre2_code *re;        /* MATCH / NOT_MATCH */
};

struct lang_query {
    TSQuery *query;
    uint32_t ncaptures;
    int8_t *cap_role;      /* per capture id: 0 none, 1 name, 2 definition, 3 reference */
    uint8_t *cap_kind;     /* enum repo_sym_kind for roles 2 and 3 */
    uint32_t npatterns;
    struct pred **preds;   /* per pattern */
    uint32_t *npreds;
};

struct repo_symbolizer {
    struct lang_query q[REPO_LANG_COUNT];
    /* Queries compile on first use (C++ and TypeScript take tens of milliseconds each, and most
     * repositories use two or three languages): 0 not yet, 1 ready, <0 the error code. */
    atomic_int state[REPO_LANG_COUNT];
    char errmsg[REPO_LANG_COUNT][CTX_ERR_MSG_MAX];
    pthread_mutex_t mu;
    int nthreads;
    TSParser **parsers;    /* per thread */
    TSQueryCursor **cursors;
    pcre2_match_data **md;
};

static enum repo_sym_kind kind_from_name(const char *k)
{
    static const struct { const char *n; enum repo_sym_kind k; } tab[] = {
        {"function", REPO_SYM_FUNCTION}, {"method", REPO_SYM_METHOD}, {"class", REPO_SYM_CLASS},
        {"interface", REPO_SYM_INTERFACE}, {"type", REPO_SYM_TYPE}, {"module", REPO_SYM_MODULE},
        {"macro", REPO_SYM_MACRO}, {"constant", REPO_SYM_CONSTANT}, {"variable", REPO_SYM_VARIABLE},
        {"call", REPO_SYM_CALL}, {"implementation", REPO_SYM_IMPLEMENTATION},
        {"import", REPO_SYM_IMPORT}, {"field", REPO_SYM_FIELD}, {"identifier", REPO_SYM_IDENTIFIER},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(tab[i].n, k) == 0) return tab[i].k;
    return REPO_SYM_OTHER;
}

static void lang_query_free(struct lang_query *q)
{
    if (q->preds) {
        for (uint32_t p = 0; p < q->npatterns; p++) {
            for (uint32_t i = 0; i < q->npreds[p]; i++)
                if (q->preds[p][i].re) pcre2_code_free(q->preds[p][i].re);
            free(q->preds[p]);
        }
    }
    free(q->preds);
    free(q->npreds);
    free(q->cap_role);
    free(q->cap_kind);
    if (q->query) ts_query_delete(q->query);
    memset(q, 0, sizeof *q);
}

static int compile_preds(struct lang_query *q, const char *lang, struct ctx_err *e)
{
    q->npatterns = ts_query_pattern_count(q->query);
    q->preds = calloc(q->npatterns ? q->npatterns : 1, sizeof *q->preds);
    q->npreds = calloc(q->npatterns ? q->npatterns : 1, sizeof *q->npreds);
    if (!q->preds || !q->npreds) return ctx_err_set(e, CTX_ENOMEM, "tags query %s: out of memory", lang);
    for (uint32_t p = 0; p < q->npatterns; p++) {
        uint32_t nsteps = 0;
        const TSQueryPredicateStep *st = ts_query_predicates_for_pattern(q->query, p, &nsteps);
        uint32_t i = 0;
        while (i < nsteps) {
            uint32_t j = i;
            while (j < nsteps && st[j].type != TSQueryPredicateStepTypeDone) j++;
            /* st[i..j): op string, args */
            if (j > i && st[i].type == TSQueryPredicateStepTypeString) {
                uint32_t oplen;
                const char *op = ts_query_string_value_for_id(q->query, st[i].value_id, &oplen);
                int kind = -1;
                if (strcmp(op, "eq?") == 0) kind = PRED_EQ;
                else if (strcmp(op, "not-eq?") == 0) kind = PRED_NOT_EQ;
                else if (strcmp(op, "match?") == 0) kind = PRED_MATCH;
                else if (strcmp(op, "not-match?") == 0) kind = PRED_NOT_MATCH;
                if (kind >= 0) {
                    if (j - i != 3 || st[i + 1].type != TSQueryPredicateStepTypeCapture ||
                        st[i + 2].type != TSQueryPredicateStepTypeString)
                        return ctx_err_set(e, CTX_EFORMAT,
                                           "tags query %s: pattern %u: #%s needs a capture and a string",
                                           lang, p, op);
                    struct pred pr = {.op = (enum pred_op)kind, .capture = st[i + 1].value_id};
                    uint32_t sl;
                    const char *s = ts_query_string_value_for_id(q->query, st[i + 2].value_id, &sl);
                    if (kind == PRED_EQ || kind == PRED_NOT_EQ) {
                        pr.literal = s;
                        pr.literal_len = sl;
                    } else {
                        int ec;
                        PCRE2_SIZE eo;
                        pr.re = pcre2_compile((PCRE2_SPTR)s, sl, PCRE2_UTF, &ec, &eo, NULL);
                        if (!pr.re)
                            return ctx_err_set(e, CTX_EFORMAT,
                                               "tags query %s: pattern %u: bad regex at offset %zu",
                                               lang, p, (size_t)eo);
                    }
                    struct pred *np = realloc(q->preds[p], (q->npreds[p] + 1) * sizeof *np);
                    if (!np) {
                        if (pr.re) pcre2_code_free(pr.re);
                        return ctx_err_set(e, CTX_ENOMEM, "tags query %s: out of memory", lang);
                    }
                    q->preds[p] = np;
                    np[q->npreds[p]++] = pr;
                }
            }
            i = j + 1;
        }
    }
    return 0;
}

static int compile_lang(struct lang_query *q, enum repo_lang l, struct ctx_err *e)
{
    const char *name = repo_lang_name(l);
    const struct repo_query_text *qt = NULL;
    for (unsigned i = 0; i < repo_query_text_count; i++)
        if (strcmp(repo_query_texts[i].lang, name) == 0) qt = &repo_query_texts[i];
    const TSLanguage *g = grammar_for(l);
    if (!qt || !g) return 0;
    uint32_t eoff = 0;
    TSQueryError qerr = TSQueryErrorNone;
    q->query = ts_query_new(g, qt->text, (uint32_t)qt->len, &eoff, &qerr);
    if (!q->query) {
        uint32_t line = 1;
        for (uint32_t i = 0; i < eoff && i < qt->len; i++) line += qt->text[i] == '\n';
        return ctx_err_set(e, CTX_EFORMAT, "tags query %s: error %d at line %u (byte %u)", name,
                           (int)qerr, line, eoff);
    }
    q->ncaptures = ts_query_capture_count(q->query);
    q->cap_role = calloc(q->ncaptures ? q->ncaptures : 1, 1);
    q->cap_kind = calloc(q->ncaptures ? q->ncaptures : 1, 1);
    if (!q->cap_role || !q->cap_kind) return ctx_err_set(e, CTX_ENOMEM, "tags query %s: out of memory", name);
    for (uint32_t c = 0; c < q->ncaptures; c++) {
        uint32_t len;
        const char *cn = ts_query_capture_name_for_id(q->query, c, &len);
        if (strcmp(cn, "name") == 0) q->cap_role[c] = 1;
        else if (strncmp(cn, "definition.", 11) == 0) {
            q->cap_role[c] = 2;
            q->cap_kind[c] = (uint8_t)kind_from_name(cn + 11);
        } else if (strncmp(cn, "reference.", 10) == 0) {
            q->cap_role[c] = 3;
            q->cap_kind[c] = (uint8_t)kind_from_name(cn + 10);
        }
    }
    return compile_preds(q, name, e);
}

void repo_symbolizer_free(struct repo_symbolizer *z)
{
    if (!z) return;
    for (int l = 0; l < REPO_LANG_COUNT; l++) lang_query_free(&z->q[l]);
    pthread_mutex_destroy(&z->mu);
    for (int t = 0; t < z->nthreads; t++) {
        if (z->parsers && z->parsers[t]) ts_parser_delete(z->parsers[t]);
        if (z->cursors && z->cursors[t]) ts_query_cursor_delete(z->cursors[t]);
        if (z->md && z->md[t]) pcre2_match_data_free(z->md[t]);
    }
    free(z->parsers);
    free(z->cursors);
    free(z->md);
    free(z);
}

int repo_symbolizer_new(int nthreads, struct repo_symbolizer **out, struct ctx_err *e)
{
    *out = NULL;
    if (nthreads < 1) nthreads = 1;
    struct repo_symbolizer *z = calloc(1, sizeof *z);
    if (!z) return ctx_err_set(e, CTX_ENOMEM, "symbolizer: out of memory");
    pthread_mutex_init(&z->mu, NULL);
    for (int l = 0; l < REPO_LANG_COUNT; l++) atomic_init(&z->state[l], 0);
    z->nthreads = nthreads;
    z->parsers = calloc((size_t)nthreads, sizeof *z->parsers);
    z->cursors = calloc((size_t)nthreads, sizeof *z->cursors);
    z->md = calloc((size_t)nthreads, sizeof *z->md);
    if (!z->parsers || !z->cursors || !z->md) {
        repo_symbolizer_free(z);
        return ctx_err_set(e, CTX_ENOMEM, "symbolizer: out of memory");
    }
    for (int t = 0; t < nthreads; t++) {
        z->parsers[t] = ts_parser_new();
        z->cursors[t] = ts_query_cursor_new();
        z->md[t] = pcre2_match_data_create(4, NULL);
        if (!z->parsers[t] || !z->cursors[t] || !z->md[t]) {
            repo_symbolizer_free(z);
            return ctx_err_set(e, CTX_ENOMEM, "symbolizer: out of memory");
        }
        /* Bounds the work of pathological matches (deeply nested code); the rest still come. */
        ts_query_cursor_set_match_limit(z->cursors[t], 4096);
    }
    *out = z;
    return 0;
}

/* ---- extraction ---------------------------------------------------------------------------- */

struct tagvec {
    struct repo_symbol *v;
    size_t n, cap;
    uint32_t *prio; /* pattern index, parallel to v, for de-duplication */
};

static int tag_push(struct tagvec *t, const struct repo_symbol *s, uint32_t prio)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        struct repo_symbol *nv = realloc(t->v, nc * sizeof *nv);
        if (!nv) return -1;
        t->v = nv;
        uint32_t *np = realloc(t->prio, nc * sizeof *np);
        if (!np) return -1;
        t->prio = np;
        t->cap = nc;
    }
    t->prio[t->n] = prio;
    t->v[t->n++] = *s;
    return 0;
}

static bool pred_ok(struct repo_symbolizer *z, int tid, const struct lang_query *q, const TSQueryMatch *m,
                    const char *text)
{
    for (uint32_t i = 0; i < q->npreds[m->pattern_index]; i++) {
        const struct pred *p = &q->preds[m->pattern_index][i];
        const TSQueryCapture *c = NULL;
        for (uint16_t k = 0; k < m->capture_count; k++)
            if (m->captures[k].index == p->capture) c = &m->captures[k];
        if (!c) continue; /* quantified capture absent: nothing to test */
        uint32_t s = ts_node_start_byte(c->node), en = ts_node_end_byte(c->node);
        bool hit;
        if (p->op == PRED_EQ || p->op == PRED_NOT_EQ) {
            hit = en - s == p->literal_len && memcmp(text + s, p->literal, p->literal_len) == 0;
            if (p->op == PRED_NOT_EQ) hit = !hit;
        } else {
            int r = pcre2_match(p->re, (PCRE2_SPTR)(text + s), en - s, 0, 0, z->md[tid], NULL);
            hit = r >= 0;
            if (p->op == PRED_NOT_MATCH) hit = !hit;
        }
        if (!hit) return false;
    }
    return true;
}

static int prio_of(const struct repo_symbol *s)
{
    if (s->is_def) return 0;
    if (s->kind == REPO_SYM_CALL) return 1;
    if (s->kind == REPO_SYM_IDENTIFIER) return 3;
    return 2;
}


struct sort_item {
    struct repo_symbol s;
    uint32_t prio;
};

static int cmp_sort_item(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    if (x->s.name_off != y->s.name_off) return x->s.name_off < y->s.name_off ? -1 : 1;
    if (x->s.name_len != y->s.name_len) return x->s.name_len < y->s.name_len ? -1 : 1;
    int px = prio_of(&x->s), py = prio_of(&y->s);
    if (px != py) return px < py ? -1 : 1;
    if (x->prio != y->prio) return x->prio < y->prio ? -1 : 1;
    return 0;
}

static bool is_ident_start(unsigned char c) { return isalpha(c) || c == '_' || c >= 0x80; }
static bool is_ident_char(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }

/* Fallback for text without a grammar, and for files whose query found no reference: every
 * identifier-looking word of 3+ bytes is a reference (as Aider does with Pygments), so that the
 * file still links to the definitions it names. */
static int scan_identifiers(const char *text, size_t len, struct tagvec *t)
{
    uint32_t line = 0, col0 = 0;
    size_t cap = 200000; /* bound per file; a 1 MiB file rarely has more */
    for (size_t i = 0; i < len && t->n < cap;) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n') {
            line++;
            i++;
            col0 = (uint32_t)i;
            continue;
        }
        if (is_ident_start(c) && (i == 0 || !is_ident_char((unsigned char)text[i - 1]))) {
            size_t j = i + 1;
            while (j < len && is_ident_char((unsigned char)text[j])) j++;
            if (j - i >= 3 && j - i <= 128) {
                struct repo_symbol s = {.name_off = (uint32_t)i, .name_len = (uint32_t)(j - i),
                                        .line = line, .col = (uint32_t)i - col0, .end_line = line,
                                        .end_col = (uint32_t)j - col0, .node_line = line,
                                        .node_end_line = line, .is_def = 0,
                                        .kind = REPO_SYM_IDENTIFIER};
                if (tag_push(t, &s, UINT32_MAX)) return -1;
            }
            i = j;
            continue;
        }
        i++;
    }
    return 0;
}

int repo_symbols_extract(struct repo_symbolizer *z, int tid, enum repo_lang lang, const char *text,
                         size_t len, struct repo_symbol **out, size_t *n, bool *syntax_errors,
                         struct ctx_err *e)
{
    *out = NULL;
    *n = 0;
    *syntax_errors = false;
    if (tid < 0 || tid >= z->nthreads)
        return ctx_err_set(e, CTX_EINVAL, "symbols: thread slot %d out of range (%d)", tid, z->nthreads);
    if (len > UINT32_MAX / 2) return ctx_err_set(e, CTX_ERANGE, "symbols: text of %zu bytes too large", len);
    struct tagvec t = {0};
    if ((unsigned)lang < REPO_LANG_COUNT && grammar_for(lang)) {
        int st = atomic_load(&z->state[lang]);
        if (st == 0) {
            pthread_mutex_lock(&z->mu);
            st = atomic_load(&z->state[lang]);
            if (st == 0) {
                struct ctx_err ce = {0};
                int rc = compile_lang(&z->q[lang], lang, &ce);
                if (rc) {
                    lang_query_free(&z->q[lang]);
                    memcpy(z->errmsg[lang], ce.msg, sizeof ce.msg);
                }
                st = rc ? rc : 1;
                atomic_store(&z->state[lang], st);
            }
            pthread_mutex_unlock(&z->mu);
        }
        if (st < 0) return ctx_err_set(e, st, "%s", z->errmsg[lang]);
    }
    const struct lang_query *q = (unsigned)lang < REPO_LANG_COUNT ? &z->q[lang] : NULL;
    bool any_ref = false;
    if (q && q->query) {
        TSParser *p = z->parsers[tid];
        if (!ts_parser_set_language(p, grammar_for(lang)))
            return ctx_err_set(e, CTX_EUNSUPPORTED,
                               "symbols: the tree-sitter runtime rejects the %s grammar (ABI mismatch: "
                               "build with -Dtree_sitter=bundled)",
                               repo_lang_name(lang));
        TSTree *tree = ts_parser_parse_string(p, NULL, text, (uint32_t)len);
        ts_parser_reset(p);
        if (!tree) return ctx_err_set(e, CTX_EINTERNAL, "symbols: %s parser returned no tree", repo_lang_name(lang));
        TSNode root = ts_tree_root_node(tree);
        *syntax_errors = ts_node_has_error(root);
        TSQueryCursor *cur = z->cursors[tid];
        ts_query_cursor_exec(cur, q->query, root);
        TSQueryMatch m;
        int rc = 0;
        while (ts_query_cursor_next_match(cur, &m)) {
            const TSQueryCapture *name = NULL, *node = NULL;
            for (uint16_t k = 0; k < m.capture_count; k++) {
                int role = q->cap_role[m.captures[k].index];
                if (role == 1 && !name) name = &m.captures[k];
                else if (role >= 2 && !node) node = &m.captures[k];
            }
            if (!name || !node) continue;
            if (q->npreds[m.pattern_index] && !pred_ok(z, tid, q, &m, text)) continue;
            uint32_t s0 = ts_node_start_byte(name->node), s1 = ts_node_end_byte(name->node);
            if (s1 <= s0 || s1 > len) continue;
            TSPoint a = ts_node_start_point(name->node), b = ts_node_end_point(name->node);
            TSPoint na = ts_node_start_point(node->node), nb = ts_node_end_point(node->node);
            struct repo_symbol s = {.name_off = s0, .name_len = s1 - s0, .line = a.row, .col = a.column,
                                    .end_line = b.row, .end_col = b.column, .node_line = na.row,
                                    .node_end_line = nb.row,
                                    .is_def = q->cap_role[node->index] == 2,
                                    .kind = q->cap_kind[node->index]};
            /* A name node spanning lines (Go import specs, strings) is no identifier. */
            if (s.line != s.end_line) continue;
            if (!s.is_def) any_ref = true;
            if (tag_push(&t, &s, m.pattern_index)) {
                rc = -1;
                break;
            }
        }
        ts_tree_delete(tree);
        if (rc) {
            free(t.v);
            free(t.prio);
            return ctx_err_set(e, CTX_ENOMEM, "symbols: out of memory");
        }
    }
    if (!any_ref && scan_identifiers(text, len, &t)) {
        free(t.v);
        free(t.prio);
        return ctx_err_set(e, CTX_ENOMEM, "symbols: out of memory");
    }
    if (t.n == 0) {
        free(t.v);
        free(t.prio);
        return 0;
    }
    struct sort_item *items = malloc(t.n * sizeof *items);
    if (!items) {
        free(t.v);
        free(t.prio);
        return ctx_err_set(e, CTX_ENOMEM, "symbols: out of memory");
    }
    for (size_t i = 0; i < t.n; i++) items[i] = (struct sort_item){t.v[i], t.prio[i]};
    qsort(items, t.n, sizeof *items, cmp_sort_item);
    size_t k = 0;
    for (size_t i = 0; i < t.n; i++) {
        if (k && t.v[k - 1].name_off == items[i].s.name_off && t.v[k - 1].name_len == items[i].s.name_len)
            continue; /* same name span: the first (best) tag stays */
        t.v[k++] = items[i].s;
    }
    free(items);
    free(t.prio);
    *out = t.v;
    *n = k;
    return 0;
}

int repo_symbolizer_threads(const struct repo_symbolizer *z) { return z->nthreads; }
