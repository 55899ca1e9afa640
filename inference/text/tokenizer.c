/* Byte-level BPE from a Hugging Face tokenizer.json; see tokenizer.h for the contract.
 *
 * Layout of a loaded tokenizer (all immutable after load, hence shareable between threads):
 *   - tok[id]: the token's string as the file writes it (byte-level form for the vocabulary,
 *     literal content for added tokens) and the raw bytes it decodes to;
 *   - a string -> id hash (vocabulary strings and added-token contents) for token_id();
 *   - byte_id[256]: the id of each single byte's token, the starting symbols of BPE;
 *   - a (left id, right id) -> (rank, merged id) hash built from the merges;
 *   - the added tokens in two sets (special first, then the rest, as `tokenizers` splits them),
 *     indexed by their first two bytes for a leftmost-longest scan;
 *   - the pre-tokenizer's regexes, compiled once with PCRE2 JIT. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define MAX_SPLITS 8
#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

struct tok_entry {
    char *str;     /* NUL-terminated token string (points into the string pool) */
    char *bytes;   /* decoded bytes (pool) */
    uint32_t str_len, bytes_len;
    bool defined;
};

struct added {
    int32_t id;
    const char *content; /* pool */
    uint32_t len;
};

/* Added tokens of one matching phase, grouped by their first two bytes (length-1 tokens by
 * their only byte) and sorted longest first, so the first hit at a position is the longest. */
struct added_set {
    struct added *tok;
    size_t n;
    uint32_t *idx2;   /* 65537 offsets into order[] for the two-byte key */
    uint32_t *order2; /* indices into tok[], tokens of length >= 2 */
    int32_t one[256]; /* index into tok[] of the length-1 token starting with that byte, -1 */
    size_t min_len;
};

struct merge_slot {
    uint64_t key; /* (left << 32) | right, UINT64_MAX = empty */
    uint32_t rank;
    int32_t merged;
};

struct inf_tokenizer {
    struct tok_entry *tok;
    size_t n_tok; /* largest id + 1 */
    char *pool;
    size_t pool_len, pool_cap;
    /* string -> id */
    int32_t *str_slots;
    size_t str_mask;
    /* BPE */
    int32_t byte_id[256];
    struct merge_slot *merges;
    size_t merge_mask;
    bool ignore_merges;
    /* added tokens: [0] special, [1] the rest */
    struct added_set added[2];
    size_t max_added_len;
    /* pre-tokenizer */
    pcre2_code *re[MAX_SPLITS];
    size_t n_re;
    bool byte_level; /* a ByteLevel step exists (its use_regex pattern is in re[] if set) */
    size_t max_bytes_len;
};

/* ---- small utilities ---------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n)
{
    /* FNV-1a folded with a final mix: fast enough for load-time tables and cheap per call. */
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

static char *pool_add(struct inf_tokenizer *t, const char *s, size_t n)
{
    /* The pool is grown by reallocation only during load, before any pointer into it is kept:
     * callers store offsets first (see fix_pool_pointers). */
    if (t->pool_len + n + 2 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : (1u << 20);
        while (cap < t->pool_len + n + 2)
            cap *= 2;
        char *p = realloc(t->pool, cap);
        if (!p)
            return NULL;
        t->pool = p;
        t->pool_cap = cap;
        if (t->pool_len == 0)
            t->pool[t->pool_len++] = 0; /* offset 0 is reserved so that no offset reads as NULL */
    }
    char *dst = t->pool + t->pool_len;
    memcpy(dst, s, n);
    dst[n] = 0;
    t->pool_len += n + 1;
    return (char *)(uintptr_t)(dst - t->pool); /* an offset until fix_pool_pointers */
}

size_t inf_utf8_invalid_at(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        /* Fast path over ASCII, eight bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n; /* continuation bytes */
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else
            return i + 1;
        if (n > len - i - 1)
            return i + 1;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i + 1;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i + 1;
        i += n + 1;
    }
    return 0;
}

