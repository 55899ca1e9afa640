/* Byte-level BPE trainer and tokenizer.json writer (see bpe.h). The trainer counts pre-tokens
 * (split by the loader's own pre-tokenizer, so training and encoding can never disagree on word
 * boundaries), then merges the most frequent adjacent pair until the vocabulary is full. Pair
 * counts are updated incrementally from the words that contain the merged pair (an index from pair
 * to words), and the best pair comes from a lazy max-heap: entries whose count is stale are
 * re-pushed with the current count, so each merge costs time in the words it touches only. */
#include "bpe.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char data_pre_tokenizer_json[] = "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": []}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{N}{1,3}\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"Split\", \"pattern\": {\"Regex\": \"[\\u4e00-\\u9fa5\\u3040-\\u309f\\u30a0-\\u30ff]+\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"Split\", \"pattern\": {\"Regex\": \"[!\\\"#$%&'()*+,\\\\-./:;<=>?@\\\\[\\\\\\\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\\\p{L}\\\\p{P}\\\\p{S}]?[\\\\p{L}\\\\p{M}]+| ?[\\\\p{P}\\\\p{S}]+[\\r\\n]*|\\\\s*[\\r\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]}, \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": false, \"use_regex\": true}, \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true}}";

#define N_HEAD 3     /* BOS, EOS, pad */
#define FIRST_MERGE (N_HEAD + 256)

/* ---- special tokens ------------------------------------------------------------------------- */

static const struct data_special v3_specials[] = {
    {0, "<｜begin▁of▁sentence｜>", 1},
    {1, "<｜end▁of▁sentence｜>", 1},
    {2, "<｜▁pad▁｜>", 1},
    {128800, "<｜fim▁hole｜>", 0},
    {128801, "<｜fim▁begin｜>", 0},
    {128802, "<｜fim▁end｜>", 0},
    {128803, "<｜User｜>", 0},
    {128804, "<｜Assistant｜>", 0},
    {128805, "<|EOT|>", 1},
    {128806, "<｜tool▁calls▁begin｜>", 0},
    {128807, "<｜tool▁calls▁end｜>", 0},
    {128808, "<｜tool▁call▁begin｜>", 0},
    {128809, "<｜tool▁call▁end｜>", 0},
    {128810, "<｜tool▁outputs▁begin｜>", 0},
    {128811, "<｜tool▁outputs▁end｜>", 0},
    {128812, "<｜tool▁output▁begin｜>", 0},
    {128813, "<｜tool▁output▁end｜>", 0},
    {128814, "<｜tool▁sep｜>", 0},
};
#define N_V3 (sizeof v3_specials / sizeof v3_specials[0])

static struct data_special specials[N_V3 + 64];
static size_t n_specials;
static pthread_once_t specials_once = PTHREAD_ONCE_INIT;

static void specials_build(void)
{
    memcpy(specials, v3_specials, sizeof v3_specials);
    n_specials = N_V3;
    const struct inf_added_token_def *d;
    size_t n = inf_tokenizer_v4_added(&d);
    /* V4's named tokens only: the 415 multimodal placeholders and the ids whose strings no public
     * source gives would cost a sixth of a small vocabulary and are never produced by ctxd. */
    for (size_t i = 0; i < n && n_specials < sizeof specials / sizeof specials[0]; i++) {
        if (!d[i].confirmed || strncmp(d[i].content, "<|place_holder_mm_span_", 23) == 0)
            continue;
        specials[n_specials].v4_id = d[i].id;
        specials[n_specials].content = d[i].content;
        specials[n_specials].special = d[i].special;
        n_specials++;
    }
}

size_t data_special_tokens(const struct data_special **out)
{
    pthread_once(&specials_once, specials_build);
    *out = specials;
    return n_specials;
}

/* ---- byte-level alphabet --------------------------------------------------------------------- */

static void byte_chars(uint32_t b2c[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            b2c[b] = (uint32_t)b;
        else
            b2c[b] = 256 + (uint32_t)n++;
    }
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2; /* byte-level characters are all below U+0800 */
}

/* ids 3..258: bytes ordered by their character, as in V3's vocabulary ('!' is id 3). */
static void byte_ids(int32_t byte_id[256], uint32_t b2c[256])
{
    byte_chars(b2c);
    int32_t order[256];
    for (int i = 0; i < 256; i++)
        order[i] = i;
    for (int i = 1; i < 256; i++) /* insertion sort by character */
        for (int j = i; j > 0 && b2c[order[j - 1]] > b2c[order[j]]; j--) {
            int32_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 0; i < 256; i++)
        byte_id[order[i]] = N_HEAD + i;
}

