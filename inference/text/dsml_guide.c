/* Grammar-constrained DSML decoding; see dsml_guide.h for the contract.
 *
 * The state is a byte automaton made of four small machines, one active at a time:
 *  - text scanners (reasoning, content, string="true" values, the inside of JSON strings): an
 *    Aho-Corasick automaton over the delimiters dsml_parse.c looks for, built as a full table at
 *    creation. The parser acts on the earliest complete delimiter, waiting while an earlier one
 *    might still complete; the one nested case ("｜DSML｜" inside "\n\n<｜DSML｜tool_calls") is a
 *    "tainted" state: a refused token has been seen, and only the longer delimiter that began
 *    before it can save the text.
 *  - literal alternatives: the fixed tag text between two decisions, as a set of candidate
 *    strings filtered byte by byte (they are prefix-free within each set).
 *  - names: the candidates with the bytes so far as a prefix form an index range of the sorted
 *    names; parameters also exclude those already given (a bit set).
 *  - a JSON lexer with a 64-deep container stack in one word, for string="false" values.
 * Liveness: every state that is not dead can still reach a completion the parser accepts, so a
 * token is allowed exactly when its bytes do not kill the state; and since every single byte is
 * a token of a byte-level vocabulary, the mask is never empty before the end. */
#include "dsml_guide.h"

#include <stdlib.h>
#include <string.h>

#define TC_START "\n\n<" INF_DSML_TOKEN "tool_calls"
#define TC_END "</" INF_DSML_TOKEN "tool_calls>"
#define INVOKE_OPEN "<" INF_DSML_TOKEN "invoke name=\""
#define INVOKE_CLOSE "</" INF_DSML_TOKEN "invoke>\n"
#define PARAM_OPEN "<" INF_DSML_TOKEN "parameter name=\""
#define PARAM_CLOSE "/" INF_DSML_TOKEN "parameter"
#define PARAM_CLOSE_LT "</" INF_DSML_TOKEN "parameter"

enum phase { PH_DEAD = 0, PH_REASONING, PH_CONTENT, PH_LIT, PH_TOOL, PH_PARAM, PH_VSTR, PH_VJSON, PH_END };

/* ---- text scanners ------------------------------------------------------------------------ */

enum action { A_DEAD, A_CONTENT, A_BLOCK, A_END, A_VCLOSE };

struct spat {
    const char *s;
    enum action act;
};

#define MAX_NODES 160
/* transition: kind in the top bits, node or action below */
#define T_NEXT 0x0000u
#define T_TAINT 0x1000u
#define T_FIRE 0x2000u
#define T_DEAD 0x3000u
#define T_KIND 0xF000u
#define T_ARG 0x0FFFu

struct scanner {
    uint16_t tr[2][MAX_NODES][256]; /* [tainted][node][byte] */
    bool trigger[256];              /* bytes that leave the root */
};

static int scanner_build(struct scanner *sc, const struct spat *pats, size_t np, struct ctx_err *e)
{
    int16_t (*go)[256] = malloc(sizeof(int16_t[MAX_NODES][256]));
    int fail[MAX_NODES], depth[MAX_NODES], term[MAX_NODES], queue[MAX_NODES];
    bool kids[MAX_NODES], hope[MAX_NODES];
    if (!go)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    memset(go, 0xFF, sizeof(int16_t[MAX_NODES][256]));
    int nn = 1;
    depth[0] = 0;
    term[0] = -1;
    kids[0] = false;
    hope[0] = false;
    int rc = 0;
    for (size_t i = 0; i < np && !rc; i++) {
        int x = 0;
        for (const unsigned char *c = (const unsigned char *)pats[i].s; *c; c++) {
            if (go[x][*c] < 0) {
                if (nn == MAX_NODES) {
                    rc = ctx_err_set(e, CTX_EINTERNAL, "dsml guide: too many scanner nodes");
                    break;
                }
                go[x][*c] = (int16_t)nn;
                kids[x] = true;
                depth[nn] = depth[x] + 1;
                term[nn] = -1;
                kids[nn] = false;
                hope[nn] = false;
                nn++;
            }
            x = go[x][*c];
        }
        if (!rc)
            term[x] = (int)i;
    }
    /* hope: some pattern that extends the node fires a good action */
    for (size_t i = 0; i < np && !rc; i++) {
        if (pats[i].act == A_DEAD)
            continue;
        int x = 0;
        for (const unsigned char *c = (const unsigned char *)pats[i].s; *c; c++) {
            hope[x] = true;
            x = go[x][*c];
        }
        hope[x] = true;
    }
    /* failure links (BFS), then the full transition function in go */
    int qh = 0, qt = 0;
    fail[0] = 0;
    for (int c = 0; c < 256 && !rc; c++) {
        if (go[0][c] > 0) {
            fail[go[0][c]] = 0;
            queue[qt++] = go[0][c];
        } else {
            go[0][c] = 0;
        }
    }
    while (qh < qt && !rc) {
        int x = queue[qh++];
        for (int c = 0; c < 256; c++) {
            int y = go[x][c];
            if (y >= 0 && depth[y] == depth[x] + 1 && !(y == 0)) {
                fail[y] = go[fail[x]][c];
                queue[qt++] = y;
            } else {
                go[x][c] = go[fail[x]][c];
            }
        }
    }
    for (int x = 0; x < nn && !rc; x++) {
        if (term[x] >= 0 && kids[x]) {
            rc = ctx_err_set(e, CTX_EINTERNAL, "dsml guide: a delimiter is a prefix of another");
            break;
        }
        for (int c = 0; c < 256; c++) {
            /* untainted */
            int y = go[x][c];
            /* the longest delimiter that ends here, and the longest text that may still grow
             * into one (the root, at worst) */
            int p = -1, q = -1;
            for (int z = y;; z = fail[z]) {
                if (p < 0 && term[z] >= 0)
                    p = z;
                if (q < 0 && kids[z])
                    q = z;
                if (z == 0)
                    break;
            }
            if (q < 0)
                q = 0;
            uint16_t t;
            if (p >= 0 && depth[q] > depth[p]) {
                if (pats[term[p]].act != A_DEAD) {
                    rc = ctx_err_set(e, CTX_EINTERNAL, "dsml guide: a good delimiter nested in another");
                    break;
                }
                t = hope[q] ? (uint16_t)(T_TAINT | (unsigned)q) : T_DEAD;
            } else if (p >= 0) {
                t = pats[term[p]].act == A_DEAD ? T_DEAD : (uint16_t)(T_FIRE | pats[term[p]].act);
            } else {
                t = (uint16_t)(T_NEXT | (unsigned)y);
            }
            sc->tr[0][x][c] = t;
            /* tainted: only the delimiter that began first may go on */
            int d = go[x][c];
            if (d > 0 && depth[d] == depth[x] + 1) {
                if (term[d] >= 0)
                    t = pats[term[d]].act == A_DEAD ? T_DEAD : (uint16_t)(T_FIRE | pats[term[d]].act);
                else
                    t = hope[d] ? (uint16_t)(T_TAINT | (unsigned)d) : T_DEAD;
            } else {
                t = T_DEAD;
            }
            sc->tr[1][x][c] = t;
        }
    }
    for (int c = 0; c < 256; c++)
        sc->trigger[c] = sc->tr[0][0][c] != (T_NEXT | 0u);
    free(go);
    return rc;
}