bool inf_tokenizer_boundary_safe(const char *prev, size_t prev_len, const char *next,
                                 size_t next_len)
{
    if (prev_len == 0 || next_len == 0)
        return true;
    if (prev[prev_len - 1] != '\n')
        return false;
    const unsigned char *s = (const unsigned char *)next;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D))
        return false;
    if (c < 0x80)
        return true;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF && next_len >= 2)
        cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
    else if (c >= 0xE0 && c <= 0xEF && next_len >= 3)
        cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    else
        return true; /* 4-byte characters are never white space */
    return !(cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
             cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 ||
             cp == 0x180E);
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upward. */
static void byte_level_tables(uint32_t byte_to_cp[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_to_cp[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode one code point from valid UTF-8 (the token strings come from cJSON, which emits only
 * valid UTF-8); returns its length. */
static size_t get_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80 || n < 2) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0 || n < 4) {
        if (n < 3) {
            *cp = s[0];
            return 1;
        }
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

/* ---- string -> id ----------------------------------------------------------------------- */

static int str_insert(struct inf_tokenizer *t, int32_t id)
{
    const struct tok_entry *te = &t->tok[id];
    size_t h = hash_bytes(te->str, te->str_len) & t->str_mask;
    for (;;) {
        int32_t cur = t->str_slots[h];
        if (cur < 0) {
            t->str_slots[h] = id;
            return 0;
        }
        const struct tok_entry *ce = &t->tok[cur];
        if (ce->str_len == te->str_len && memcmp(ce->str, te->str, te->str_len) == 0)
            return 1; /* first definition wins (the vocabulary before added tokens) */
        h = (h + 1) & t->str_mask;
    }
}

static int32_t str_find(const struct inf_tokenizer *t, const char *s, size_t n)
{
    size_t h = hash_bytes(s, n) & t->str_mask;
    for (;;) {
        int32_t cur = t->str_slots[h];
        if (cur < 0)
            return -1;
        const struct tok_entry *ce = &t->tok[cur];
        if (ce->str_len == n && memcmp(ce->str, s, n) == 0)
            return cur;
        h = (h + 1) & t->str_mask;
    }
}

int inf_tokenizer_token_id(const struct inf_tokenizer *t, const char *token_string)
{
    if (!t || !token_string)
        return -1;
    return str_find(t, token_string, strlen(token_string));
}

size_t inf_tokenizer_vocab_size(const struct inf_tokenizer *t)
{
    return t->n_tok;
}

const char *inf_tokenizer_id_bytes(const struct inf_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->n_tok || !t->tok[id].defined)
        return NULL;
    *len = t->tok[id].bytes_len;
    return t->tok[id].bytes;
}

/* ---- merges ------------------------------------------------------------------------------ */

static inline const struct merge_slot *merge_find(const struct inf_tokenizer *t, int32_t a,
                                                  int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t h = mix64(key) & t->merge_mask;
    for (;;) {
        const struct merge_slot *s = &t->merges[h];
        if (s->key == key)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
        h = (h + 1) & t->merge_mask;
    }
}

/* ---- loading ----------------------------------------------------------------------------- */

void inf_tokenizer_free(struct inf_tokenizer *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    for (int k = 0; k < 2; k++) {
        free(t->added[k].tok);
        free(t->added[k].idx2);
        free(t->added[k].order2);
    }
    free(t->merges);
    free(t->str_slots);
    free(t->tok);
    free(t->pool);
    free(t);
}

static int compile_re(struct inf_tokenizer *t, const char *pattern, size_t plen, bool literal,
                      const char *field, struct ctx_err *e)
{
    if (t->n_re >= MAX_SPLITS)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s: more than %d regex steps", field, MAX_SPLITS);
    int errc;
    PCRE2_SIZE erroff;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK;
    if (literal)
        opts = PCRE2_LITERAL | PCRE2_UTF | PCRE2_NO_UTF_CHECK;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, plen, opts, &errc, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(errc, msg, sizeof msg);
        return ctx_err_set(e, CTX_EFORMAT, "%s: regex does not compile at offset %zu: %s", field,
                           (size_t)erroff, (const char *)msg);
    }
    /* JIT is a speed-up only: where it is unavailable the interpreter gives the same matches. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    t->re[t->n_re++] = re;
    return 0;
}

static int load_pre_tokenizer(struct inf_tokenizer *t, const cJSON *pt, const char *field,
                              struct ctx_err *e)
{
    if (!pt || cJSON_IsNull(pt))
        return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pt, "type");
    if (!cJSON_IsString(type))
        return ctx_err_set(e, CTX_EFORMAT, "%s.type is missing or not a string", field);
    char sub[160];
    if (strcmp(type->valuestring, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return ctx_err_set(e, CTX_EFORMAT, "%s.pretokenizers must be an array", field);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", field, i);
            int rc = load_pre_tokenizer(t, c, sub, e);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (strcmp(type->valuestring, "Split") == 0) {
        if (t->byte_level)
            return ctx_err_set(e, CTX_EUNSUPPORTED, "%s: a Split after ByteLevel is not supported",
                               field);
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(pt, "behavior");
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0)
            return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.behavior: only \"Isolated\" is supported",
                               field);
        const cJSON *inv = cJSON_GetObjectItemCaseSensitive(pt, "invert");
        if (inv && !cJSON_IsFalse(inv))
            return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.invert: only false is supported", field);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
        const cJSON *rx = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
        const cJSON *lit = pat ? cJSON_GetObjectItemCaseSensitive(pat, "String") : NULL;
        snprintf(sub, sizeof sub, "%s.pattern", field);
        if (cJSON_IsString(rx))
            return compile_re(t, rx->valuestring, strlen(rx->valuestring), false, sub, e);
        if (cJSON_IsString(lit))
            return compile_re(t, lit->valuestring, strlen(lit->valuestring), true, sub, e);
        return ctx_err_set(e, CTX_EFORMAT, "%s.pattern must hold a Regex or String", field);
    }
    if (strcmp(type->valuestring, "ByteLevel") == 0) {
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(pt, "add_prefix_space");
        if (cJSON_IsTrue(aps))
            return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.add_prefix_space: only false is supported",
                               field);
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(pt, "use_regex");
        t->byte_level = true;
        if (!ur || cJSON_IsTrue(ur))
            return compile_re(t, GPT2_PATTERN, strlen(GPT2_PATTERN), false, field, e);
        return 0;
    }
    return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.type \"%s\" is not supported", field,
                       type->valuestring);
}

static int check_normalizer(const cJSON *n, struct ctx_err *e)
{
    if (!n || cJSON_IsNull(n))
        return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 0)
            return 0;
    }
    return ctx_err_set(e, CTX_EUNSUPPORTED,
                       "normalizer: only null or an empty Sequence is supported (byte-level BPE)");
}

static int cmp_added_len_desc(const void *a, const void *b, void *ud)
{
    const struct added *tok = ud;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (tok[x].len != tok[y].len)
        return tok[x].len > tok[y].len ? -1 : 1;
    return x < y ? -1 : (x > y);
}

/* qsort_r is GNU; keep a tiny insertion-free merge sort to stay portable C17. */
static void sort_u32(uint32_t *v, size_t n, const struct added *tok, uint32_t *tmp)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    sort_u32(v, h, tok, tmp);
    sort_u32(v + h, n - h, tok, tmp);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = cmp_added_len_desc(&v[j], &v[i], (void *)tok) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int build_added_set(struct added_set *s, struct ctx_err *e)
{
    for (int b = 0; b < 256; b++)
        s->one[b] = -1;
    s->idx2 = calloc(65537, sizeof *s->idx2);
    s->order2 = malloc((s->n + 1) * sizeof *s->order2);
    uint32_t *tmp = malloc((s->n + 1) * sizeof *tmp);
    if (!s->idx2 || !s->order2 || !tmp) {
        free(tmp);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory indexing added tokens");
    }
    s->min_len = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++) {
        const struct added *a = &s->tok[i];
        if (a->len < s->min_len)
            s->min_len = a->len;
        if (a->len == 1) {
            unsigned char c = (unsigned char)a->content[0];
            if (s->one[c] < 0)
                s->one[c] = (int32_t)i;
        } else {
            unsigned key = ((unsigned char)a->content[0] << 8) | (unsigned char)a->content[1];
            s->idx2[key + 1]++;
        }
    }
    for (size_t k = 0; k < 65536; k++)
        s->idx2[k + 1] += s->idx2[k];
    uint32_t *fill = malloc(65536 * sizeof *fill);
    if (!fill) {
        free(tmp);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory indexing added tokens");
    }
    memcpy(fill, s->idx2, 65536 * sizeof *fill);
    for (size_t i = 0; i < s->n; i++) {
        const struct added *a = &s->tok[i];
        if (a->len < 2)
            continue;
        unsigned key = ((unsigned char)a->content[0] << 8) | (unsigned char)a->content[1];
        s->order2[fill[key]++] = (uint32_t)i;
    }
    for (size_t k = 0; k < 65536; k++)
        sort_u32(s->order2 + s->idx2[k], s->idx2[k + 1] - s->idx2[k], s->tok, tmp);
    free(fill);
    free(tmp);
    return 0;
}

/* An added token as read from the file, before the two sets are built. */
struct added_def {
    int32_t id;
    const char *content;
    bool special;
};

