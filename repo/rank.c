/* Personalised PageRank over the definition/reference graph (after Aider's repo map, see
 * shared/notes/agent-anchors.md §2), deterministic: fixed iteration order and count. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct name_ent {
    const char *p;
    uint32_t len;
    uint32_t id; /* UINT32_MAX: empty */
};

struct names {
    struct name_ent *tab;
    size_t cap, n;
    /* per id: defining files (ascending, unique) */
    uint32_t **def_files;
    uint32_t *ndef_files, *cap_def_files;
    const char **id_p;
    uint32_t *id_len;
};

static void names_free(struct names *nm)
{
    for (size_t i = 0; i < nm->n; i++) free(nm->def_files[i]);
    free(nm->def_files);
    free(nm->ndef_files);
    free(nm->cap_def_files);
    free(nm->id_p);
    free(nm->id_len);
    free(nm->tab);
}

/* Returns the id, or UINT32_MAX when absent (create false) or out of memory. */
static uint32_t names_get(struct names *nm, const char *p, uint32_t len, bool create)
{
    if (create && (nm->n + 1) * 2 > nm->cap) {
        size_t ncap = nm->cap ? nm->cap * 2 : 1024;
        struct name_ent *nt = malloc(ncap * sizeof *nt);
        if (!nt) return UINT32_MAX;
        for (size_t i = 0; i < ncap; i++) nt[i].id = UINT32_MAX;
        for (size_t i = 0; i < nm->cap; i++) {
            if (nm->tab[i].id == UINT32_MAX) continue;
            size_t h = (size_t)repo_hash64(nm->tab[i].p, nm->tab[i].len) & (ncap - 1);
            while (nt[h].id != UINT32_MAX) h = (h + 1) & (ncap - 1);
            nt[h] = nm->tab[i];
        }
        free(nm->tab);
        nm->tab = nt;
        nm->cap = ncap;
        size_t idcap = ncap / 2;
        uint32_t **df = realloc(nm->def_files, idcap * sizeof *df);
        if (df) nm->def_files = df;
        uint32_t *nd = realloc(nm->ndef_files, idcap * sizeof *nd);
        if (nd) nm->ndef_files = nd;
        uint32_t *cd = realloc(nm->cap_def_files, idcap * sizeof *cd);
        if (cd) nm->cap_def_files = cd;
        const char **ip = realloc(nm->id_p, idcap * sizeof *ip);
        if (ip) nm->id_p = ip;
        uint32_t *il = realloc(nm->id_len, idcap * sizeof *il);
        if (il) nm->id_len = il;
        if (!df || !nd || !cd || !ip || !il) return UINT32_MAX;
    }
    if (nm->cap == 0) return UINT32_MAX;
    size_t h = (size_t)repo_hash64(p, len) & (nm->cap - 1);
    while (nm->tab[h].id != UINT32_MAX) {
        if (nm->tab[h].len == len && memcmp(nm->tab[h].p, p, len) == 0) return nm->tab[h].id;
        h = (h + 1) & (nm->cap - 1);
    }
    if (!create) return UINT32_MAX;
    uint32_t id = (uint32_t)nm->n++;
    nm->tab[h] = (struct name_ent){p, len, id};
    nm->def_files[id] = NULL;
    nm->ndef_files[id] = nm->cap_def_files[id] = 0;
    nm->id_p[id] = p;
    nm->id_len[id] = len;
    return id;
}

static int names_add_def(struct names *nm, uint32_t id, uint32_t file)
{
    uint32_t n = nm->ndef_files[id];
    if (n && nm->def_files[id][n - 1] == file) return 0;
    if (n == nm->cap_def_files[id]) {
        uint32_t nc = n ? n * 2 : 2;
        uint32_t *v = realloc(nm->def_files[id], nc * sizeof *v);
        if (!v) return -1;
        nm->def_files[id] = v;
        nm->cap_def_files[id] = nc;
    }
    nm->def_files[id][nm->ndef_files[id]++] = file;
    return 0;
}

/* "Specific" names (long, snake or camel case) say more about a link than `get` or `i`. */
static bool is_specific(const char *p, uint32_t len)
{
    if (len < 8) return false;
    bool lower = false;
    for (uint32_t i = 0; i < len; i++) {
        if (p[i] == '_' || p[i] == '-') return true;
        if (islower((unsigned char)p[i])) lower = true;
        if (isupper((unsigned char)p[i]) && lower) return true;
    }
    return false;
}