int data_pretokenizer_new(struct inf_tokenizer **out, struct ctx_err *e)
{
    cJSON *root = cJSON_Parse(data_pre_tokenizer_json);
    if (!root)
        return ctx_err_set(e, CTX_EINTERNAL, "the built-in pre-tokenizer JSON does not parse");
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON_AddArrayToObject(model, "merges");
    uint32_t b2c[256];
    int32_t bid[256];
    byte_ids(bid, b2c);
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t l = put_utf8(s, b2c[b]);
        s[l] = 0;
        cJSON_AddNumberToObject(vocab, s, bid[b]);
    }
    char *txt = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!txt)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = inf_tokenizer_load_buffer(txt, strlen(txt), "pre-tokenizer", false, out, e);
    free(txt);
    return rc;
}

/* ---- word counting --------------------------------------------------------------------------- */

struct word {
    uint32_t off, len;  /* bytes in the arena */
    uint64_t count;
    int32_t *sym;       /* after training starts */
    uint32_t n;
    uint32_t stamp;
};

struct pair_ent {
    uint64_t key;       /* (a << 32) | b; 0 = empty (pair (0,0) cannot occur: ids 0..2 are not symbols) */
    int64_t count;
    uint32_t *words, nw, cw;
};

struct heap_item {
    int64_t count;
    uint64_t key;
};

struct data_bpe {
    char *arena;
    size_t arena_len, arena_cap;
    struct word *w;
    size_t nw, cw;
    uint32_t *wslot; /* word hash: index+1, 0 = empty */
    size_t wmask;
    struct pair_ent *p;
    size_t pmask, pn;
    struct heap_item *h;
    size_t hn, hc;
    uint64_t *merges; /* key per merge */
    size_t n_merges;
};

static uint64_t hash64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

struct data_bpe *data_bpe_new(void)
{
    struct data_bpe *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->wmask = (1u << 16) - 1;
    b->wslot = calloc(b->wmask + 1, sizeof *b->wslot);
    if (!b->wslot) {
        free(b);
        return NULL;
    }
    return b;
}

void data_bpe_free(struct data_bpe *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->nw; i++)
        free(b->w[i].sym);
    if (b->p)
        for (size_t i = 0; i <= b->pmask; i++)
            free(b->p[i].words);
    free(b->p);
    free(b->h);
    free(b->w);
    free(b->wslot);
    free(b->arena);
    free(b->merges);
    free(b);
}

size_t data_bpe_n_merges(const struct data_bpe *b) { return b->n_merges; }
size_t data_bpe_n_words(const struct data_bpe *b) { return b->nw; }

static int word_grow(struct data_bpe *b)
{
    size_t cap = (b->wmask + 1) * 2;
    uint32_t *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return CTX_ENOMEM;
    for (size_t i = 0; i < b->nw; i++) {
        size_t k = hash64(b->arena + b->w[i].off, b->w[i].len) & (cap - 1);
        while (ns[k])
            k = (k + 1) & (cap - 1);
        ns[k] = (uint32_t)i + 1;
    }
    free(b->wslot);
    b->wslot = ns;
    b->wmask = cap - 1;
    return 0;
}

static int add_word(void *ud, const char *piece, size_t n)
{
    struct data_bpe *b = ud;
    if (n > 255) /* long runs (indentation, rulers) are too rare to pay for themselves */
        return 0;
    size_t k = hash64(piece, n) & b->wmask;
    for (uint32_t s; (s = b->wslot[k]); k = (k + 1) & b->wmask) {
        struct word *w = &b->w[s - 1];
        if (w->len == n && memcmp(b->arena + w->off, piece, n) == 0) {
            w->count++;
            return 0;
        }
    }
    if (b->arena_len + n > b->arena_cap) {
        size_t cap = b->arena_cap ? b->arena_cap * 2 : 1 << 20;
        char *a = realloc(b->arena, cap);
        if (!a)
            return CTX_ENOMEM;
        b->arena = a;
        b->arena_cap = cap;
    }
    if (b->nw == b->cw) {
        size_t cap = b->cw ? b->cw * 2 : 1 << 16;
        struct word *w = realloc(b->w, cap * sizeof *w);
        if (!w)
            return CTX_ENOMEM;
        b->w = w;
        b->cw = cap;
    }
    memcpy(b->arena + b->arena_len, piece, n);
    b->w[b->nw] = (struct word){.off = (uint32_t)b->arena_len, .len = (uint32_t)n, .count = 1};
    b->arena_len += n;
    b->wslot[k] = (uint32_t)++b->nw;
    if (b->nw * 2 > b->wmask)
        return word_grow(b);
    return 0;
}