/* ---- literal alternatives ----------------------------------------------------------------- */

enum to { TO_TOOL, TO_TOOL_NEXT, TO_PARAM, TO_VSTR, TO_VJSON, TO_AFTER, TO_END };
enum alt { ALT_A0, ALT_B1, ALT_B2, ALT_B3, ALT_C1, ALT_C2, ALT_E1, ALT_E2, ALT_E3, ALT_EOS, N_ALT };

struct altdef {
    const char *s;
    size_t len;
    enum to to;
};

#define ALT(str, to) {str, sizeof(str) - 1, to}
static const struct altdef alts[N_ALT] = {
    [ALT_A0] = ALT(">\n" INVOKE_OPEN, TO_TOOL),
    [ALT_B1] = ALT("\">\n" PARAM_OPEN, TO_PARAM),
    [ALT_B2] = ALT("\">\n" INVOKE_CLOSE INVOKE_OPEN, TO_TOOL_NEXT),
    [ALT_B3] = ALT("\">\n" INVOKE_CLOSE TC_END, TO_AFTER),
    [ALT_C1] = ALT("\" string=\"true\">", TO_VSTR),
    [ALT_C2] = ALT("\" string=\"false\">", TO_VJSON),
    [ALT_E1] = ALT(PARAM_CLOSE_LT ">\n" PARAM_OPEN, TO_PARAM),
    [ALT_E2] = ALT(PARAM_CLOSE_LT ">\n" INVOKE_CLOSE INVOKE_OPEN, TO_TOOL_NEXT),
    [ALT_E3] = ALT(PARAM_CLOSE_LT ">\n" INVOKE_CLOSE TC_END, TO_AFTER),
    [ALT_EOS] = ALT(INF_DSML_EOS, TO_END),
};

/* ---- the guide ---------------------------------------------------------------------------- */

/* parameter kinds */
#define K_ATTR_STR 0x01u /* string="true" */
#define K_JSTRING 0x02u
#define K_INT 0x04u
#define K_NUM 0x08u
#define K_BOOL 0x10u
#define K_NULL 0x20u
#define K_ARR 0x40u
#define K_OBJ 0x80u
#define K_JSON (K_JSTRING | K_INT | K_NUM | K_BOOL | K_NULL | K_ARR | K_OBJ)

struct gtool {
    char *name;
    size_t len;
    size_t n_params;
    char **pname; /* sorted */
    size_t *plen;
    uint8_t *ptype;
    uint64_t required, all;
};

/* token classes: the token holds a byte that matters in ... */
#define CLS_TEXT 0x01u /* reasoning/content */
#define CLS_VAL 0x02u  /* a string="true" value */
#define CLS_JSTR 0x04u /* a JSON string */

struct inf_dsml_guide {
    struct scanner reasoning, content, value;
    struct gtool *tools; /* sorted by name */
    size_t n_tools;
    const struct inf_tokenizer *tok;
    size_t n_tok;
    const unsigned char **tb; /* token bytes (borrowed), NULL when undefined */
    uint32_t *tl;
    uint8_t *cls;             /* CLS_* of all the token's bytes */
    uint8_t *cls_rest;        /* ... of all but its first byte */
    int32_t *order;           /* ids by first byte */
    uint32_t bstart[257];
    int32_t eos;
};

static void tool_free(struct gtool *t)
{
    free(t->name);
    for (size_t i = 0; i < t->n_params; i++)
        free(t->pname[i]);
    free(t->pname);
    free(t->plen);
    free(t->ptype);
}

