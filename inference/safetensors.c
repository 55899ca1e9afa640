/* safetensors reader (mmap, strict) and atomic writer. See safetensors.h for the format and the
 * checks. Tensor data points into the read-only mapping; the only copies made are of tensors whose
 * offset is not aligned for their element type (the format does not promise alignment, and
 * misaligned F32/I64 loads are undefined behaviour in C) — in practice only small F32/I64 tensors,
 * never the FP8/FP4 weights, whose 1-byte elements are always aligned. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

struct inf_st_file {
    char *path;
    void *map;
    size_t map_len;
    struct inf_tensor *t; /* in data-offset order */
    int n;
    int *by_name;         /* indices into t, sorted by name */
    void **owned;         /* aligned copies of misaligned tensors */
    int n_owned;
};

/* Largest value a double holds exactly; offsets and shapes above it cannot be trusted. */
#define EXACT_MAX 9007199254740992.0

static int get_u64(const cJSON *v, unsigned long long *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d > EXACT_MAX)
        return -1;
    *out = (unsigned long long)d;
    return 0;
}

void inf_st_free_tensors(struct inf_tensor *t, int n)
{
    if (!t)
        return;
    for (int i = 0; i < n; i++)
        free((char *)t[i].name);
    free(t);
}

struct ent {
    unsigned long long off;
    struct inf_tensor t;
};

static int cmp_ent(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    /* zero-length tensors may share an offset; order them by size then name for determinism */
    if (x->t.nbytes != y->t.nbytes)
        return x->t.nbytes < y->t.nbytes ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int inf_st_parse_header(const char *hdr, size_t hdr_len, const uint8_t *data_base, size_t data_len,
                        const char *what, struct inf_tensor **out, int *nout, struct ctx_err *e)
{
    *out = NULL;
    *nout = 0;
    if (!what)
        what = "safetensors";
    if (hdr_len == 0 || hdr[0] != '{')
        return ctx_err_set(e, CTX_EFORMAT, "%s: header does not start with '{'", what);
    char ctxw[600];
    snprintf(ctxw, sizeof ctxw, "%s header", what);
    cJSON *j = ctx_json_parse(hdr, hdr_len, ctxw, e);
    if (!j)
        return CTX_EFORMAT;
    int rc = 0;
    struct ent *t = NULL;
    int n = 0;
    if (!cJSON_IsObject(j)) {
        rc = ctx_err_set(e, CTX_EFORMAT, "%s: header is not a JSON object", what);
        goto done;
    }
    int cap = cJSON_GetArraySize(j);
    t = calloc(cap > 0 ? (size_t)cap : 1, sizeof *t);
    if (!t) {
        rc = ctx_err_set(e, CTX_ENOMEM, "%s: out of memory for %d tensor entries", what, cap);
        goto done;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        const char *name = it->string ? it->string : "";
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(it)) {
                rc = ctx_err_set(e, CTX_EFORMAT, "%s: __metadata__ is not an object", what);
                goto done;
            }
            const cJSON *m;
            cJSON_ArrayForEach(m, it)
            {
                if (!cJSON_IsString(m)) {
                    rc = ctx_err_set(e, CTX_EFORMAT, "%s: __metadata__.%s is not a string", what,
                                     m->string ? m->string : "?");
                    goto done;
                }
            }
            continue;
        }
        if (!*name) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: a tensor has an empty name", what);
            goto done;
        }
        if (!cJSON_IsObject(it)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: entry is not an object", what, name);
            goto done;
        }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: dtype is missing or not a string", what, name);
            goto done;
        }
        enum inf_dtype d;
        if (inf_dtype_from_name(dt->valuestring, &d)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: unknown dtype \"%.40s\"", what, name, dt->valuestring);
            goto done;
        }
        if (!cJSON_IsArray(sh)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: shape is missing or not an array", what, name);
            goto done;
        }
        int nd = cJSON_GetArraySize(sh);
        if (nd > 4) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: %d dimensions (at most 4 supported)", what, name, nd);
            goto done;
        }
        struct inf_tensor *x = &t[n].t;
        x->dtype = d;
        x->ndim = nd;
        /* numel with overflow guard: every partial product stays ≤ 2^53 */
        double numel = 1;
        int k = 0;
        const cJSON *dim;
        cJSON_ArrayForEach(dim, sh)
        {
            unsigned long long v;
            if (get_u64(dim, &v)) {
                rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer", what,
                                 name, k);
                goto done;
            }
            x->shape[k++] = (long long)v;
            numel *= (double)v;
            if (numel > EXACT_MAX) {
                rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: shape is too large", what, name);
                goto done;
            }
        }
        unsigned long long b0, b1;
        if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || get_u64(cJSON_GetArrayItem(of, 0), &b0) ||
            get_u64(cJSON_GetArrayItem(of, 1), &b1)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: data_offsets must be [begin, end] integers", what, name);
            goto done;
        }
        if (b0 > b1) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: data_offsets [%llu, %llu] end before they begin", what,
                             name, b0, b1);
            goto done;
        }
        if (b1 > data_len) {
            rc = ctx_err_set(e, CTX_EFORMAT,
                             "%s: tensor %s: data_offsets [%llu, %llu] run past the end of the data (%zu bytes): "
                             "file truncated?", what, name, b0, b1, data_len);
            goto done;
        }
        double want = numel * (double)inf_dtype_size(d);
        if (want != (double)(b1 - b0)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s: shape and dtype %s give %.0f bytes but data_offsets "
                             "span %llu", what, name, inf_dtype_name(d), want, b1 - b0);
            goto done;
        }
        x->name = strdup(name);
        if (!x->name) {
            rc = ctx_err_set(e, CTX_ENOMEM, "%s: out of memory", what);
            goto done;
        }
        t[n].off = b0;
        x->data = data_base ? (const void *)(data_base + b0) : NULL;
        x->nbytes = (size_t)(b1 - b0);
        n++;
    }
    /* Overlaps: sort by offset; each tensor must start at or after the previous one's end. */
    qsort(t, (size_t)n, sizeof *t, cmp_ent);
    for (int i = 1; i < n; i++) {
        if (t[i].t.nbytes > 0 && t[i].off < t[i - 1].off + t[i - 1].t.nbytes) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensors %s and %s overlap in the data section", what,
                             t[i - 1].t.name, t[i].t.name);
            goto done;
        }
    }
    /* Duplicate names: cJSON keeps both copies of a repeated key. */
    if (n > 1) {
        const char **names = malloc((size_t)n * sizeof *names);
        if (!names) {
            rc = ctx_err_set(e, CTX_ENOMEM, "%s: out of memory", what);
            goto done;
        }
        for (int i = 0; i < n; i++)
            names[i] = t[i].t.name;
        qsort(names, (size_t)n, sizeof *names, cmp_str);
        for (int i = 1; i < n; i++)
            if (!strcmp(names[i], names[i - 1])) {
                rc = ctx_err_set(e, CTX_EFORMAT, "%s: tensor %s appears twice in the header", what, names[i]);
                break;
            }
        free(names);
        if (rc)
            goto done;
    }