int data_bpe_add_text(struct data_bpe *b, const struct inf_tokenizer *pre, const char *text,
                      size_t len, struct ctx_err *e)
{
    if (b->arena_len > 3000000000u)
        return ctx_err_set(e, CTX_ERANGE, "bpe: more than 3 GB of distinct pre-tokens");
    return inf_tokenizer_pretokenize(pre, text, len, add_word, b, e);
}

/* ---- pairs ------------------------------------------------------------------------------------ */

static struct pair_ent *pair_get(struct data_bpe *b, uint64_t key, int create)
{
    size_t k = mix(key) & b->pmask;
    while (b->p[k].key) {
        if (b->p[k].key == key)
            return &b->p[k];
        k = (k + 1) & b->pmask;
    }
    if (!create)
        return NULL;
    if ((b->pn + 1) * 2 > b->pmask) {
        size_t cap = (b->pmask + 1) * 2;
        struct pair_ent *np = calloc(cap, sizeof *np);
        if (!np)
            return NULL;
        for (size_t i = 0; i <= b->pmask; i++)
            if (b->p[i].key) {
                size_t j = mix(b->p[i].key) & (cap - 1);
                while (np[j].key)
                    j = (j + 1) & (cap - 1);
                np[j] = b->p[i];
            }
        free(b->p);
        b->p = np;
        b->pmask = cap - 1;
        return pair_get(b, key, create);
    }
    b->p[k].key = key;
    b->pn++;
    return &b->p[k];
}

static int heap_push(struct data_bpe *b, int64_t count, uint64_t key)
{
    if (b->hn == b->hc) {
        size_t cap = b->hc ? b->hc * 2 : 1 << 16;
        struct heap_item *h = realloc(b->h, cap * sizeof *h);
        if (!h)
            return CTX_ENOMEM;
        b->h = h;
        b->hc = cap;
    }
    size_t i = b->hn++;
    struct heap_item it = {count, key};
    while (i) {
        size_t p = (i - 1) / 2;
        /* max by count, ties to the smaller key (deterministic) */
        if (b->h[p].count > it.count || (b->h[p].count == it.count && b->h[p].key < it.key))
            break;
        b->h[i] = b->h[p];
        i = p;
    }
    b->h[i] = it;
    return 0;
}

static struct heap_item heap_pop(struct data_bpe *b)
{
    struct heap_item top = b->h[0], last = b->h[--b->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= b->hn)
            break;
        if (c + 1 < b->hn && (b->h[c + 1].count > b->h[c].count ||
                              (b->h[c + 1].count == b->h[c].count && b->h[c + 1].key < b->h[c].key)))
            c++;
        if (last.count > b->h[c].count || (last.count == b->h[c].count && last.key < b->h[c].key))
            break;
        b->h[i] = b->h[c];
        i = c;
    }
    if (b->hn)
        b->h[i] = last;
    return top;
}

/* Add delta * (word count) for every adjacent pair of word wi; with index, list wi under pairs
 * that contain `fresh` (or all pairs when fresh < 0). */
static int word_pairs(struct data_bpe *b, uint32_t wi, int sign, int32_t fresh, int push)
{
    struct word *w = &b->w[wi];
    for (uint32_t i = 0; i + 1 < w->n; i++) {
        uint64_t key = ((uint64_t)(uint32_t)w->sym[i] << 32) | (uint32_t)w->sym[i + 1];
        struct pair_ent *pe = pair_get(b, key, sign > 0);
        if (!pe) {
            if (sign > 0)
                return CTX_ENOMEM;
            continue;
        }
        pe->count += sign * (int64_t)w->count;
        if (sign > 0 && (fresh < 0 || w->sym[i] == fresh || w->sym[i + 1] == fresh)) {
            if (!pe->nw || pe->words[pe->nw - 1] != wi) {
                if (pe->nw == pe->cw) {
                    uint32_t cap = pe->cw ? pe->cw * 2 : 4;
                    uint32_t *nwds = realloc(pe->words, cap * sizeof *nwds);
                    if (!nwds)
                        return CTX_ENOMEM;
                    pe->words = nwds;
                    pe->cw = cap;
                }
                pe->words[pe->nw++] = wi;
            }
            if (push && heap_push(b, pe->count, key))
                return CTX_ENOMEM;
        }
    }
    return 0;
}