void inf_dsml_guide_free(struct inf_dsml_guide *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_tools; i++)
        tool_free(&g->tools[i]);
    free(g->tools);
    free(g->tb);
    free(g->tl);
    free(g->cls);
    free(g->cls_rest);
    free(g->order);
    free(g);
}

size_t inf_dsml_guide_n_tools(const struct inf_dsml_guide *g) { return g->n_tools; }

static bool bad_name(const char *s, size_t n)
{
    if (n == 0 || n > 1024)
        return true;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || s[i] == '<' || s[i] == '>' || s[i] == '\n' || s[i] == '\r')
            return true;
    return strstr(s, INF_DSML_TOKEN) != NULL;
}

static unsigned kind_of(const char *t)
{
    if (!strcmp(t, "string"))
        return K_ATTR_STR;
    if (!strcmp(t, "integer"))
        return K_INT;
    if (!strcmp(t, "number"))
        return K_INT | K_NUM;
    if (!strcmp(t, "boolean"))
        return K_BOOL;
    if (!strcmp(t, "null"))
        return K_NULL;
    if (!strcmp(t, "array"))
        return K_ARR;
    if (!strcmp(t, "object"))
        return K_OBJ;
    return K_JSON; /* a type this guide does not know: any JSON */
}

/* qsort_r is not C17: a small insertion sort of an index array (parameter lists are short; tool
 * lists are sorted the same way, once). */
