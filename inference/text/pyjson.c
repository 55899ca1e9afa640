/* Python json.dumps/json.loads compatibility; see pyjson.h. */
#include "pyjson.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void inf_buf_put(struct inf_buf *b, const void *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void inf_buf_puts(struct inf_buf *b, const char *s)
{
    inf_buf_put(b, s, strlen(s));
}

void inf_buf_free(struct inf_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void inf_py_dump_string(struct inf_buf *b, const char *s, size_t n)
{
    inf_buf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (esc) {
            inf_buf_put(b, s + i - run, run);
            run = 0;
            inf_buf_puts(b, esc);
        } else
            run++;
    }
    inf_buf_put(b, s + n - run, run);
    inf_buf_put(b, "\"", 1);
}

void inf_py_float_repr(struct inf_buf *b, double v)
{
    if (isnan(v)) {
        inf_buf_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        inf_buf_puts(b, v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    char tmp[64];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX: split into sign, digits and decimal exponent. */
    char digits[32];
    size_t nd = 0;
    const char *q = tmp;
    bool neg = false;
    if (*q == '-') {
        neg = true;
        q++;
    }
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9')
            digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    char out[64];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int k = -1; k > exp10; k--)
                out[o++] = '0';
            memcpy(out + o, digits, nd);
            o += nd;
        } else {
            size_t ip = (size_t)exp10 + 1;
            for (size_t k = 0; k < ip; k++)
                out[o++] = k < nd ? digits[k] : '0';
            out[o++] = '.';
            if (nd > ip) {
                memcpy(out + o, digits + ip, nd - ip);
                o += nd - ip;
            } else
                out[o++] = '0';
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    inf_buf_puts(b, out);
}

void inf_py_dump_cjson(struct inf_buf *b, const cJSON *v)
{
    if (!v || cJSON_IsNull(v)) {
        inf_buf_puts(b, "null");
    } else if (cJSON_IsTrue(v)) {
        inf_buf_puts(b, "true");
    } else if (cJSON_IsFalse(v)) {
        inf_buf_puts(b, "false");
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0) {
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%lld", (long long)d);
            inf_buf_puts(b, tmp);
        } else
            inf_py_float_repr(b, d);
    } else if (cJSON_IsString(v)) {
        inf_py_dump_string(b, v->valuestring, strlen(v->valuestring));
    } else if (cJSON_IsArray(v)) {
        inf_buf_puts(b, "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            inf_py_dump_cjson(b, c);
            if (c->next)
                inf_buf_puts(b, ", ");
        }
        inf_buf_puts(b, "]");
    } else if (cJSON_IsObject(v)) {
        inf_buf_puts(b, "{");
        for (const cJSON *c = v->child; c; c = c->next) {
            inf_py_dump_string(b, c->string ? c->string : "", c->string ? strlen(c->string) : 0);
            inf_buf_puts(b, ": ");
            inf_py_dump_cjson(b, c);
            if (c->next)
                inf_buf_puts(b, ", ");
        }
        inf_buf_puts(b, "}");
    } else {
        inf_buf_puts(b, "null"); /* cJSON_Raw/Invalid do not occur in parsed input */
    }
}

/* ---- a json.loads-compatible reader that re-serialises as json.dumps --------------------- */

/* The value tree: objects need it because a repeated key replaces the earlier value in place. */
struct node {
    int kind; /* 0 literal/number (text = output), 1 string (text = decoded), 2 array, 3 object */
    struct inf_buf text;
    struct node **kids;
    char **keys;
    size_t *key_lens;
    size_t n, cap;
};

struct rd {
    const unsigned char *s;
    size_t n, i;
    int depth;
};

static void node_free(struct node *x)
{
    if (!x)
        return;
    inf_buf_free(&x->text);
    for (size_t i = 0; i < x->n; i++) {
        node_free(x->kids[i]);
        if (x->keys)
            free(x->keys[i]);
    }
    free(x->kids);
    free(x->keys);
    free(x->key_lens);
    free(x);
}

static void skip_ws(struct rd *r)
{
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' ||
                           r->s[r->i] == '\r'))
        r->i++;
}

static int hex4(struct rd *r, uint32_t *v)
{
    if (r->n - r->i < 4)
        return -1;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = r->s[r->i++];
        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            *v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            *v |= c - 'A' + 10;
        else
            return -1;
    }
    return 0;
}

static void put_cp(struct inf_buf *b, uint32_t cp)
{
    char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    inf_buf_put(b, o, n);
}