done:
    cJSON_Delete(j);
    if (rc) {
        for (int i = 0; i < n; i++)
            free((char *)t[i].t.name);
        free(t);
        return rc;
    }
    /* Compact to plain tensors in offset order (ent is only for sorting). */
    struct inf_tensor *res = malloc((size_t)(n > 0 ? n : 1) * sizeof *res);
    if (!res) {
        for (int i = 0; i < n; i++)
            free((char *)t[i].t.name);
        free(t);
        return ctx_err_set(e, CTX_ENOMEM, "%s: out of memory", what);
    }
    for (int i = 0; i < n; i++)
        res[i] = t[i].t;
    free(t);
    *out = res;
    *nout = n;
    return 0;
}

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtypes[INF_DT_COUNT] = {
    [INF_DT_F32] = {"F32", 4},      [INF_DT_BF16] = {"BF16", 2}, [INF_DT_F8_E4M3] = {"F8_E4M3", 1},
    [INF_DT_F8_E8M0] = {"F8_E8M0", 1}, [INF_DT_I8] = {"I8", 1},  [INF_DT_I32] = {"I32", 4},
    [INF_DT_I64] = {"I64", 8},
};

const char *inf_dtype_name(enum inf_dtype d)
{
    return (unsigned)d < INF_DT_COUNT ? dtypes[d].name : "?";
}

int inf_dtype_from_name(const char *s, enum inf_dtype *out)
{
    for (int i = 0; i < INF_DT_COUNT; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *out = (enum inf_dtype)i;
            return 0;
        }
    return CTX_EFORMAT;
}

size_t inf_dtype_size(enum inf_dtype d)
{
    return (unsigned)d < INF_DT_COUNT ? dtypes[d].size : 0;
}