static int set_token(struct inf_tokenizer *t, int32_t id, const char *s, size_t n,
                     const uint32_t cp_to_byte[0x200], struct ctx_err *e)
{
    struct tok_entry *te = &t->tok[id];
    char *off = pool_add(t, s, n);
    if (!off)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory loading tokens");
    te->str = off;
    te->str_len = (uint32_t)n;
    te->defined = true;
    /* Decoded bytes, as the ByteLevel decoder makes them: map every char back to its byte; if
     * any char is outside the map (fullwidth bars in "<｜User｜>"), the token's raw UTF-8. */
    char buf[1024];
    char *dec = n <= sizeof buf ? buf : malloc(n);
    if (!dec)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory loading tokens");
    size_t dl = 0;
    bool all = t->byte_level;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n && all;) {
        uint32_t cp;
        i += get_utf8(u + i, n - i, &cp);
        if (cp >= 0x200 || cp_to_byte[cp] > 255)
            all = false;
        else
            dec[dl++] = (char)cp_to_byte[cp];
    }
    char *boff = all ? pool_add(t, dec, dl) : pool_add(t, s, n);
    if (dec != buf)
        free(dec);
    if (!boff)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory loading tokens");
    te->bytes = boff;
    te->bytes_len = (uint32_t)(all ? dl : n);
    return 0;
}