static int read_string(struct rd *r, struct inf_buf *out)
{
    r->i++; /* opening quote */
    size_t run = r->i;
    while (r->i < r->n) {
        unsigned c = r->s[r->i];
        if (c == '"') {
            inf_buf_put(out, r->s + run, r->i - run);
            r->i++;
            if (!out->p)
                inf_buf_put(out, "", 0);
            return 0;
        }
        if (c < 0x20)
            return -1; /* json.loads is strict about raw control characters */
        if (c != '\\') {
            r->i++;
            continue;
        }
        inf_buf_put(out, r->s + run, r->i - run);
        r->i++;
        if (r->i >= r->n)
            return -1;
        c = r->s[r->i++];
        switch (c) {
        case '"': inf_buf_put(out, "\"", 1); break;
        case '\\': inf_buf_put(out, "\\", 1); break;
        case '/': inf_buf_put(out, "/", 1); break;
        case 'b': inf_buf_put(out, "\b", 1); break;
        case 'f': inf_buf_put(out, "\f", 1); break;
        case 'n': inf_buf_put(out, "\n", 1); break;
        case 'r': inf_buf_put(out, "\r", 1); break;
        case 't': inf_buf_put(out, "\t", 1); break;
        case 'u': {
            uint32_t v, lo;
            if (hex4(r, &v))
                return -1;
            if (v >= 0xD800 && v <= 0xDBFF && r->n - r->i >= 6 && r->s[r->i] == '\\' &&
                r->s[r->i + 1] == 'u') {
                size_t save = r->i;
                r->i += 2;
                if (hex4(r, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF)
                    v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                else
                    r->i = save;
            }
            if (v >= 0xD800 && v <= 0xDFFF)
                v = 0xFFFD; /* a lone surrogate has no UTF-8 form */
            put_cp(out, v);
            break;
        }
        default:
            return -1;
        }
        run = r->i;
    }
    return -1;
}

static struct node *read_value(struct rd *r);

static struct node *new_node(int kind)
{
    struct node *x = calloc(1, sizeof *x);
    if (x)
        x->kind = kind;
    return x;
}

static int add_kid(struct node *x, struct node *k, char *key, size_t key_len)
{
    if (x->kind == 3) {
        for (size_t i = 0; i < x->n; i++)
            if (x->key_lens[i] == key_len && memcmp(x->keys[i], key, key_len) == 0) {
                node_free(x->kids[i]);
                x->kids[i] = k;
                free(key);
                return 0;
            }
    }
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 4;
        struct node **kids = realloc(x->kids, cap * sizeof *kids);
        if (!kids)
            return -1;
        x->kids = kids;
        if (x->kind == 3) {
            char **keys = realloc(x->keys, cap * sizeof *keys);
            if (!keys)
                return -1;
            x->keys = keys;
            size_t *kl = realloc(x->key_lens, cap * sizeof *kl);
            if (!kl)
                return -1;
            x->key_lens = kl;
        }
        x->cap = cap;
    }
    x->kids[x->n] = k;
    if (x->kind == 3) {
        x->keys[x->n] = key;
        x->key_lens[x->n] = key_len;
    }
    x->n++;
    return 0;
}

static struct node *read_number(struct rd *r)
{
    size_t st = r->i;
    if (r->i < r->n && r->s[r->i] == '-')
        r->i++;
    if (r->i >= r->n)
        return NULL;
    if (r->s[r->i] == '0')
        r->i++;
    else if (r->s[r->i] >= '1' && r->s[r->i] <= '9')
        while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9')
            r->i++;
    else
        return NULL;
    bool is_float = false;
    if (r->i + 1 < r->n && r->s[r->i] == '.' && r->s[r->i + 1] >= '0' && r->s[r->i + 1] <= '9') {
        is_float = true;
        r->i++;
        while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9')
            r->i++;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        size_t j = r->i + 1;
        if (j < r->n && (r->s[j] == '+' || r->s[j] == '-'))
            j++;
        if (j < r->n && r->s[j] >= '0' && r->s[j] <= '9') {
            is_float = true;
            while (j < r->n && r->s[j] >= '0' && r->s[j] <= '9')
                j++;
            r->i = j;
        }
    }
    struct node *x = new_node(0);
    if (!x)
        return NULL;
    size_t len = r->i - st;
    if (!is_float) {
        /* Python ints are exact; only "-0" changes (int("-0") == 0). */
        bool all_zero = true;
        for (size_t k = st; k < r->i; k++)
            if (r->s[k] != '-' && r->s[k] != '0')
                all_zero = false;
        if (all_zero)
            inf_buf_put(&x->text, "0", 1);
        else
            inf_buf_put(&x->text, r->s + st, len);
    } else {
        char tmp[512];
        char *t = len < sizeof tmp ? tmp : malloc(len + 1);
        if (!t) {
            free(x);
            return NULL;
        }
        memcpy(t, r->s + st, len);
        t[len] = 0;
        inf_py_float_repr(&x->text, strtod(t, NULL));
        if (t != tmp)
            free(t);
    }
    return x;
}

static bool lit(struct rd *r, const char *w)
{
    size_t l = strlen(w);
    if (r->n - r->i >= l && memcmp(r->s + r->i, w, l) == 0) {
        r->i += l;
        return true;
    }
    return false;
}