long long inf_tensor_numel(const struct inf_tensor *t)
{
    long long n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* ---- whole files ---- */

int inf_st_parse_bytes(const uint8_t *buf, size_t len, const char *what, struct inf_tensor **out, int *n,
                       struct ctx_err *e)
{
    *out = NULL;
    *n = 0;
    if (!what)
        what = "safetensors";
    if (len < 8)
        return ctx_err_set(e, CTX_EFORMAT, "%s: %zu bytes is too short for a safetensors file (8-byte header "
                           "length missing): file truncated?", what, len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | buf[i];
    if (hl > INF_ST_MAX_HEADER)
        return ctx_err_set(e, CTX_ERANGE, "%s: header length %llu is over the limit of %u bytes", what,
                           (unsigned long long)hl, (unsigned)INF_ST_MAX_HEADER);
    if (hl > len - 8)
        return ctx_err_set(e, CTX_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes): "
                           "file truncated?", what, (unsigned long long)hl, len);
    return inf_st_parse_header((const char *)buf + 8, (size_t)hl, buf + 8 + hl, len - 8 - (size_t)hl, what, out,
                               n, e);
}

static int cmp_by_name_r(const void *a, const void *b, void *ctx)
{
    const struct inf_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

int inf_st_open(const char *path, struct inf_st_file **out, struct ctx_err *e)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ctx_err_errno(e, errno == ENOENT ? CTX_ENOTFOUND : CTX_EIO, errno, "opening %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int er = errno;
        close(fd);
        return ctx_err_errno(e, CTX_EIO, er, "stat %s", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ctx_err_set(e, CTX_EINVAL, "%s is not a regular file", path);
    }
    struct inf_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory opening %s", path);
    }
    f->map_len = (size_t)st.st_size;
    if (f->map_len > 0) {
        f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            int er = errno;
            f->map = NULL;
            close(fd);
            inf_st_close(f);
            return ctx_err_errno(e, CTX_EIO, er, "mapping %s", path);
        }
    }
    close(fd);
    int rc = inf_st_parse_bytes(f->map ? f->map : (const uint8_t *)"", f->map_len, path, &f->t, &f->n, e);
    if (rc) {
        inf_st_close(f);
        return rc;
    }
    f->by_name = malloc((size_t)(f->n > 0 ? f->n : 1) * sizeof *f->by_name);
    f->owned = calloc((size_t)(f->n > 0 ? f->n : 1), sizeof *f->owned);
    if (!f->by_name || !f->owned) {
        inf_st_close(f);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory opening %s", path);
    }
    for (int i = 0; i < f->n; i++) {
        f->by_name[i] = i;
        size_t al = inf_dtype_size(f->t[i].dtype);
        if (f->t[i].nbytes && ((uintptr_t)f->t[i].data % al) != 0) {
            void *c = aligned_alloc(8, (f->t[i].nbytes + 7) & ~(size_t)7);
            if (!c) {
                inf_st_close(f);
                return ctx_err_set(e, CTX_ENOMEM, "out of memory copying %s in %s", f->t[i].name, path);
            }
            memcpy(c, f->t[i].data, f->t[i].nbytes);
            f->owned[f->n_owned++] = c;
            f->t[i].data = c;
        }
    }
    qsort_r(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_by_name_r, f->t);
    *out = f;
    return 0;
}

int inf_st_count(const struct inf_st_file *f)
{
    return f->n;
}