static int load_common(const cJSON *root, const struct inf_added_token_def *extra, size_t n_extra,
                       const char *path, struct inf_tokenizer **out, struct ctx_err *e)
{
    int rc = 0;
    struct added_def *adefs = NULL;
    size_t n_adefs = 0;
    struct inf_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        rc = ctx_err_set(e, CTX_EFORMAT, "model is missing or not an object");
        goto fail;
    }
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (mtype && (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE") != 0)) {
        rc = ctx_err_set(e, CTX_EUNSUPPORTED, "model.type: only \"BPE\" is supported");
        goto fail;
    }
    const char *unsup_true[] = {"byte_fallback", "fuse_unk"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, unsup_true[i]);
        if (cJSON_IsTrue(v)) {
            rc = ctx_err_set(e, CTX_EUNSUPPORTED, "model.%s: only false is supported",
                             unsup_true[i]);
            goto fail;
        }
    }
    const char *unsup_set[] = {"dropout", "continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, unsup_set[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0])) {
            rc = ctx_err_set(e, CTX_EUNSUPPORTED, "model.%s: only null is supported", unsup_set[i]);
            goto fail;
        }
    }
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab)) {
        rc = ctx_err_set(e, CTX_EFORMAT, "model.vocab is missing or not an object");
        goto fail;
    }
    if (!cJSON_IsArray(merges)) {
        rc = ctx_err_set(e, CTX_EFORMAT, "model.merges is missing or not an array");
        goto fail;
    }
    if ((rc = check_normalizer(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), e)))
        goto fail;
    if ((rc = load_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                                 "pre_tokenizer", e)))
        goto fail;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dec && !cJSON_IsNull(dec)) {
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(dec, "type");
        if (!cJSON_IsString(dt) || strcmp(dt->valuestring, "ByteLevel") != 0) {
            rc = ctx_err_set(e, CTX_EUNSUPPORTED, "decoder.type: only \"ByteLevel\" is supported");
            goto fail;
        }
    }
    if (!t->byte_level) {
        rc = ctx_err_set(e, CTX_EUNSUPPORTED,
                         "pre_tokenizer: no ByteLevel step (only byte-level BPE is supported)");
        goto fail;
    }

    /* Sizes: the largest id among vocabulary, added tokens and extras. */
    int64_t max_id = -1;
    size_t n_vocab = 0;
    for (const cJSON *c = vocab->child; c; c = c->next, n_vocab++) {
        if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble >= 2097152.0 ||
            c->valuedouble != (double)(int64_t)c->valuedouble) {
            rc = ctx_err_set(e, CTX_EFORMAT, "model.vocab[\"%.80s\"]: id is not an integer in [0, 2^21)",
                             c->string ? c->string : "");
            goto fail;
        }
        if ((int64_t)c->valuedouble > max_id)
            max_id = (int64_t)c->valuedouble;
    }
    const cJSON *atoks = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (atoks && !cJSON_IsNull(atoks) && !cJSON_IsArray(atoks)) {
        rc = ctx_err_set(e, CTX_EFORMAT, "added_tokens must be an array");
        goto fail;
    }
    size_t n_at = atoks && cJSON_IsArray(atoks) ? (size_t)cJSON_GetArraySize(atoks) : 0;
    adefs = calloc(n_at + n_extra + 1, sizeof *adefs);
    if (!adefs) {
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        goto fail;
    }
    if (n_at) {
        size_t i = 0;
        for (const cJSON *c = atoks->child; c; c = c->next, i++) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(c, "content");
            if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= 2097152.0 ||
                id->valuedouble != (double)(int64_t)id->valuedouble) {
                rc = ctx_err_set(e, CTX_EFORMAT, "added_tokens[%zu].id is not an integer in [0, 2^21)", i);
                goto fail;
            }
            if (!cJSON_IsString(content) || !content->valuestring[0]) {
                rc = ctx_err_set(e, CTX_EFORMAT, "added_tokens[%zu].content is not a non-empty string", i);
                goto fail;
            }
            const char *flags[] = {"lstrip", "rstrip", "single_word"};
            for (size_t k = 0; k < 3; k++)
                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, flags[k]))) {
                    rc = ctx_err_set(e, CTX_EUNSUPPORTED,
                                     "added_tokens[%zu].%s: only false is supported", i, flags[k]);
                    goto fail;
                }
            adefs[n_adefs].id = (int32_t)id->valuedouble;
            adefs[n_adefs].content = content->valuestring;
            adefs[n_adefs].special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "special"));
            if (adefs[n_adefs].id > max_id)
                max_id = adefs[n_adefs].id;
            n_adefs++;
        }
    }
    size_t n_file_added = n_adefs;
    /* A V4-family tokenizer with ids of its own (models/ctx-small: </think> is not 128822) gets
     * nothing added: V4's ids would lie beyond its model's vocabulary. */
    for (size_t k = 0; k < n_file_added; k++)
        if (strcmp(adefs[k].content, "</think>") == 0 && adefs[k].id != 128822)
            n_extra = 0;
    for (size_t i = 0; i < n_extra; i++) {
        /* V4's extras: keep the file's own definition of an id or content if it has one. */
        bool have = false;
        for (size_t k = 0; k < n_file_added && !have; k++) {
            if (adefs[k].id == extra[i].id) {
                if (extra[i].confirmed && strcmp(adefs[k].content, extra[i].content) != 0) {
                    rc = ctx_err_set(e, CTX_EFORMAT,
                                     "added token id %d is \"%s\", V4 defines it as \"%s\"",
                                     (int)extra[i].id, adefs[k].content, extra[i].content);
                    goto fail;
                }
                have = true;
            } else if (strcmp(adefs[k].content, extra[i].content) == 0)
                have = true;
        }
        if (have)
            continue;
        adefs[n_adefs].id = extra[i].id;
        adefs[n_adefs].content = extra[i].content;
        adefs[n_adefs].special = extra[i].special;
        if (extra[i].id > max_id)
            max_id = extra[i].id;
        n_adefs++;
    }
    if (max_id < 255) {
        rc = ctx_err_set(e, CTX_EFORMAT, "model.vocab has too few tokens (%zu)", n_vocab);
        goto fail;
    }
    t->n_tok = (size_t)max_id + 1;
    t->tok = calloc(t->n_tok, sizeof *t->tok);
    t->str_mask = pow2_at_least((t->n_tok + n_adefs) * 2) - 1;
    t->str_slots = malloc((t->str_mask + 1) * sizeof *t->str_slots);
    if (!t->tok || !t->str_slots) {
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        goto fail;
    }

    uint32_t byte_to_cp[256], cp_to_byte[0x200];
    byte_level_tables(byte_to_cp);
    for (size_t i = 0; i < 0x200; i++)
        cp_to_byte[i] = 0xFFFF;
    for (int b = 0; b < 256; b++)
        cp_to_byte[byte_to_cp[b]] = (uint32_t)b;

    for (const cJSON *c = vocab->child; c; c = c->next) {
        int32_t id = (int32_t)c->valuedouble;
        if (t->tok[id].defined) {
            rc = ctx_err_set(e, CTX_EFORMAT, "model.vocab: id %d is used twice (\"%.80s\")", (int)id,
                             c->string);
            goto fail;
        }
        if ((rc = set_token(t, id, c->string, strlen(c->string), cp_to_byte, e)))
            goto fail;
    }
    for (size_t i = 0; i < n_adefs; i++) {
        int32_t id = adefs[i].id;
        if (t->tok[id].defined) {
            /* An added token may restate a vocabulary entry (BOS/EOS do in V3); its content then
             * must be that entry's string, or ids would decode ambiguously. */
            const char *cur = t->pool + (uintptr_t)t->tok[id].str;
            if (strcmp(cur, adefs[i].content) != 0) {
                rc = ctx_err_set(e, CTX_EFORMAT,
                                 "added_tokens: id %d is \"%s\" but the vocabulary has \"%s\"",
                                 (int)id, adefs[i].content, cur);
                goto fail;
            }
            /* Added tokens decode to their content (the ByteLevel fallback gives the same). */
            continue;
        }
        if ((rc = set_token(t, id, adefs[i].content, strlen(adefs[i].content), cp_to_byte, e)))
            goto fail;
    }
    /* Pointers into the pool are final now. */
    for (size_t i = 0; i < t->n_tok; i++) {
        struct tok_entry *te = &t->tok[i];
        if (te->defined) {
            te->str = t->pool + (uintptr_t)te->str;
            te->bytes = t->pool + (uintptr_t)te->bytes;
            if (te->bytes_len > t->max_bytes_len)
                t->max_bytes_len = te->bytes_len;
        }
    }
    memset(t->str_slots, 0xFF, (t->str_mask + 1) * sizeof *t->str_slots);
    for (size_t i = 0; i < t->n_tok; i++)
        if (t->tok[i].defined)
            str_insert(t, (int32_t)i);

    /* Starting symbols: every byte must have its own token. */
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t n = put_utf8(s, byte_to_cp[b]);
        int32_t id = str_find(t, s, n);
        if (id < 0) {
            rc = ctx_err_set(e, CTX_EFORMAT, "model.vocab has no token for byte 0x%02x", b);
            goto fail;
        }
        t->byte_id[b] = id;
    }

    /* Merges. Both forms exist in the wild: "a b" strings and ["a", "b"] pairs. */
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    t->merge_mask = pow2_at_least(n_merges * 2 + 1) - 1;
    t->merges = malloc((t->merge_mask + 1) * sizeof *t->merges);
    if (!t->merges) {
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i <= t->merge_mask; i++)
        t->merges[i].key = UINT64_MAX;
    char *cat = NULL;
    size_t cat_cap = 0;
    size_t rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || sp == m->valuestring || !sp[1] || strchr(sp + 1, ' ')) {
                free(cat);
                rc = ctx_err_set(e, CTX_EFORMAT, "model.merges[%zu]: \"%.80s\" is not \"left right\"",
                                 rank, m->valuestring);
                goto fail;
            }
            a = m->valuestring;
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            la = strlen(a);
            b = m->child->next->valuestring;
            lb = strlen(b);
        } else {
            free(cat);
            rc = ctx_err_set(e, CTX_EFORMAT, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
                             rank);
            goto fail;
        }
        int32_t ia = str_find(t, a, la), ib = str_find(t, b, lb);
        if (la + lb + 1 > cat_cap) {
            cat_cap = (la + lb + 1) * 2;
            char *nc = realloc(cat, cat_cap);
            if (!nc) {
                free(cat);
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                goto fail;
            }
            cat = nc;
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int32_t im = str_find(t, cat, la + lb);
        if (ia < 0 || ib < 0 || im < 0) {
            free(cat);
            rc = ctx_err_set(e, CTX_EFORMAT,
                             "model.merges[%zu]: \"%.*s\" + \"%.*s\" is not in model.vocab", rank,
                             (int)(la > 60 ? 60 : la), a, (int)(lb > 60 ? 60 : lb), b);
            goto fail;
        }
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        size_t h = mix64(key) & t->merge_mask;
        while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key)
            h = (h + 1) & t->merge_mask;
        if (t->merges[h].key == UINT64_MAX) { /* a repeated pair keeps its first (best) rank */
            t->merges[h].key = key;
            t->merges[h].rank = (uint32_t)rank;
            t->merges[h].merged = im;
        }
    }
    free(cat);

    /* Added-token sets. */
    for (int k = 0; k < 2; k++) {
        t->added[k].tok = calloc(n_adefs + 1, sizeof(struct added));
        if (!t->added[k].tok) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < n_adefs; i++) {
        struct added_set *s = &t->added[adefs[i].special ? 0 : 1];
        int32_t id = adefs[i].id;
        /* Several entries may share an id (restated vocabulary): match on this entry's content,
         * which equals the id's string by the check above. */
        s->tok[s->n].id = id;
        s->tok[s->n].content = t->tok[id].str;
        s->tok[s->n].len = (uint32_t)strlen(adefs[i].content);
        if (s->tok[s->n].len > t->max_added_len)
            t->max_added_len = s->tok[s->n].len;
        s->n++;
    }
    for (int k = 0; k < 2; k++)
        if ((rc = build_added_set(&t->added[k], e)))
            goto fail;
    free(adefs);
    *out = t;
    return 0;