static struct node *read_value(struct rd *r)
{
    if (r->depth > 512)
        return NULL;
    skip_ws(r);
    if (r->i >= r->n)
        return NULL;
    unsigned c = r->s[r->i];
    if (c == '"') {
        struct node *x = new_node(1);
        if (!x || read_string(r, &x->text)) {
            node_free(x);
            return NULL;
        }
        return x;
    }
    if (c == '{' || c == '[') {
        bool obj = c == '{';
        struct node *x = new_node(obj ? 3 : 2);
        if (!x)
            return NULL;
        r->i++;
        r->depth++;
        skip_ws(r);
        if (r->i < r->n && r->s[r->i] == (obj ? '}' : ']')) {
            r->i++;
            r->depth--;
            return x;
        }
        for (;;) {
            char *key = NULL;
            size_t key_len = 0;
            if (obj) {
                skip_ws(r);
                struct inf_buf kb = {0};
                if (r->i >= r->n || r->s[r->i] != '"' || read_string(r, &kb) || kb.oom) {
                    inf_buf_free(&kb);
                    node_free(x);
                    return NULL;
                }
                if (!kb.p)
                    kb.p = calloc(1, 1);
                key = kb.p;
                key_len = kb.len;
                skip_ws(r);
                if (r->i >= r->n || r->s[r->i] != ':') {
                    free(key);
                    node_free(x);
                    return NULL;
                }
                r->i++;
            }
            struct node *k = read_value(r);
            if (!k || add_kid(x, k, key, key_len)) {
                node_free(k);
                free(key);
                node_free(x);
                return NULL;
            }
            skip_ws(r);
            if (r->i < r->n && r->s[r->i] == ',') {
                r->i++;
                continue;
            }
            if (r->i < r->n && r->s[r->i] == (obj ? '}' : ']')) {
                r->i++;
                r->depth--;
                return x;
            }
            node_free(x);
            return NULL;
        }
    }
    static const char *const lits[] = {"true", "false", "null", "NaN", "Infinity", "-Infinity"};
    for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++)
        if (lit(r, lits[k])) {
            /* The literal's own spelling is what json.dumps writes back. */
            struct node *x = new_node(0);
            if (x)
                inf_buf_puts(&x->text, lits[k]);
            return x;
        }
    return read_number(r);
}

static void dump_node(struct inf_buf *b, const struct node *x)
{
    switch (x->kind) {
    case 0:
        inf_buf_put(b, x->text.p, x->text.len);
        break;
    case 1:
        inf_py_dump_string(b, x->text.p ? x->text.p : "", x->text.len);
        break;
    case 2:
        inf_buf_puts(b, "[");
        for (size_t i = 0; i < x->n; i++) {
            if (i)
                inf_buf_puts(b, ", ");
            dump_node(b, x->kids[i]);
        }
        inf_buf_puts(b, "]");
        break;
    default:
        inf_buf_puts(b, "{");
        for (size_t i = 0; i < x->n; i++) {
            if (i)
                inf_buf_puts(b, ", ");
            inf_py_dump_string(b, x->keys[i], x->key_lens[i]);
            inf_buf_puts(b, ": ");
            dump_node(b, x->kids[i]);
        }
        inf_buf_puts(b, "}");
    }
}

static struct node *parse_all(const char *text, size_t len, size_t *err_at)
{
    struct rd r = {(const unsigned char *)text, len, 0, 0};
    struct node *x = read_value(&r);
    if (x) {
        skip_ws(&r);
        if (r.i != r.n) {
            node_free(x);
            x = NULL;
        }
    }
    if (!x && err_at)
        *err_at = r.i;
    return x;
}

int inf_py_reserialize(const char *text, size_t len, struct inf_buf *out, size_t *err_at)
{
    struct node *x = parse_all(text, len, err_at);
    if (!x)
        return -1;
    dump_node(out, x);
    node_free(x);
    return 0;
}

int inf_py_object_members(const char *text, size_t len, struct inf_py_member **members, size_t *n,
                          size_t *err_at)
{
    *members = NULL;
    *n = 0;
    struct node *x = parse_all(text, len, err_at);
    if (!x)
        return -1;
    if (x->kind != 3) {
        node_free(x);
        return -2;
    }
    struct inf_py_member *m = calloc(x->n + 1, sizeof *m);
    if (!m) {
        node_free(x);
        return -1;
    }
    for (size_t i = 0; i < x->n; i++) {
        m[i].key = x->keys[i];
        m[i].key_len = x->key_lens[i];
        x->keys[i] = NULL;
        struct node *v = x->kids[i];
        m[i].is_string = v->kind == 1;
        struct inf_buf b = {0};
        if (v->kind == 1)
            inf_buf_put(&b, v->text.p ? v->text.p : "", v->text.len);
        else
            dump_node(&b, v);
        if (!b.p)
            b.p = calloc(1, 1);
        m[i].value = b.p;
        m[i].value_len = b.len;
    }
    *n = x->n;
    *members = m;
    node_free(x);
    return 0;
}

void inf_py_members_free(struct inf_py_member *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].key);
        free(m[i].value);
    }
    free(m);
}