struct edge {
    uint32_t from, to, id;
    double w;
};

static int cmp_edge(const void *a, const void *b)
{
    const struct edge *x = a, *y = b;
    if (x->from != y->from) return x->from < y->from ? -1 : 1;
    if (x->to != y->to) return x->to < y->to ? -1 : 1;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool in_list(const char *const *list, size_t n, const char *p, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && memcmp(list[i], p, len) == 0) return true;
    return false;
}

int repo_rank(struct repo_snapshot *s, const struct repo_focus *focus, struct ctx_err *e)
{
    size_t nf = s->nfiles;
    struct names nm = {0};
    struct edge *edges = NULL;
    size_t ne = 0, ecap = 0;
    uint64_t *ids = NULL; /* (name id << 1) | generic identifier use */
    double *pers = NULL, *rank = NULL, *next = NULL, *outw = NULL;
    int rc = 0;
    const char *const *fidents = focus ? focus->idents : NULL;
    size_t nfidents = focus ? focus->nidents : 0;
    const char *const *fpaths = focus ? focus->paths : NULL;
    size_t nfpaths = focus ? focus->npaths : 0;

    for (size_t i = 0; i < nf; i++) {
        struct repo_file *f = &s->files[i];
        for (size_t k = 0; k < f->nsyms; k++) {
            const struct repo_symbol *y = &f->syms[k];
            /* One- and two-letter names (loop variables, `x`, `fd`) say nothing about which file
             * another one uses: they stay out of the graph. */
            if (!y->is_def || y->name_len < 3) continue;
            uint32_t id = names_get(&nm, f->text + y->name_off, y->name_len, true);
            if (id == UINT32_MAX || names_add_def(&nm, id, (uint32_t)i)) goto oom;
        }
    }
    size_t idcap = 0;
    for (size_t i = 0; i < nf; i++) {
        struct repo_file *f = &s->files[i];
        if (f->nsyms > idcap) {
            idcap = f->nsyms;
            uint64_t *ni = realloc(ids, idcap * sizeof *ni);
            if (!ni) goto oom;
            ids = ni;
        }
        size_t m = 0;
        for (size_t k = 0; k < f->nsyms; k++) {
            const struct repo_symbol *y = &f->syms[k];
            if (y->is_def) continue;
            uint32_t id = names_get(&nm, f->text + y->name_off, y->name_len, false);
            if (id != UINT32_MAX) ids[m++] = (uint64_t)id << 1 | (y->kind == REPO_SYM_IDENTIFIER);
        }
        if (m > 1) qsort(ids, m, sizeof *ids, cmp_u64);
        bool from_focus = fpaths && in_list(fpaths, nfpaths, f->path, strlen(f->path));
        for (size_t a = 0; a < m;) {
            size_t b = a;
            uint32_t id = (uint32_t)(ids[a] >> 1);
            /* A call or a type use names the definition; a bare identifier (C's catch-all) may be a
             * local that happens to share the name, so it counts for less. */
            double uses = 0;
            while (b < m && (uint32_t)(ids[b] >> 1) == id) uses += (ids[b++] & 1) ? 0.3 : 1.0;
            const char *p = nm.id_p[id];
            uint32_t len = nm.id_len[id];
            double mul = 1.0;
            if (fidents && in_list(fidents, nfidents, p, len)) mul *= 10;
            if (is_specific(p, len)) mul *= 10;
            if (p[0] == '_') mul *= 0.1;
            if (nm.ndef_files[id] > 5) mul *= 0.1;
            if (from_focus) mul *= 50;
            double w = mul * sqrt(uses);
            for (uint32_t d = 0; d < nm.ndef_files[id]; d++) {
                uint32_t to = nm.def_files[id][d];
                if (to == i) continue; /* a file using its own names says nothing about others */
                if (ne == ecap) {
                    ecap = ecap ? ecap * 2 : 1024;
                    struct edge *nv = realloc(edges, ecap * sizeof *nv);
                    if (!nv) goto oom;
                    edges = nv;
                }
                edges[ne++] = (struct edge){(uint32_t)i, to, id, w};
            }
            a = b;
        }
    }
    if (ne > 1) qsort(edges, ne, sizeof *edges, cmp_edge);

    pers = calloc(nf ? nf : 1, sizeof *pers);
    rank = calloc(nf ? nf : 1, sizeof *rank);
    next = calloc(nf ? nf : 1, sizeof *next);
    outw = calloc(nf ? nf : 1, sizeof *outw);
    if (!pers || !rank || !next || !outw) goto oom;
    size_t nnodes = 0;
    for (size_t i = 0; i < nf; i++) nnodes += s->files[i].text != NULL;
    double psum = 0;
    for (size_t i = 0; i < nf; i++) {
        struct repo_file *f = &s->files[i];
        if (!f->text) continue;
        double p = 1.0;
        if (fpaths && in_list(fpaths, nfpaths, f->path, strlen(f->path))) p += 100.0;
        if (fidents) {
            const char *base = strrchr(f->path, '/');
            base = base ? base + 1 : f->path;
            const char *dot = strchr(base, '.');
            size_t bl = dot ? (size_t)(dot - base) : strlen(base);
            if (in_list(fidents, nfidents, base, bl)) p += 100.0;
        }
        pers[i] = p;
        psum += p;
    }
    for (size_t i = 0; i < nf; i++) {
        pers[i] = psum > 0 ? pers[i] / psum : 0;
        rank[i] = pers[i];
    }
    for (size_t k = 0; k < ne; k++) outw[edges[k].from] += edges[k].w;
    const double alpha = 0.85;
    for (int it = 0; it < 60 && nnodes; it++) {
        double dangling = 0;
        for (size_t i = 0; i < nf; i++)
            if (s->files[i].text && outw[i] == 0) dangling += rank[i];
        for (size_t i = 0; i < nf; i++) next[i] = (1 - alpha + alpha * dangling) * pers[i];
        for (size_t k = 0; k < ne; k++)
            next[edges[k].to] += alpha * rank[edges[k].from] * edges[k].w / outw[edges[k].from];
        double diff = 0;
        for (size_t i = 0; i < nf; i++) {
            diff += fabs(next[i] - rank[i]);
            rank[i] = next[i];
        }
        if (diff < 1e-10) break;
    }
    /* Push each file's rank to the definitions its references point at. */
    for (size_t i = 0; i < nf; i++) s->files[i].rank = rank[i];
    for (size_t i = 0; i < nf; i++) {
        struct repo_file *f = &s->files[i];
        for (size_t k = 0; k < f->nsyms; k++) f->syms[k].rank = 0;
    }
    /* def rank by (file, id): edges are sorted by (from, to, id); accumulate per target file. */
    {
        /* Collect contributions into a per-edge value, then add them to the symbols of `to`. */
        for (size_t k = 0; k < ne; k++) {
            struct edge *ed = &edges[k];
            ed->w = rank[ed->from] * ed->w / outw[ed->from];
        }
        /* Re-key as (target, id, referrer) so each target's contributions per name are one run. */
        for (size_t k = 0; k < ne; k++) {
            uint32_t t = edges[k].to, id = edges[k].id;
            edges[k].id = edges[k].from;
            edges[k].from = t;
            edges[k].to = id;
        }
        if (ne > 1) qsort(edges, ne, sizeof *edges, cmp_edge);
        size_t k = 0;
        for (size_t i = 0; i < nf; i++) {
            struct repo_file *f = &s->files[i];
            size_t k0 = k;
            while (k < ne && edges[k].from == i) k++;
            if (!f->ndefs) continue;
            double base = rank[i] * 0.01 / (double)f->ndefs;
            for (size_t q = 0; q < f->nsyms; q++) {
                struct repo_symbol *y = &f->syms[q];
                if (!y->is_def) continue;
                uint32_t id = names_get(&nm, f->text + y->name_off, y->name_len, false);
                double r = base;
                size_t lo = k0, hi = k;
                while (lo < hi) {
                    size_t mid = (lo + hi) / 2;
                    if (edges[mid].to < id) lo = mid + 1;
                    else hi = mid;
                }
                for (size_t j = lo; j < k && edges[j].to == id; j++) r += edges[j].w;
                y->rank = (float)r;
            }
        }
    }
    s->ranked = true;
    goto out;
oom:
    rc = ctx_err_set(e, CTX_ENOMEM, "repo rank: out of memory");
out:
    names_free(&nm);
    free(edges);
    free(ids);
    free(pers);
    free(rank);
    free(next);
    free(outw);
    return rc;
}