const struct inf_tensor *inf_st_tensor(const struct inf_st_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const struct inf_tensor *inf_st_find(const struct inf_st_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0)
            return &f->t[f->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

const char *inf_st_path(const struct inf_st_file *f)
{
    return f->path;
}

void inf_st_close(struct inf_st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    if (f->owned)
        for (int i = 0; i < f->n_owned; i++)
            free(f->owned[i]);
    free(f->owned);
    inf_st_free_tensors(f->t, f->n);
    free(f->by_name);
    free(f->path);
    free(f);
}

/* ---- writer ---- */

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_json_str(struct sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            sb_put(b, tmp, 2);
        } else if (*p < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *p);
            sb_str(b, tmp);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int inf_st_write(const char *path, const struct inf_tensor *tensors, int n, struct ctx_err *e)
{
    if (n < 0)
        return ctx_err_set(e, CTX_EINVAL, "%s: negative tensor count", path);
    /* Validate before touching the disk. */
    for (int i = 0; i < n; i++) {
        const struct inf_tensor *t = &tensors[i];
        if (!t->name || !*t->name || !strcmp(t->name, "__metadata__"))
            return ctx_err_set(e, CTX_EINVAL, "%s: tensor %d has an empty or reserved name", path, i);
        if ((unsigned)t->dtype >= INF_DT_COUNT || t->ndim < 0 || t->ndim > 4)
            return ctx_err_set(e, CTX_EINVAL, "%s: tensor %s: bad dtype or rank", path, t->name);
        long long numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            if (t->shape[k] < 0)
                return ctx_err_set(e, CTX_EINVAL, "%s: tensor %s: negative dimension", path, t->name);
            numel *= t->shape[k];
        }
        if ((unsigned long long)numel * inf_dtype_size(t->dtype) != t->nbytes)
            return ctx_err_set(e, CTX_EINVAL, "%s: tensor %s: shape and dtype give %llu bytes, not %zu", path,
                               t->name, (unsigned long long)numel * inf_dtype_size(t->dtype), t->nbytes);
        if (t->nbytes && !t->data)
            return ctx_err_set(e, CTX_EINVAL, "%s: tensor %s has no data", path, t->name);
        for (int k = 0; k < i; k++)
            if (!strcmp(tensors[k].name, t->name))
                return ctx_err_set(e, CTX_EINVAL, "%s: tensor %s is given twice", path, t->name);
    }
    struct sbuf h = {0};
    sb_str(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    unsigned long long off = 0;
    for (int i = 0; i < n; i++) {
        const struct inf_tensor *t = &tensors[i];
        char tmp[96];
        sb_str(&h, ",");
        sb_json_str(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, inf_dtype_name(t->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int k = 0; k < t->ndim; k++) {
            snprintf(tmp, sizeof tmp, "%s%lld", k ? "," : "", t->shape[k]);
            sb_str(&h, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%llu,%llu]}", off, off + t->nbytes);
        sb_str(&h, tmp);
        off += t->nbytes;
    }
    sb_str(&h, "}");
    /* Pad with spaces so the data section starts 8-byte aligned (as the reference writer does). */
    while (!h.oom && (h.len + 8) % 8)
        sb_str(&h, " ");
    if (h.oom) {
        free(h.p);
        return ctx_err_set(e, CTX_ENOMEM, "%s: out of memory building the header", path);
    }
    size_t pl = strlen(path);
    char *tmpl = malloc(pl + 16);
    if (!tmpl) {
        free(h.p);
        return ctx_err_set(e, CTX_ENOMEM, "%s: out of memory", path);
    }
    memcpy(tmpl, path, pl);
    memcpy(tmpl + pl, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmpl);
    if (fd < 0) {
        int er = errno;
        free(h.p);
        free(tmpl);
        return ctx_err_errno(e, CTX_EIO, er, "creating a temporary file next to %s", path);
    }
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)((unsigned long long)h.len >> (8 * i));
    int rc = 0;
    if (write_all(fd, lenb, 8) || write_all(fd, h.p, h.len))
        rc = ctx_err_errno(e, CTX_EIO, errno, "writing %s", tmpl);
    for (int i = 0; !rc && i < n; i++)
        if (tensors[i].nbytes && write_all(fd, tensors[i].data, tensors[i].nbytes))
            rc = ctx_err_errno(e, CTX_EIO, errno, "writing %s (tensor %s)", tmpl, tensors[i].name);
    if (!rc && fchmod(fd, 0644) != 0)
        rc = ctx_err_errno(e, CTX_EIO, errno, "chmod %s", tmpl);
    if (!rc && fsync(fd) != 0)
        rc = ctx_err_errno(e, CTX_EIO, errno, "fsync %s", tmpl);
    if (close(fd) != 0 && !rc)
        rc = ctx_err_errno(e, CTX_EIO, errno, "closing %s", tmpl);
    if (!rc && rename(tmpl, path) != 0)
        rc = ctx_err_errno(e, CTX_EIO, errno, "renaming %s to %s", tmpl, path);
    if (rc) {
        unlink(tmpl);
    } else {
        /* fsync the directory so the rename itself is durable */
        char *dcopy = strdup(path);
        if (dcopy) {
            int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                (void)fsync(dfd);
                close(dfd);
            }
            free(dcopy);
        }
    }
    free(tmpl);
    free(h.p);
    return rc;
}