int data_bpe_train(struct data_bpe *b, size_t vocab_size, struct ctx_err *e)
{
    const struct data_special *sp;
    size_t nsp = data_special_tokens(&sp);
    if (vocab_size < FIRST_MERGE + nsp)
        return ctx_err_set(e, CTX_EINVAL, "bpe: vocabulary %zu is smaller than bytes + specials (%zu)",
                           vocab_size, (size_t)FIRST_MERGE + nsp);
    size_t want = vocab_size - (nsp - N_HEAD) - FIRST_MERGE;
    uint32_t b2c[256];
    int32_t bid[256];
    byte_ids(bid, b2c);
    b->pmask = (1u << 20) - 1;
    b->p = calloc(b->pmask + 1, sizeof *b->p);
    b->merges = calloc(want + 1, sizeof *b->merges);
    if (!b->p || !b->merges)
        return ctx_err_set(e, CTX_ENOMEM, "bpe: out of memory");
    for (size_t i = 0; i < b->nw; i++) {
        struct word *w = &b->w[i];
        w->sym = malloc((w->len ? w->len : 1) * sizeof *w->sym);
        if (!w->sym)
            return ctx_err_set(e, CTX_ENOMEM, "bpe: out of memory");
        for (uint32_t k = 0; k < w->len; k++)
            w->sym[k] = bid[(unsigned char)b->arena[w->off + k]];
        w->n = w->len;
        if (word_pairs(b, (uint32_t)i, 1, -1, 0))
            return ctx_err_set(e, CTX_ENOMEM, "bpe: out of memory");
    }
    for (size_t i = 0; i <= b->pmask; i++)
        if (b->p[i].key && heap_push(b, b->p[i].count, b->p[i].key))
            return ctx_err_set(e, CTX_ENOMEM, "bpe: out of memory");
    uint32_t stamp = 0;
    while (b->n_merges < want && b->hn) {
        struct heap_item top = heap_pop(b);
        struct pair_ent *pe = pair_get(b, top.key, 0);
        if (!pe || pe->count != top.count) { /* stale: requeue with the current count */
            if (pe && pe->count > 0 && heap_push(b, pe->count, top.key))
                return ctx_err_set(e, CTX_ENOMEM, "bpe: out of memory");
            continue;
        }
        if (pe->count < 2)
            break;
        int32_t a = (int32_t)(top.key >> 32), c = (int32_t)(uint32_t)top.key;
        int32_t z = (int32_t)(FIRST_MERGE + b->n_merges);
        b->merges[b->n_merges++] = top.key;
        stamp++;
        /* take the word list: the merged pair's entry is emptied by the updates below */
        uint32_t *list = pe->words, nlist = pe->nw;
        pe->words = NULL;
        pe->nw = pe->cw = 0;
        for (uint32_t li = 0; li < nlist; li++) {
            uint32_t wi = list[li];
            struct word *w = &b->w[wi];
            if (w->stamp == stamp)
                continue;
            w->stamp = stamp;
            int has = 0;
            for (uint32_t i = 0; i + 1 < w->n; i++)
                if (w->sym[i] == a && w->sym[i + 1] == c) {
                    has = 1;
                    break;
                }
            if (!has)
                continue;
            word_pairs(b, wi, -1, 0, 0);
            uint32_t o = 0;
            for (uint32_t i = 0; i < w->n; i++) {
                if (i + 1 < w->n && w->sym[i] == a && w->sym[i + 1] == c) {
                    w->sym[o++] = z;
                    i++;
                } else {
                    w->sym[o++] = w->sym[i];
                }
            }
            w->n = o;
            if (word_pairs(b, wi, 1, z, 1)) {
                free(list);
                return ctx_err_set(e, CTX_ENOMEM, "bpe: out of memory");
            }
        }
        free(list);
    }
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------------- */

int data_write_atomic(const char *path, const void *buf, size_t len, struct ctx_err *e)
{
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    snprintf(tmp, pl + 16, "%s.tmp%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = ctx_err_errno(e, CTX_EIO, errno, "%s", tmp);
        free(tmp);
        return rc;
    }
    const char *p = buf;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int rc = ctx_err_errno(e, CTX_EIO, errno, "%s: write", tmp);
            close(fd);
            unlink(tmp);
            free(tmp);
            return rc;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) || close(fd) || rename(tmp, path)) {
        int rc = ctx_err_errno(e, CTX_EIO, errno, "%s: fsync/rename", path);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    return 0;
}