fail:
    free(adefs);
    inf_tokenizer_free(t);
    if (path)
        ctx_err_prefix(e, "%s: ", path);
    return rc;
}

static int load_file(const char *path, const struct inf_added_token_def *extra, size_t n_extra,
                     struct inf_tokenizer **out, struct ctx_err *e)
{
    *out = NULL;
    cJSON *root = ctx_json_read_file(path, 0, e);
    if (!root)
        return e ? e->code : CTX_EFORMAT;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ctx_err_set(e, CTX_EFORMAT, "%s: the top level is not a JSON object", path);
    }
    int rc = load_common(root, extra, n_extra, path, out, e);
    cJSON_Delete(root);
    return rc;
}

int inf_tokenizer_load_buffer(const char *json, size_t len, const char *name, bool v4,
                              struct inf_tokenizer **out, struct ctx_err *e)
{
    *out = NULL;
    const struct inf_added_token_def *defs = NULL;
    size_t n = v4 ? inf_tokenizer_v4_added(&defs) : 0;
    cJSON *root = ctx_json_parse(json, len, name, e);
    if (!root)
        return e ? e->code : CTX_EFORMAT;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ctx_err_set(e, CTX_EFORMAT, "%s: the top level is not a JSON object", name);
    }
    int rc = load_common(root, defs, n, name, out, e);
    cJSON_Delete(root);
    return rc;
}

int inf_tokenizer_load(const char *path, struct inf_tokenizer **out, struct ctx_err *e)
{
    return load_file(path, NULL, 0, out, e);
}

int inf_tokenizer_load_v4(const char *path, struct inf_tokenizer **out, struct ctx_err *e)
{
    const struct inf_added_token_def *defs;
    size_t n = inf_tokenizer_v4_added(&defs);
    return load_file(path, defs, n, out, e);
}

/* ---- V4's added tokens -------------------------------------------------------------------- */

/* Spec §7.1 (source S6). Ids whose string no public source gives carry a reserved name that no
 * text written by a person contains, so that they decode visibly and never match by accident. */
static const struct {
    int32_t id;
    const char *content;
} v4_named[] = {
    {128821, "<think>"},
    {128822, "</think>"},
    {128825, "｜DSML｜"},
    {128826, "<｜begin▁sys｜>"},
    {128827, "<｜end▁sys｜>"},
    {128828, "<｜latest_reminder｜>"},
    {128829, "<｜action｜>"},
    {128830, "<｜query｜>"},
    {128831, "<｜authority｜>"},
    {128832, "<｜domain｜>"},
    {128833, "<｜task｜>"},
    {128834, "<｜political｜>"},
    {128835, "<｜entity｜>"},
    {128836, "<｜title｜>"},
    {128837, "<｜safety｜>"},
    {128838, "<｜answer｜>"},
    {128839, "<｜search｜>"},
    {128840, "<dsml:"},
    {128841, "</dsml:"},
    {128844, "<｜extracted_url｜>"},
    {128845, "<｜read_url｜>"},
    {128846, "<｜end_of_query｜>"},
};

#define V4_FIRST 128815
#define V4_LAST 129279
#define V4_N (V4_LAST - V4_FIRST + 1)

static struct inf_added_token_def v4_defs[V4_N];
static char v4_names[V4_N][48];
static pthread_once_t v4_once = PTHREAD_ONCE_INIT;

static void v4_build(void)
{
    for (int i = 0; i < V4_N; i++) {
        int32_t id = V4_FIRST + i;
        const char *name = NULL;
        for (size_t k = 0; k < sizeof v4_named / sizeof v4_named[0]; k++)
            if (v4_named[k].id == id)
                name = v4_named[k].content;
        v4_defs[i].id = id;
        /* ｜DSML｜ is a plain (non-special) added token in V4 (S6); the rest are special. */
        v4_defs[i].special = id != 128825;
        v4_defs[i].confirmed = 1;
        if (name) {
            v4_defs[i].content = name;
        } else if (id >= 128847 && id <= 129261) {
            snprintf(v4_names[i], sizeof v4_names[i], "<|place_holder_mm_span_%04d|>",
                     (int)(id - 128847 + 21));
            v4_defs[i].content = v4_names[i];
        } else {
            snprintf(v4_names[i], sizeof v4_names[i], "<｜ctx▁unconfirmed▁%d｜>", (int)id);
            v4_defs[i].content = v4_names[i];
            v4_defs[i].confirmed = 0;
        }
    }
}

size_t inf_tokenizer_v4_added(const struct inf_added_token_def **defs)
{
    pthread_once(&v4_once, v4_build);
    *defs = v4_defs;
    return V4_N;
}

/* ---- encoding ------------------------------------------------------------------------------ */

struct sink {
    int32_t *ids;
    size_t n, cap;
    bool count_only;
    int err;
    /* inf_tokenizer_pretokenize: pre-tokens go to this callback instead of BPE. */
    int (*piece)(void *ud, const char *piece, size_t n);
    void *piece_ud;
    int piece_rc;
};