static void sort_idx(size_t *idx, size_t n, char *const *names)
{
    for (size_t i = 1; i < n; i++) {
        size_t v = idx[i], j = i;
        while (j > 0 && strcmp(names[idx[j - 1]], names[v]) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

static int load_tool(struct gtool *t, const cJSON *item, size_t i, struct ctx_err *e)
{
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(item, "function");
    if (!cJSON_IsObject(fn))
        fn = item;
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsString(nm))
        return ctx_err_set(e, CTX_EINVAL, "dsml guide: tools[%zu] has no name", i);
    t->len = strlen(nm->valuestring);
    if (bad_name(nm->valuestring, t->len))
        return ctx_err_set(e, CTX_EINVAL, "dsml guide: tools[%zu]: the name \"%.64s\" cannot be written in DSML", i,
                           nm->valuestring);
    if (!(t->name = strdup(nm->valuestring)))
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(params, "properties");
    size_t n = cJSON_IsObject(props) ? (size_t)cJSON_GetArraySize(props) : 0;
    if (n > 64)
        return ctx_err_set(e, CTX_EINVAL, "dsml guide: tool \"%s\" has %zu parameters (at most 64)", t->name, n);
    char **names = calloc(n + 1, sizeof *names);
    size_t *idx = calloc(n + 1, sizeof *idx);
    uint8_t *kinds = calloc(n + 1, 1);
    t->pname = calloc(n + 1, sizeof *t->pname);
    t->plen = calloc(n + 1, sizeof *t->plen);
    t->ptype = calloc(n + 1, 1);
    int rc = 0;
    if (!names || !idx || !kinds || !t->pname || !t->plen || !t->ptype)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    size_t k = 0;
    for (const cJSON *p = props ? props->child : NULL; p && !rc; p = p->next, k++) {
        if (!p->string || bad_name(p->string, strlen(p->string))) {
            rc = ctx_err_set(e, CTX_EINVAL, "dsml guide: tool \"%s\": the parameter name \"%.64s\" cannot be written in DSML",
                             t->name, p->string ? p->string : "");
            break;
        }
        for (size_t j = 0; j < k && !rc; j++)
            if (!strcmp(names[j], p->string))
                rc = ctx_err_set(e, CTX_EINVAL, "dsml guide: tool \"%s\": parameter \"%s\" twice", t->name, p->string);
        names[k] = p->string;
        idx[k] = k;
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        unsigned kd = 0;
        if (cJSON_IsString(ty)) {
            kd = kind_of(ty->valuestring);
        } else if (cJSON_IsArray(ty)) {
            const cJSON *u;
            cJSON_ArrayForEach(u, ty) kd |= cJSON_IsString(u) ? kind_of(u->valuestring) : K_JSON;
        }
        if (!kd)
            kd = K_ATTR_STR | K_JSON; /* no type: anything */
        kinds[k] = (uint8_t)kd;
    }
    if (!rc) {
        sort_idx(idx, n, names);
        for (size_t j = 0; j < n && !rc; j++) {
            t->plen[j] = strlen(names[idx[j]]);
            t->ptype[j] = kinds[idx[j]];
            if (!(t->pname[j] = strdup(names[idx[j]])))
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            t->n_params = j + 1;
        }
        t->all = n == 64 ? ~0ull : ((1ull << n) - 1);
    }
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(params, "required");
    const cJSON *r;
    if (!rc && cJSON_IsArray(req)) {
        cJSON_ArrayForEach(r, req) {
            size_t j = 0;
            while (j < t->n_params && !(cJSON_IsString(r) && !strcmp(t->pname[j], r->valuestring)))
                j++;
            if (j == t->n_params) {
                rc = ctx_err_set(e, CTX_EINVAL, "dsml guide: tool \"%s\" requires \"%s\", which is not among its properties",
                                 t->name, cJSON_IsString(r) ? r->valuestring : "?");
                break;
            }
            t->required |= 1ull << j;
        }
    }
    free(names);
    free(idx);
    free(kinds);
    return rc;
}

int inf_dsml_guide_new(const struct inf_tokenizer *tok, const cJSON *tools, struct inf_dsml_guide **out,
                       struct ctx_err *e)
{
    *out = NULL;
    if (tools && !cJSON_IsArray(tools))
        return ctx_err_set(e, CTX_EINVAL, "dsml guide: tools must be an array");
    struct inf_dsml_guide *g = calloc(1, sizeof *g);
    if (!g)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    g->tok = tok;
    int rc = 0;
    size_t nt = tools ? (size_t)cJSON_GetArraySize(tools) : 0;
    if (nt > 65535)
        rc = ctx_err_set(e, CTX_EINVAL, "dsml guide: %zu tools (at most 65535)", nt);
    struct gtool *raw = rc ? NULL : calloc(nt + 1, sizeof *raw);
    if (!rc && !raw)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    size_t k = 0;
    for (const cJSON *t = tools ? tools->child : NULL; t && !rc; t = t->next, k++)
        rc = load_tool(&raw[k], t, k, e);
    if (!rc) {
        /* sort by name */
        size_t *idx = calloc(nt + 1, sizeof *idx);
        char **names = calloc(nt + 1, sizeof *names);
        g->tools = calloc(nt + 1, sizeof *g->tools);
        if (!idx || !names || !g->tools)
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        for (size_t i = 0; !rc && i < nt; i++) {
            idx[i] = i;
            names[i] = raw[i].name;
        }
        if (!rc) {
            sort_idx(idx, nt, names);
            for (size_t i = 0; i < nt; i++)
                g->tools[i] = raw[idx[i]];
            g->n_tools = nt;
            memset(raw, 0, (nt + 1) * sizeof *raw);
            for (size_t i = 1; i < nt && !rc; i++)
                if (!strcmp(g->tools[i].name, g->tools[i - 1].name))
                    rc = ctx_err_set(e, CTX_EINVAL, "dsml guide: tool \"%s\" declared twice", g->tools[i].name);
        }
        free(idx);
        free(names);
    }
    for (size_t i = 0; raw && i < nt; i++)
        tool_free(&raw[i]);
    free(raw);
    /* scanners: the delimiters of dsml_parse.c, with what the parser does on each */
    const struct spat rp[] = {{INF_DSML_THINK_END, A_CONTENT}, {TC_START, A_DEAD}, {INF_DSML_EOS, A_DEAD},
                              {INF_DSML_BOS, A_DEAD}, {INF_DSML_THINK_START, A_DEAD}, {INF_DSML_TOKEN, A_DEAD}};
    /* no tools: no block can be written, so opening one is refused like any stray tag */
    const struct spat cp[] = {{INF_DSML_EOS, A_END}, {TC_START, g->n_tools ? A_BLOCK : A_DEAD},
                              {INF_DSML_BOS, A_DEAD}, {INF_DSML_THINK_START, A_DEAD},
                              {INF_DSML_THINK_END, A_DEAD}, {INF_DSML_TOKEN, A_DEAD}};
    const struct spat vp[] = {{PARAM_CLOSE_LT, A_VCLOSE}, {PARAM_CLOSE, A_DEAD}};
    if (!rc)
        rc = scanner_build(&g->reasoning, rp, sizeof rp / sizeof *rp, e);
    if (!rc)
        rc = scanner_build(&g->content, cp, sizeof cp / sizeof *cp, e);
    if (!rc)
        rc = scanner_build(&g->value, vp, sizeof vp / sizeof *vp, e);
    /* the vocabulary: bytes, classes, ids by first byte */
    g->n_tok = rc || !tok ? 0 : inf_tokenizer_vocab_size(tok);
    g->eos = rc || !tok ? -1 : inf_tokenizer_token_id(tok, INF_DSML_EOS);
    if (!rc && (!(g->tb = calloc(g->n_tok + 1, sizeof *g->tb)) || !(g->tl = calloc(g->n_tok + 1, sizeof *g->tl)) ||
                !(g->cls = calloc(g->n_tok + 1, 1)) || !(g->cls_rest = calloc(g->n_tok + 1, 1)) ||
                !(g->order = calloc(g->n_tok + 1, sizeof *g->order))))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (!rc) {
        uint32_t cnt[257] = {0};
        for (size_t id = 0; id < g->n_tok; id++) {
            size_t len = 0;
            const char *b = inf_tokenizer_id_bytes(tok, (int32_t)id, &len);
            if (!b || !len || len > UINT32_MAX)
                continue;
            g->tb[id] = (const unsigned char *)b;
            g->tl[id] = (uint32_t)len;
            uint8_t c = 0;
            for (size_t i = len; i-- > 0;) {
                unsigned char x = (unsigned char)b[i];
                if (g->reasoning.trigger[x] || g->content.trigger[x])
                    c |= CLS_TEXT;
                if (g->value.trigger[x])
                    c |= CLS_VAL;
                if (g->value.trigger[x] || x == '"' || x == '\\' || x < 0x20)
                    c |= CLS_JSTR;
                if (i == 1)
                    g->cls_rest[id] = c;
            }
            g->cls[id] = c;
            cnt[(unsigned char)b[0] + 1]++;
        }
        for (int i = 0; i < 256; i++)
            cnt[i + 1] += cnt[i];
        memcpy(g->bstart, cnt, sizeof g->bstart);
        for (size_t id = 0; id < g->n_tok; id++)
            if (g->tb[id])
                g->order[cnt[g->tb[id][0]]++] = (int32_t)id;
    }
    if (rc) {
        inf_dsml_guide_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

/* ---- stepping ----------------------------------------------------------------------------- */

enum jstate {
    J_VALUE, J_ARR_OPEN, J_OBJ_OPEN, J_KEY, J_COLON, J_AFTER, J_STR, J_ESC, J_U,
    J_MINUS, J_ZERO, J_INT, J_DOT, J_FRAC, J_E, J_ESIGN, J_EXP, J_LIT,
};
#define JF_KEY 0x01u
#define JF_INTONLY 0x02u
#define J_MAX_DEPTH 64

static const char *const jlits[3] = {"true", "false", "null"};

static bool die(struct inf_dsml_guide_state *s)
{
    s->phase = PH_DEAD;
    return false;
}

static void enter_lit(struct inf_dsml_guide_state *s, unsigned mask, unsigned pos)
{
    s->phase = PH_LIT;
    s->lit = (uint16_t)mask;
    s->pos = (uint16_t)pos;
}

static unsigned after_value_alts(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s)
{
    const struct gtool *t = &g->tools[s->tool];
    unsigned m = 0;
    if (t->all & ~s->used)
        m |= 1u << ALT_E1;
    if (!(t->required & ~s->used))
        m |= (1u << ALT_E2) | (1u << ALT_E3);
    return m;
}

static void enter_tool(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s)
{
    s->phase = PH_TOOL;
    s->lo = 0;
    s->hi = (uint16_t)g->n_tools;
    s->pos = 0;
    s->used = 0;
}

static bool lit_done(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, enum to to)
{
    switch (to) {
    case TO_TOOL_NEXT:
        s->calls++;
        /* fall through */
    case TO_TOOL:
        enter_tool(g, s);
        return true;
    case TO_PARAM:
        s->phase = PH_PARAM;
        s->lo = 0;
        s->hi = (uint16_t)g->tools[s->tool].n_params;
        s->pos = 0;
        return true;
    case TO_VSTR:
        s->phase = PH_VSTR;
        s->scan = s->taint = 0;
        return true;
    case TO_VJSON:
        s->phase = PH_VJSON;
        s->jst = J_VALUE;
        s->jdepth = 0;
        s->jflags = 0;
        s->jstack = 0;
        s->scan = s->taint = 0;
        return true;
    case TO_AFTER:
        s->calls++;
        enter_lit(s, 1u << ALT_EOS, 0);
        return true;
    case TO_END:
        s->phase = PH_END;
        return true;
    }
    return die(s);
}

static bool fire(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, unsigned act)
{
    s->scan = s->taint = 0;
    switch (act) {
    case A_CONTENT:
        s->phase = PH_CONTENT;
        return true;
    case A_BLOCK:
        s->calls = 0;
        enter_lit(s, 1u << ALT_A0, 0);
        return true;
    case A_END:
        s->phase = PH_END;
        return true;
    case A_VCLOSE:
        enter_lit(s, after_value_alts(g, s), sizeof PARAM_CLOSE_LT - 1);
        return true;
    default:
        return die(s);
    }
}

/* One scanner step; false when the text died or a delimiter fired (*fired then says which). */
static inline bool scan_step(const struct scanner *sc, struct inf_dsml_guide_state *s, unsigned char c,
                             unsigned *fired)
{
    uint16_t t = sc->tr[s->taint][s->scan][c];
    switch (t & T_KIND) {
    case T_NEXT:
        s->scan = (uint8_t)(t & T_ARG);
        s->taint = 0;
        return true;
    case T_TAINT:
        s->scan = (uint8_t)(t & T_ARG);
        s->taint = 1;
        return true;
    case T_FIRE:
        *fired = t & T_ARG;
        return false;
    default:
        *fired = A_DEAD;
        return false;
    }
}

static bool name_step(struct inf_dsml_guide_state *s, char *const *names, const size_t *lens, unsigned char c)
{
    unsigned lo = s->lo, hi = s->hi, pos = s->pos;
    while (lo < hi && (lens[lo] <= pos || (unsigned char)names[lo][pos] != c))
        lo++;
    unsigned h = lo;
    while (h < hi && lens[h] > pos && (unsigned char)names[h][pos] == c)
        h++;
    if (lo == h)
        return false;
    s->lo = (uint16_t)lo;
    s->hi = (uint16_t)h;
    s->pos = (uint16_t)(pos + 1);
    return true;
}

static inline bool jws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static inline bool jdigit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline bool jhex(unsigned char c)
{
    return jdigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool json_value_done(struct inf_dsml_guide_state *s)
{
    s->jst = J_AFTER;
    return true;
}

/* The first byte of a value. */
static bool json_start(struct inf_dsml_guide_state *s, unsigned char c)
{
    unsigned need = 0;
    bool top = s->jdepth == 0;
    if (c == '"')
        need = K_JSTRING;
    else if (c == '-' || jdigit(c))
        need = K_INT | K_NUM;
    else if (c == 't' || c == 'f')
        need = K_BOOL;
    else if (c == 'n')
        need = K_NULL;
    else if (c == '[')
        need = K_ARR;
    else if (c == '{')
        need = K_OBJ;
    else
        return false;
    if (top && !(s->ptype & need))
        return false;
    if (top && need == (K_INT | K_NUM) && !(s->ptype & K_NUM))
        s->jflags |= JF_INTONLY;
    switch (c) {
    case '"':
        s->jst = J_STR;
        s->jflags &= (uint8_t)~JF_KEY;
        s->scan = s->taint = 0;
        return true;
    case '-': s->jst = J_MINUS; return true;
    case '0': s->jst = J_ZERO; return true;
    case 't': s->jst = J_LIT; s->jlit = 0 << 4 | 1; return true;
    case 'f': s->jst = J_LIT; s->jlit = 1 << 4 | 1; return true;
    case 'n': s->jst = J_LIT; s->jlit = 2 << 4 | 1; return true;
    case '[':
    case '{':
        if (s->jdepth == J_MAX_DEPTH)
            return false;
        if (c == '{')
            s->jstack |= 1ull << s->jdepth;
        else
            s->jstack &= ~(1ull << s->jdepth);
        s->jdepth++;
        s->jst = c == '{' ? J_OBJ_OPEN : J_ARR_OPEN;
        return true;
    default:
        s->jst = J_INT;
        return true;
    }
}

static bool json_close(struct inf_dsml_guide_state *s, unsigned char c)
{
    bool obj = (s->jstack >> (s->jdepth - 1)) & 1;
    if (c != (obj ? '}' : ']'))
        return false;
    s->jdepth--;
    return json_value_done(s);
}

/* A JSON byte; `*close` is set when the value is over and c begins the closing tag. */
static bool json_step(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, unsigned char c, bool *close)
{
    bool top = s->jdepth == 0;
    bool intonly = top && (s->jflags & JF_INTONLY);
    switch ((enum jstate)s->jst) {
    case J_VALUE:
        return jws(c) || json_start(s, c);
    case J_ARR_OPEN:
        if (jws(c))
            return true;
        if (c == ']')
            return json_close(s, c);
        return json_start(s, c);
    case J_OBJ_OPEN:
        if (jws(c))
            return true;
        if (c == '}')
            return json_close(s, c);
        /* fall through */
    case J_KEY:
        if (jws(c))
            return true;
        if (c != '"')
            return false;
        s->jst = J_STR;
        s->jflags |= JF_KEY;
        s->scan = s->taint = 0;
        return true;
    case J_COLON:
        if (jws(c))
            return true;
        if (c != ':')
            return false;
        s->jst = J_VALUE;
        return true;
    case J_AFTER:
        if (jws(c))
            return true;
        if (top) {
            if (c != '<')
                return false;
            *close = true;
            return true;
        }
        if (c == ',') {
            s->jst = ((s->jstack >> (s->jdepth - 1)) & 1) ? J_KEY : J_VALUE;
            return true;
        }
        return json_close(s, c);
    case J_STR:
    case J_ESC:
    case J_U: {
        unsigned fired;
        if (!scan_step(&g->value, s, c, &fired))
            return false; /* the closing tag inside a JSON string cuts the value short */
        if (s->jst == J_ESC) {
            if (c == 'u') {
                s->jst = J_U;
                s->jlit = 4;
                return true;
            }
            if (!strchr("\"\\/bfnrt", c) || c == 0)
                return false;
            s->jst = J_STR;
            return true;
        }
        if (s->jst == J_U) {
            if (!jhex(c))
                return false;
            if (--s->jlit == 0)
                s->jst = J_STR;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            s->jst = J_ESC;
            return true;
        }
        if (c == '"') {
            s->scan = s->taint = 0;
            if (s->jflags & JF_KEY) {
                s->jflags &= (uint8_t)~JF_KEY;
                s->jst = J_COLON;
                return true;
            }
            return json_value_done(s);
        }
        return true;
    }
    case J_MINUS:
        if (c == '0')
            s->jst = J_ZERO;
        else if (jdigit(c))
            s->jst = J_INT;
        else
            return false;
        return true;
    case J_ZERO:
    case J_INT:
        if (jdigit(c) && s->jst == J_INT)
            return true;
        if (c == '.' && !intonly) {
            s->jst = J_DOT;
            return true;
        }
        if ((c == 'e' || c == 'E') && !intonly) {
            s->jst = J_E;
            return true;
        }
        s->jst = J_AFTER; /* the number ended before c */
        return json_step(g, s, c, close);
    case J_DOT:
        if (!jdigit(c))
            return false;
        s->jst = J_FRAC;
        return true;
    case J_FRAC:
        if (jdigit(c))
            return true;
        if (c == 'e' || c == 'E') {
            s->jst = J_E;
            return true;
        }
        s->jst = J_AFTER;
        return json_step(g, s, c, close);
    case J_E:
        if (c == '+' || c == '-') {
            s->jst = J_ESIGN;
            return true;
        }
        /* fall through */
    case J_ESIGN:
        if (!jdigit(c))
            return false;
        s->jst = J_EXP;
        return true;
    case J_EXP:
        if (jdigit(c))
            return true;
        s->jst = J_AFTER;
        return json_step(g, s, c, close);
    case J_LIT: {
        const char *l = jlits[s->jlit >> 4];
        unsigned p = s->jlit & 15u;
        if ((unsigned char)l[p] != c)
            return false;
        p++;
        s->jlit = (uint8_t)((s->jlit & 0xF0u) | p);
        if (!l[p])
            return json_value_done(s);
        return true;
    }
    }
    return false;
}

static bool lit_step(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, unsigned char c)
{
    unsigned m = 0, pos = s->pos;
    int done = -1;
    for (unsigned a = 0; a < N_ALT; a++) {
        if (!(s->lit & (1u << a)) || pos >= alts[a].len || (unsigned char)alts[a].s[pos] != c)
            continue;
        m |= 1u << a;
        if (pos + 1 == alts[a].len)
            done = (int)a;
    }
    if (!m)
        return die(s);
    if (done >= 0)
        return lit_done(g, s, alts[done].to);
    s->lit = (uint16_t)m;
    s->pos = (uint16_t)(pos + 1);
    return true;
}

static bool step(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, unsigned char c)
{
    unsigned fired;
    switch ((enum phase)s->phase) {
    case PH_REASONING:
        if (scan_step(&g->reasoning, s, c, &fired))
            return true;
        return fire(g, s, fired);
    case PH_CONTENT:
        if (scan_step(&g->content, s, c, &fired))
            return true;
        return fire(g, s, fired);
    case PH_VSTR:
        if (scan_step(&g->value, s, c, &fired))
            return true;
        return fire(g, s, fired);
    case PH_LIT:
        return lit_step(g, s, c);
    case PH_TOOL:
        if (c == '"') {
            if (s->lo < s->hi && g->tools[s->lo].len == s->pos) {
                const struct gtool *t = &g->tools[s->lo];
                s->tool = s->lo;
                s->used = 0;
                unsigned m = 0;
                if (t->n_params)
                    m |= 1u << ALT_B1;
                if (!t->required)
                    m |= (1u << ALT_B2) | (1u << ALT_B3);
                enter_lit(s, m, 1);
                return true;
            }
            return die(s);
        }
        {
            /* the names, as an array view for name_step */
            unsigned lo = s->lo, hi = s->hi, pos = s->pos;
            while (lo < hi && (g->tools[lo].len <= pos || (unsigned char)g->tools[lo].name[pos] != c))
                lo++;
            unsigned h = lo;
            while (h < hi && g->tools[h].len > pos && (unsigned char)g->tools[h].name[pos] == c)
                h++;
            if (lo == h)
                return die(s);
            s->lo = (uint16_t)lo;
            s->hi = (uint16_t)h;
            s->pos = (uint16_t)(pos + 1);
            return true;
        }
    case PH_PARAM: {
        const struct gtool *t = &g->tools[s->tool];
        if (c == '"') {
            if (s->lo < s->hi && t->plen[s->lo] == s->pos && !(s->used & (1ull << s->lo))) {
                s->used |= 1ull << s->lo;
                s->ptype = t->ptype[s->lo];
                unsigned m = 0;
                if (s->ptype & K_ATTR_STR)
                    m |= 1u << ALT_C1;
                if (s->ptype & K_JSON)
                    m |= 1u << ALT_C2;
                enter_lit(s, m, 1);
                return true;
            }
            return die(s);
        }
        struct inf_dsml_guide_state t2 = *s;
        if (!name_step(&t2, t->pname, t->plen, c))
            return die(s);
        /* some name in the range must still be free */
        uint64_t range = (t2.hi >= 64 ? ~0ull : ((1ull << t2.hi) - 1)) & ~((1ull << t2.lo) - 1);
        if (!(range & ~s->used))
            return die(s);
        *s = t2;
        return true;
    }
    case PH_VJSON: {
        bool close = false;
        if (!json_step(g, s, c, &close))
            return die(s);
        if (close) {
            enter_lit(s, after_value_alts(g, s), 0);
            return lit_step(g, s, c);
        }
        return true;
    }
    case PH_END:
    case PH_DEAD:
        break;
    }
    return die(s);
}

void inf_dsml_guide_start(const struct inf_dsml_guide *g, enum inf_dsml_mode mode, struct inf_dsml_guide_state *s)
{
    (void)g;
    memset(s, 0, sizeof *s);
    s->phase = mode == INF_DSML_THINKING ? PH_REASONING : PH_CONTENT;
}

static bool feed_bytes(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, const unsigned char *p,
                       size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!step(g, s, p[i]))
            return false;
    return true;
}

int inf_dsml_guide_feed(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, const char *p, size_t n)
{
    if (s->phase == PH_DEAD)
        return CTX_EFORMAT;
    return feed_bytes(g, s, (const unsigned char *)p, n) ? 0 : CTX_EFORMAT;
}

static bool token_ok(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, int32_t id)
{
    if (id < 0 || (size_t)id >= g->n_tok || !g->tb[id])
        return die(s);
    if (!feed_bytes(g, s, g->tb[id], g->tl[id]))
        return false;
    if (id == g->eos && s->phase != PH_END)
        return die(s);
    return true;
}

int inf_dsml_guide_feed_token(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, int32_t id)
{
    if (s->phase == PH_DEAD)
        return CTX_EFORMAT;
    return token_ok(g, s, id) ? 0 : CTX_EFORMAT;
}

bool inf_dsml_guide_allows(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, int32_t id)
{
    struct inf_dsml_guide_state t = *s;
    return t.phase != PH_DEAD && token_ok(g, &t, id);
}

/* Text at rest: a token without a byte that the scanner reacts to leaves the state as it is. The
 * CLS_* bit of those bytes, or 0 when the state is not text at rest. */
static unsigned rest_class(const struct inf_dsml_guide_state *s)
{
    if (s->taint || s->scan != 0)
        return 0;
    if (s->phase == PH_REASONING || s->phase == PH_CONTENT)
        return CLS_TEXT;
    if (s->phase == PH_VSTR)
        return CLS_VAL;
    if (s->phase == PH_VJSON && s->jst == J_STR)
        return CLS_JSTR;
    return 0;
}

size_t inf_dsml_guide_mask(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, uint8_t *allow,
                           size_t n)
{
    memset(allow, 0, n);
    if (s->phase == PH_DEAD || s->phase == PH_END)
        return 0;
    size_t lim = n < g->n_tok ? n : g->n_tok, count = 0;
    unsigned cls = rest_class(s);
    if (cls) {
        for (size_t id = 0; id < lim; id++) {
            if (!g->tb[id])
                continue;
            bool ok;
            if (!(g->cls[id] & cls) && (int32_t)id != g->eos) {
                ok = true;
            } else {
                struct inf_dsml_guide_state t = *s;
                ok = token_ok(g, &t, (int32_t)id);
            }
            allow[id] = ok;
            count += ok;
        }
        return count;
    }
    /* Structure, or text in the middle of a delimiter: most first bytes are refused; try each
     * first byte once, then the tokens that begin with a live one (at rest again after that byte,
     * the same shortcut as above). */
    for (unsigned b = 0; b < 256; b++) {
        uint32_t from = g->bstart[b], to = g->bstart[b + 1];
        if (from == to)
            continue;
        struct inf_dsml_guide_state t1 = *s;
        if (!step(g, &t1, (unsigned char)b))
            continue;
        unsigned rc1 = rest_class(&t1);
        for (uint32_t k = from; k < to; k++) {
            int32_t id = g->order[k];
            if ((size_t)id >= lim)
                continue;
            if (rc1 && !(g->cls_rest[id] & rc1) && id != g->eos) {
                allow[id] = 1;
                count++;
                continue;
            }
            struct inf_dsml_guide_state t = t1;
            bool ok = feed_bytes(g, &t, g->tb[id] + 1, g->tl[id] - 1) && (id != g->eos || t.phase == PH_END);
            allow[id] = ok;
            count += ok;
        }
    }
    return count;
}

bool inf_dsml_guide_in_block(const struct inf_dsml_guide_state *s)
{
    switch ((enum phase)s->phase) {
    case PH_LIT:
        return s->lit != (1u << ALT_EOS);
    case PH_TOOL:
    case PH_PARAM:
    case PH_VSTR:
    case PH_VJSON:
        return true;
    default:
        return false;
    }
}

bool inf_dsml_guide_closed(const struct inf_dsml_guide_state *s)
{
    return s->phase == PH_END || (s->phase == PH_LIT && s->lit == (1u << ALT_EOS) && s->pos == 0);
}

bool inf_dsml_guide_dead(const struct inf_dsml_guide_state *s) { return s->phase == PH_DEAD; }

bool inf_dsml_guide_in_reasoning(const struct inf_dsml_guide_state *s) { return s->phase == PH_REASONING; }

int inf_dsml_guide_close_text(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, char *buf,
                              size_t cap, size_t *len)
{
    const char *rest = NULL;
    if (s->phase == PH_LIT && s->lit != (1u << ALT_EOS)) {
        if (s->lit & (1u << ALT_B3))
            rest = alts[ALT_B3].s + s->pos;
        else if (s->lit & (1u << ALT_E3))
            rest = alts[ALT_E3].s + s->pos;
    } else if (s->phase == PH_VJSON && s->jst == J_AFTER && s->jdepth == 0 &&
               !(g->tools[s->tool].required & ~s->used)) {
        rest = alts[ALT_E3].s;
    }
    if (!rest)
        return CTX_ENOTFOUND;
    size_t n = strlen(rest);
    if (n + 1 > cap)
        return CTX_ERANGE;
    memcpy(buf, rest, n + 1);
    *len = n;
    return 0;
}

int inf_dsml_guide_close_value_text(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, char *buf,
                                    size_t cap, size_t *len)
{
    int rc = inf_dsml_guide_close_text(g, s, buf, cap, len);
    if (rc != CTX_ENOTFOUND || s->phase != PH_VSTR || (g->tools[s->tool].required & ~s->used))
        return rc;
    const char *rest = alts[ALT_E3].s;
    size_t n = strlen(rest);
    if (n + 1 > cap)
        return CTX_ERANGE;
    /* a delimiter begun in the value (its '<', say) must not swallow the closing tag */
    struct inf_dsml_guide_state t = *s;
    if (!feed_bytes(g, &t, (const unsigned char *)rest, n) || !inf_dsml_guide_closed(&t))
        return CTX_ENOTFOUND;
    memcpy(buf, rest, n + 1);
    *len = n;
    return 0;
}

const char *inf_dsml_guide_tool(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s)
{
    switch ((enum phase)s->phase) {
    case PH_PARAM:
    case PH_VSTR:
    case PH_VJSON:
        return g->tools[s->tool].name;
    case PH_LIT:
        /* after a tool name and before the end of its invoke */
        return (s->lit & ((1u << ALT_B1) | (1u << ALT_B2) | (1u << ALT_B3) | (1u << ALT_C1) | (1u << ALT_C2) |
                          (1u << ALT_E1) | (1u << ALT_E2) | (1u << ALT_E3)))
                   ? g->tools[s->tool].name : NULL;
    default:
        return NULL;
    }
}