static cJSON *added_token(int32_t id, const char *content, int special)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "content", content);
    cJSON_AddBoolToObject(o, "single_word", 0);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", !special);
    cJSON_AddBoolToObject(o, "special", special);
    return o;
}

int data_bpe_write(const struct data_bpe *b, size_t vocab_size, const char *path, struct ctx_err *e)
{
    const struct data_special *sp;
    size_t nsp = data_special_tokens(&sp);
    size_t first_added = FIRST_MERGE + b->n_merges;
    if (first_added + (nsp - N_HEAD) != vocab_size)
        return ctx_err_set(e, CTX_EINVAL, "bpe: %zu merges do not fill a vocabulary of %zu",
                           b->n_merges, vocab_size);
    uint32_t b2c[256];
    int32_t bid[256];
    byte_ids(bid, b2c);
    /* token strings by id */
    char **str = calloc(first_added, sizeof *str);
    if (!str)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = 0;
    for (int i = 0; i < 256; i++) {
        str[bid[i]] = malloc(4);
        size_t l = put_utf8(str[bid[i]], b2c[i]);
        str[bid[i]][l] = 0;
    }
    for (size_t m = 0; m < b->n_merges; m++) {
        const char *l = str[b->merges[m] >> 32], *r = str[(uint32_t)b->merges[m]];
        size_t ll = strlen(l), rl = strlen(r);
        str[FIRST_MERGE + m] = malloc(ll + rl + 1);
        memcpy(str[FIRST_MERGE + m], l, ll);
        memcpy(str[FIRST_MERGE + m] + ll, r, rl + 1);
    }
    cJSON *root = cJSON_Parse(data_pre_tokenizer_json);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "version", "1.0");
    cJSON_AddNullToObject(out, "truncation");
    cJSON_AddNullToObject(out, "padding");
    cJSON *added = cJSON_AddArrayToObject(out, "added_tokens");
    for (size_t i = 0; i < nsp; i++) {
        int32_t id = i < N_HEAD ? (int32_t)i : (int32_t)(first_added + i - N_HEAD);
        cJSON_AddItemToArray(added, added_token(id, sp[i].content, sp[i].special));
    }
    const char *parts[] = {"normalizer", "pre_tokenizer", "post_processor", "decoder"};
    for (int i = 0; i < 4; i++)
        cJSON_AddItemToObject(out, parts[i],
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(root, parts[i]), 1));
    cJSON_Delete(root);
    cJSON *model = cJSON_AddObjectToObject(out, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (size_t i = 0; i < N_HEAD; i++)
        cJSON_AddNumberToObject(vocab, sp[i].content, (double)i);
    for (size_t i = N_HEAD; i < first_added; i++)
        cJSON_AddNumberToObject(vocab, str[i], (double)i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    char buf[1200];
    for (size_t m = 0; m < b->n_merges; m++) {
        snprintf(buf, sizeof buf, "%s %s", str[b->merges[m] >> 32], str[(uint32_t)b->merges[m]]);
        cJSON_AddItemToArray(merges, cJSON_CreateString(buf));
    }
    char *txt = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    for (size_t i = 0; i < first_added; i++)
        free(str[i]);
    free(str);
    if (!txt)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    rc = data_write_atomic(path, txt, strlen(txt), e);
    free(txt);
    return rc;
}

int data_write_tokenizer_config(const char *path, struct ctx_err *e)
{
    /* V4's settings (spec §7.1): no BOS/EOS added by the tokenizer, pad = eos. */
    static const char cfg[] =
        "{\n"
        "  \"add_bos_token\": false,\n"
        "  \"add_eos_token\": false,\n"
        "  \"bos_token\": \"<｜begin▁of▁sentence｜>\",\n"
        "  \"eos_token\": \"<｜end▁of▁sentence｜>\",\n"
        "  \"pad_token\": \"<｜end▁of▁sentence｜>\",\n"
        "  \"unk_token\": null,\n"
        "  \"clean_up_tokenization_spaces\": false,\n"
        "  \"legacy\": true,\n"
        "  \"model_max_length\": 1048576,\n"
        "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n"
        "}\n";
    return data_write_atomic(path, cfg, sizeof cfg - 1, e);
}