static inline void sink_put(struct sink *s, int32_t id)
{
    if (s->count_only) {
        s->n++;
        return;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        int32_t *p = realloc(s->ids, cap * sizeof *p);
        if (!p) {
            s->err = CTX_ENOMEM;
            return;
        }
        s->ids = p;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
}

/* Per-call scratch for BPE. Heap entries order by (rank, position) like `tokenizers`' Word. */
struct heap_ent {
    uint32_t rank;
    uint32_t pos;
};

struct scratch {
    int32_t *sym;    /* symbol ids */
    int32_t *next;   /* linked list over positions, -1 = end */
    int32_t *prev;
    struct heap_ent *heap;
    size_t cap, heap_n, heap_cap;
    pcre2_match_data *md[MAX_SPLITS];
    /* Direct-mapped cache of short pre-tokens -> ids, sized by the input (none for tiny ones). */
    struct cache_ent *cache;
    size_t cache_mask;
};

#define CACHE_WORD 24
#define CACHE_IDS 12
struct cache_ent {
    uint8_t len, n_ids;
    char word[CACHE_WORD];
    int32_t ids[CACHE_IDS];
};

static int scratch_reserve(struct scratch *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = n < 64 ? 64 : n;
    int32_t *a = realloc(s->sym, cap * sizeof *a);
    if (!a)
        return CTX_ENOMEM;
    s->sym = a;
    a = realloc(s->next, cap * sizeof *a);
    if (!a)
        return CTX_ENOMEM;
    s->next = a;
    a = realloc(s->prev, cap * sizeof *a);
    if (!a)
        return CTX_ENOMEM;
    s->prev = a;
    s->cap = cap;
    return 0;
}

static inline bool heap_less(struct heap_ent a, struct heap_ent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static int heap_push(struct scratch *s, struct heap_ent v)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        struct heap_ent *h = realloc(s->heap, cap * sizeof *h);
        if (!h)
            return CTX_ENOMEM;
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(v, s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = v;
    return 0;
}

static struct heap_ent heap_pop(struct scratch *s)
{
    struct heap_ent top = s->heap[0];
    struct heap_ent last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        struct heap_ent mv = last;
        if (l < n && heap_less(s->heap[l], mv)) {
            m = l;
            mv = s->heap[l];
        }
        if (r < n && heap_less(s->heap[r], mv))
            m = r;
        if (m == i)
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

/* Merge the symbols of one pre-token. Small words use a quadratic scan over an array (fewer
 * branches, no heap); long ones the heap, so a 1 MB line of letters stays n log n. Both pick the
 * lowest rank, leftmost on ties, which is what `tokenizers` does. */
static int bpe_word(const struct inf_tokenizer *t, struct scratch *s, const unsigned char *w,
                    size_t n, struct sink *out)
{
    if (n == 1) {
        sink_put(out, t->byte_id[w[0]]);
        return 0;
    }
    if (scratch_reserve(s, n))
        return CTX_ENOMEM;
    int32_t *sym = s->sym;
    for (size_t i = 0; i < n; i++)
        sym[i] = t->byte_id[w[i]];
    if (n <= 48) {
        size_t m = n;
        for (;;) {
            uint32_t best = UINT32_MAX;
            size_t bi = 0;
            int32_t bm = 0;
            for (size_t i = 0; i + 1 < m; i++) {
                const struct merge_slot *ms = merge_find(t, sym[i], sym[i + 1]);
                if (ms && ms->rank < best) {
                    best = ms->rank;
                    bi = i;
                    bm = ms->merged;
                }
            }
            if (best == UINT32_MAX)
                break;
            sym[bi] = bm;
            memmove(sym + bi + 1, sym + bi + 2, (m - bi - 2) * sizeof *sym);
            m--;
        }
        for (size_t i = 0; i < m; i++)
            sink_put(out, sym[i]);
        return 0;
    }
    int32_t *next = s->next, *prev = s->prev;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prev[i] = (int32_t)i - 1;
    }
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const struct merge_slot *ms = merge_find(t, sym[i], sym[i + 1]);
        if (ms && heap_push(s, (struct heap_ent){ms->rank, (uint32_t)i}))
            return CTX_ENOMEM;
    }
    while (s->heap_n) {
        struct heap_ent h = heap_pop(s);
        int32_t p = (int32_t)h.pos;
        if (sym[p] < 0)
            continue; /* merged away */
        int32_t q = next[p];
        if (q < 0)
            continue;
        const struct merge_slot *ms = merge_find(t, sym[p], sym[q]);
        if (!ms || ms->rank != h.rank)
            continue; /* stale: one side changed since this pair was queued */
        sym[p] = ms->merged;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0)
            prev[next[q]] = p;
        if (prev[p] >= 0) {
            const struct merge_slot *l = merge_find(t, sym[prev[p]], sym[p]);
            if (l && heap_push(s, (struct heap_ent){l->rank, (uint32_t)prev[p]}))
                return CTX_ENOMEM;
        }
        if (next[p] >= 0) {
            const struct merge_slot *r = merge_find(t, sym[p], sym[next[p]]);
            if (r && heap_push(s, (struct heap_ent){r->rank, (uint32_t)p}))
                return CTX_ENOMEM;
        }
    }
    for (int32_t p = 0; p >= 0; p = next[p])
        sink_put(out, sym[p]);
    return 0;
}

static int emit_pretoken(const struct inf_tokenizer *t, struct scratch *s, const unsigned char *w,
                         size_t n, struct sink *out)
{
    if (n == 0)
        return 0;
    if (out->piece) {
        out->piece_rc = out->piece(out->piece_ud, (const char *)w, n);
        return out->piece_rc ? CTX_ECANCELED : 0;
    }
    if (t->ignore_merges) {
        /* Whole-word lookup first, on the byte-level form of the word. */
        uint32_t b2c[256];
        byte_level_tables(b2c);
        char buf[256];
        if (n * 2 <= sizeof buf) {
            size_t l = 0;
            for (size_t i = 0; i < n; i++)
                l += put_utf8(buf + l, b2c[w[i]]);
            int32_t id = str_find(t, buf, l);
            if (id >= 0) {
                sink_put(out, id);
                return 0;
            }
        }
    }
    if (s->cache && n <= CACHE_WORD) {
        struct cache_ent *ce = &s->cache[hash_bytes(w, n) & s->cache_mask];
        if (ce->len == n && memcmp(ce->word, w, n) == 0) {
            for (size_t i = 0; i < ce->n_ids; i++)
                sink_put(out, ce->ids[i]);
            return 0;
        }
        /* An n-byte word yields at most n ids, so a local sink of CACHE_WORD never grows. */
        int32_t local[CACHE_WORD];
        struct sink tmp = {.ids = local, .cap = CACHE_WORD};
        int rc = bpe_word(t, s, w, n, &tmp);
        if (rc)
            return rc;
        if (tmp.n <= CACHE_IDS) {
            ce->len = (uint8_t)n;
            memcpy(ce->word, w, n);
            ce->n_ids = (uint8_t)tmp.n;
            memcpy(ce->ids, local, tmp.n * sizeof *local);
        }
        for (size_t i = 0; i < tmp.n; i++)
            sink_put(out, local[i]);
        return 0;
    }
    return bpe_word(t, s, w, n, out);
}

/* Run regex step `level` over the piece [p, p+n) with Isolated behaviour: matches and the gaps
 * between them both become pieces for the next step. The subject ends at the piece's end, so
 * look-aheads such as (?!\S) see only the piece, as in `tokenizers`. */
static int split_level(const struct inf_tokenizer *t, struct scratch *s, size_t level,
                       const unsigned char *p, size_t n, struct sink *out)
{
    if (n == 0)
        return 0;
    if (level == t->n_re)
        return emit_pretoken(t, s, p, n, out);
    pcre2_match_data *md = s->md[level];
    size_t off = 0, last = 0;
    while (off < n) {
        int r = pcre2_match(t->re[level], p, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (r == PCRE2_ERROR_NOMATCH)
            break;
        if (r < 0)
            return CTX_EINTERNAL;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match splits nothing; step over one character */
            off = ms + 1;
            while (off < n && (p[off] & 0xC0) == 0x80)
                off++;
            continue;
        }
        int rc;
        if (ms > last && (rc = split_level(t, s, level + 1, p + last, ms - last, out)))
            return rc;
        if ((rc = split_level(t, s, level + 1, p + ms, me - ms, out)))
            return rc;
        last = off = me;
    }
    if (last < n)
        return split_level(t, s, level + 1, p + last, n - last, out);
    return 0;
}

/* Leftmost-longest search for an added token of set `k` in [p, p+n); returns the offset of the
 * match (n if none) and its index in *which. */
/* Literal spans: added tokens may not match across any of them (sorted, non-overlapping). */
struct prot {
    const struct inf_text_span *spans;
    size_t n;
};

static bool overlaps(const struct prot *pr, size_t off, size_t len)
{
    if (!pr || pr->n == 0)
        return false;
    /* first span that ends after off */
    size_t lo = 0, hi = pr->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pr->spans[mid].off + pr->spans[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < pr->n && pr->spans[lo].off < off + len && pr->spans[lo].len > 0;
}

/* Leftmost-longest search for an added token of set `as` in [p, p+n) (p is at offset `base` of
 * the whole text); returns the offset of the match (n if none) and its index in *which. */
static size_t find_added(const struct added_set *as, const unsigned char *p, size_t n, size_t *which,
                         const struct prot *pr, size_t base)
{
    if (as->n == 0)
        return n;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n) {
            unsigned key = ((unsigned)p[i] << 8) | p[i + 1];
            for (uint32_t k = as->idx2[key]; k < as->idx2[key + 1]; k++) {
                const struct added *a = &as->tok[as->order2[k]];
                if (a->len <= n - i && memcmp(a->content, p + i, a->len) == 0 &&
                    !overlaps(pr, base + i, a->len)) {
                    *which = as->order2[k];
                    return i;
                }
            }
        }
        int32_t one = as->one[p[i]];
        if (one >= 0 && !overlaps(pr, base + i, 1)) {
            *which = (size_t)one;
            return i;
        }
    }
    return n;
}

static int encode_plain(const struct inf_tokenizer *t, struct scratch *s, const unsigned char *p,
                        size_t n, struct sink *out, const struct prot *pr, size_t base)
{
    /* Phase two: the non-special added tokens inside a piece that phase one left. */
    size_t off = 0;
    while (off < n) {
        size_t which = 0;
        size_t at = off + find_added(&t->added[1], p + off, n - off, &which, pr, base + off);
        int rc = split_level(t, s, 0, p + off, at - off, out);
        if (rc)
            return rc;
        if (at >= n)
            break;
        sink_put(out, t->added[1].tok[which].id);
        off = at + t->added[1].tok[which].len;
    }
    return 0;
}

static int encode_any(const struct inf_tokenizer *t, const char *text, size_t len, unsigned flags,
                      const struct prot *pr, struct sink *out, struct ctx_err *e)
{
    if (!t || (!text && len))
        return ctx_err_set(e, CTX_EINVAL, "tokenizer encode: NULL argument");
    if (len == 0)
        return 0;
    size_t bad = inf_utf8_invalid_at(text, len);
    if (bad)
        return ctx_err_set(e, CTX_EINVAL, "tokenizer encode: invalid UTF-8 at byte %zu", bad - 1);
    struct scratch s = {0};
    int rc = 0;
    for (size_t i = 0; i < t->n_re; i++) {
        s.md[i] = pcre2_match_data_create(1, NULL);
        if (!s.md[i]) {
            rc = CTX_ENOMEM;
            goto done;
        }
    }
    if (len >= 4096) {
        size_t entries = pow2_at_least(len / 32);
        if (entries > 16384)
            entries = 16384;
        s.cache = calloc(entries, sizeof *s.cache);
        if (s.cache)
            s.cache_mask = entries - 1;
    }
    const unsigned char *p = (const unsigned char *)text;
    size_t off = 0;
    if (flags & INF_TOK_LITERAL) {
        rc = split_level(t, &s, 0, p, len, out);
        off = len;
    }
    while (off < len) {
        size_t which = 0;
        size_t at = off + find_added(&t->added[0], p + off, len - off, &which, pr, off);
        if ((rc = encode_plain(t, &s, p + off, at - off, out, pr, off)))
            goto done;
        if (at >= len)
            break;
        sink_put(out, t->added[0].tok[which].id);
        off = at + t->added[0].tok[which].len;
    }
    if (out->err)
        rc = out->err;
done:
    for (size_t i = 0; i < t->n_re; i++)
        pcre2_match_data_free(s.md[i]);
    free(s.sym);
    free(s.next);
    free(s.prev);
    free(s.heap);
    free(s.cache);
    if (rc == CTX_ENOMEM)
        return ctx_err_set(e, rc, "tokenizer encode: out of memory (%zu bytes of text)", len);
    if (rc)
        return ctx_err_set(e, rc, "tokenizer encode: regex matching failed");
    return 0;
}

int inf_tokenizer_encode(const struct inf_tokenizer *t, const char *text, size_t len,
                         int32_t **ids, size_t *n_ids, struct ctx_err *e)
{
    return inf_tokenizer_encode_flags(t, text, len, 0, ids, n_ids, e);
}

int inf_tokenizer_count(const struct inf_tokenizer *t, const char *text, size_t len, size_t *n,
                        struct ctx_err *e)
{
    return inf_tokenizer_count_flags(t, text, len, 0, n, e);
}

int inf_tokenizer_encode_flags(const struct inf_tokenizer *t, const char *text, size_t len,
                               unsigned flags, int32_t **ids, size_t *n_ids, struct ctx_err *e)
{
    struct sink out = {0};
    *ids = NULL;
    *n_ids = 0;
    if (len > 64) {
        out.cap = len / 3 + 16;
        out.ids = malloc(out.cap * sizeof *out.ids);
        if (!out.ids)
            return ctx_err_set(e, CTX_ENOMEM, "tokenizer encode: out of memory");
    }
    int rc = encode_any(t, text, len, flags, NULL, &out, e);
    if (rc) {
        free(out.ids);
        return rc;
    }
    if (out.n == 0) {
        free(out.ids);
        out.ids = NULL;
    }
    *ids = out.ids;
    *n_ids = out.n;
    return 0;
}

int inf_tokenizer_encode_spans(const struct inf_tokenizer *t, const char *text, size_t len,
                               const struct inf_text_span *spans, size_t n_spans, int32_t **ids,
                               size_t *n_ids, struct ctx_err *e)
{
    *ids = NULL;
    *n_ids = 0;
    for (size_t i = 0; i < n_spans; i++)
        if (spans[i].off > len || spans[i].len > len - spans[i].off ||
            (i && spans[i].off < spans[i - 1].off + spans[i - 1].len))
            return ctx_err_set(e, CTX_EINVAL, "tokenizer encode: span %zu [%zu, +%zu) is outside the text "
                                              "or out of order", i, spans[i].off, spans[i].len);
    struct prot pr = {spans, n_spans};
    struct sink out = {0};
    int rc = encode_any(t, text, len, 0, &pr, &out, e);
    if (rc) {
        free(out.ids);
        return rc;
    }
    *ids = out.n ? out.ids : NULL;
    if (!out.n)
        free(out.ids);
    *n_ids = out.n;
    return 0;
}

int inf_tokenizer_count_flags(const struct inf_tokenizer *t, const char *text, size_t len,
                              unsigned flags, size_t *n, struct ctx_err *e)
{
    struct sink out = {0};
    out.count_only = true;
    *n = 0;
    int rc = encode_any(t, text, len, flags, NULL, &out, e);
    if (!rc)
        *n = out.n;
    return rc;
}

int inf_tokenizer_pretokenize(const struct inf_tokenizer *t, const char *text, size_t len,
                              int (*fn)(void *ud, const char *piece, size_t n), void *ud,
                              struct ctx_err *e)
{
    struct sink out = {.count_only = true, .piece = fn, .piece_ud = ud};
    int rc = encode_any(t, text, len, INF_TOK_LITERAL, NULL, &out, e);
    if (rc && out.piece_rc)
        return ctx_err_set(e, out.piece_rc, "tokenizer pre-tokenize: the callback stopped at a piece");
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (1..4), 0 if s[0..] starts an invalid one, or -k if
 * it is a valid but incomplete prefix of k bytes at the end of the buffer. Maximal-subpart rule
 * (as Rust's from_utf8_lossy): an invalid sequence consumes the longest valid prefix, min 1. */
static int utf8_seq(const unsigned char *s, size_t n, size_t *consumed)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *consumed = 1;
        return 1;
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        *consumed = 1;
        return 0;
    }
    size_t k = 1;
    for (; k <= need; k++) {
        if (k >= n) {
            *consumed = k;
            return -(int)k;
        }
        unsigned b = s[k];
        unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (b < l || b > h) {
            *consumed = k;
            return 0;
        }
    }
    *consumed = need + 1;
    return (int)(need + 1);
}

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Append bytes to out with invalid sequences replaced; with `hold` set, a valid incomplete tail
 * is not written and its length returned. */
static size_t lossy_copy(const unsigned char *s, size_t n, char *out, size_t *w, bool hold)
{
    size_t i = 0;
    while (i < n) {
        size_t used;
        int r = utf8_seq(s + i, n - i, &used);
        if (r > 0) {
            memcpy(out + *w, s + i, used);
            *w += used;
        } else if (r < 0 && hold) {
            return n - i;
        } else {
            memcpy(out + *w, REPL, 3);
            *w += 3;
        }
        i += used;
    }
    return 0;
}

int inf_tokenizer_decode(const struct inf_tokenizer *t, const int32_t *ids, size_t n, char **text,
                         size_t *len, struct ctx_err *e)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_tok || !t->tok[ids[i]].defined)
            return ctx_err_set(e, CTX_EINVAL, "tokenizer decode: id %d at index %zu is not in the vocabulary",
                               (int)ids[i], i);
        total += t->tok[ids[i]].bytes_len;
    }
    unsigned char *raw = malloc(total + 1);
    /* Each invalid byte becomes 3 bytes at most. */
    char *out = malloc(total * 3 + 1);
    if (!raw || !out) {
        free(raw);
        free(out);
        return ctx_err_set(e, CTX_ENOMEM, "tokenizer decode: out of memory");
    }
    size_t r = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(raw + r, t->tok[ids[i]].bytes, t->tok[ids[i]].bytes_len);
        r += t->tok[ids[i]].bytes_len;
    }
    size_t w = 0;
    lossy_copy(raw, r, out, &w, false);
    free(raw);
    out[w] = 0;
    *text = out;
    *len = w;
    return 0;
}

/* ---- streaming detokenizer ------------------------------------------------------------------ */

struct inf_detok {
    const struct inf_tokenizer *t;
    unsigned char held[4];
    size_t n_held;
};

struct inf_detok *inf_detok_new(const struct inf_tokenizer *t)
{
    struct inf_detok *d = calloc(1, sizeof *d);
    if (d)
        d->t = t;
    return d;
}

void inf_detok_free(struct inf_detok *d)
{
    free(d);
}

void inf_detok_reset(struct inf_detok *d)
{
    d->n_held = 0;
}

size_t inf_detok_max_chunk(const struct inf_detok *d)
{
    return (d->t->max_bytes_len + 4) * 3 + 1;
}

int inf_detok_push(struct inf_detok *d, int32_t id, char *out, size_t cap, size_t *len)
{
    *len = 0;
    size_t bl;
    const char *b = inf_tokenizer_id_bytes(d->t, id, &bl);
    if (!b)
        return CTX_EINVAL;
    if ((d->n_held + bl) * 3 > cap)
        return CTX_ERANGE;
    unsigned char stackbuf[512];
    unsigned char *buf = d->n_held + bl <= sizeof stackbuf ? stackbuf : malloc(d->n_held + bl);
    if (!buf)
        return CTX_ENOMEM;
    memcpy(buf, d->held, d->n_held);
    memcpy(buf + d->n_held, b, bl);
    size_t n = d->n_held + bl;
    size_t w = 0;
    size_t keep = lossy_copy(buf, n, out, &w, true);
    memcpy(d->held, buf + n - keep, keep);
    d->n_held = keep;
    if (buf != stackbuf)
        free(buf);
    *len = w;
    return 0;
}

int inf_detok_finish(struct inf_detok *d, char *out, size_t cap, size_t *len)
{
    *len = 0;
    if (d->n_held * 3 > cap)
        return CTX_ERANGE;
    size_t w = 0;
    lossy_copy(d->held, d->n_held, out, &w, false);
    d->n_held = 0;
    *len = w;
    return 0;
}
