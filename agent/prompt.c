#include "prompt.h"

#include <stdlib.h>
#include <string.h>

static int encode_head(const struct agent_prefix_opts *o, char **head, size_t *len, struct ctx_err *e)
{
    cJSON *msgs = cJSON_CreateArray();
    cJSON *sys = cJSON_CreateObject();
    if (!msgs || !sys) {
        cJSON_Delete(msgs);
        cJSON_Delete(sys);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    cJSON_AddStringToObject(sys, "role", "system");
    cJSON_AddStringToObject(sys, "content", o->system ? o->system : "");
    cJSON_AddItemToArray(msgs, sys);
    struct inf_dsml_opts dopts = {.mode = o->mode, .drop_thinking = o->tools == NULL};
    char *text;
    size_t n;
    int rc = inf_dsml_encode(msgs, o->tools, &dopts, &text, &n, e);
    cJSON_Delete(msgs);
    if (rc)
        return ctx_err_prefix(e, "rendering the prompt head: ");
    size_t ul = strlen(INF_DSML_USER);
    char *h = realloc(text, n + ul + 1);
    if (!h) {
        free(text);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    memcpy(h + n, INF_DSML_USER, ul + 1);
    *head = h;
    *len = n + ul;
    return 0;
}

/* Tokenize parts [from, nparts) and append them to p->tokens (already cut to part_start[from]). */
static int tokenize_from(struct agent_prefix *p, const struct inf_tokenizer *t, const struct repo_layout *l,
                         size_t from, struct ctx_err *e)
{
    size_t cap = p->n + 1024;
    for (size_t i = from ? from - 1 : 0; i < l->nsegs; i++)
        cap += l->segs[i].tokens ? l->segs[i].tokens + 16 : l->segs[i].len / 2 + 16;
    int32_t *tok = realloc(p->tokens, cap * sizeof *tok);
    if (!tok)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory for %zu prompt tokens", cap);
    p->tokens = tok;
    for (size_t part = from; part < p->nparts; part++) {
        const char *text = part == 0 ? p->head : l->segs[part - 1].text;
        size_t len = part == 0 ? p->head_len : l->segs[part - 1].len;
        const char *prev = part == 0 ? NULL : part == 1 ? p->head : l->segs[part - 2].text;
        size_t prev_len = part == 0 ? 0 : part == 1 ? p->head_len : l->segs[part - 2].len;
        /* The head ends with the <｜User｜> token, which no pre-token crosses; between segments
         * the tokenizer's own rule decides. */
        if (part >= 2 && !inf_tokenizer_boundary_safe(prev, prev_len, text, len))
            return ctx_err_set(e, CTX_EINTERNAL,
                               "prompt segment %zu (%s) does not start at a token boundary",
                               part - 1, l->segs[part - 1].path ? l->segs[part - 1].path : "?");
        int32_t *ids;
        size_t n;
        /* Repository text is untrusted: a file that contains "<｜User｜>" or "</think>" must not
         * become a control token (the head is ours and is tokenized normally). */
        int rc = inf_tokenizer_encode_flags(t, text, len, part == 0 ? 0 : INF_TOK_LITERAL, &ids, &n, e);
        if (rc)
            return ctx_err_prefix(e, "tokenizing prompt part %zu: ", part);
        if (p->n + n > cap) {
            size_t ncap = (p->n + n) * 2;
            tok = realloc(p->tokens, ncap * sizeof *tok);
            if (!tok) {
                free(ids);
                return ctx_err_set(e, CTX_ENOMEM, "out of memory for %zu prompt tokens", ncap);
            }
            p->tokens = tok;
            cap = ncap;
        }
        p->part_start[part] = p->n;
        memcpy(p->tokens + p->n, ids, n * sizeof *ids);
        free(ids);
        p->n += n;
        p->part_hash[part] = repo_hash64(text, len);
    }
    p->part_start[p->nparts] = p->n;
    return 0;
}

int agent_prefix_build(const struct inf_tokenizer *t, const struct agent_prefix_opts *o,
                       const struct repo_layout *l, struct agent_prefix *out, struct ctx_err *e)
{
    memset(out, 0, sizeof *out);
    int rc = encode_head(o, &out->head, &out->head_len, e);
    if (rc)
        return rc;
    out->nparts = 1 + l->nsegs;
    out->part_start = calloc(out->nparts + 1, sizeof *out->part_start);
    out->part_hash = calloc(out->nparts, sizeof *out->part_hash);
    if (!out->part_start || !out->part_hash) {
        agent_prefix_free(out);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    rc = tokenize_from(out, t, l, 0, e);
    if (rc) {
        agent_prefix_free(out);
        return rc;
    }
    out->text_len = out->head_len;
    for (size_t i = 0; i < l->nsegs; i++)
        out->text_len += l->segs[i].len;
    return 0;
}

int agent_prefix_update(struct agent_prefix *p, const struct inf_tokenizer *t,
                        const struct repo_layout *l, size_t first_changed_seg, size_t *first_token,
                        struct ctx_err *e)
{
    size_t from = 1 + (first_changed_seg < l->nsegs ? first_changed_seg : l->nsegs);
    if (from > p->nparts)
        from = p->nparts; /* segments were appended: start at the old end */
    /* The parts before `from` are unchanged by contract; check the hashes rather than trust it. */
    for (size_t i = 1; i < from; i++)
        if (repo_hash64(l->segs[i - 1].text, l->segs[i - 1].len) != p->part_hash[i]) {
            from = i;
            break;
        }
    size_t old_n = p->n;
    int32_t *old_tail = NULL;
    size_t old_tail_n = old_n - p->part_start[from];
    if (old_tail_n) {
        old_tail = malloc(old_tail_n * sizeof *old_tail);
        if (!old_tail)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        memcpy(old_tail, p->tokens + p->part_start[from], old_tail_n * sizeof *old_tail);
    }
    size_t nparts = 1 + l->nsegs;
    size_t *ps = realloc(p->part_start, (nparts + 1) * sizeof *ps);
    uint64_t *ph = ps ? realloc(p->part_hash, nparts * sizeof *ph) : NULL;
    if (ps)
        p->part_start = ps;
    if (ph)
        p->part_hash = ph;
    if (!ps || !ph) {
        free(old_tail);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    p->nparts = nparts;
    p->n = p->part_start[from];
    int rc = tokenize_from(p, t, l, from, e);
    if (rc) {
        free(old_tail);
        return rc;
    }
    /* The first token that really differs (a changed segment often re-tokenizes to the same
     * leading ids). */
    size_t k = 0, base = p->part_start[from];
    while (k < old_tail_n && base + k < p->n && old_tail[k] == p->tokens[base + k])
        k++;
    *first_token = (k == old_tail_n && base + k == p->n) ? p->n : base + k;
    free(old_tail);
    p->text_len = p->head_len;
    for (size_t i = 0; i < l->nsegs; i++)
        p->text_len += l->segs[i].len;
    return 0;
}

void agent_prefix_free(struct agent_prefix *p)
{
    free(p->tokens);
    free(p->part_start);
    free(p->part_hash);
    free(p->head);
    memset(p, 0, sizeof *p);
}

char *agent_prefix_text(const struct agent_prefix *p, const struct repo_layout *l, size_t *len)
{
    char *s = malloc(p->text_len + 1);
    if (!s)
        return NULL;
    memcpy(s, p->head, p->head_len);
    size_t at = p->head_len;
    for (size_t i = 0; i < l->nsegs; i++) {
        memcpy(s + at, l->segs[i].text, l->segs[i].len);
        at += l->segs[i].len;
    }
    s[at] = 0;
    if (len)
        *len = at;
    return s;
}

char *agent_first_turn_content(const struct repo_layout *l, const char *request, size_t *len)
{
    return agent_first_turn_content_overlay(l, NULL, request, len);
}

char *agent_first_turn_content_overlay(const struct repo_layout *l, const char *overlay, const char *request,
                                       size_t *len)
{
    size_t ol = overlay ? strlen(overlay) : 0;
    size_t n = ol + strlen(AGENT_REQUEST_LEAD) + strlen(request);
    for (size_t i = 0; i < l->nsegs; i++)
        n += l->segs[i].len;
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    size_t at = 0;
    for (size_t i = 0; i < l->nsegs; i++) {
        memcpy(s + at, l->segs[i].text, l->segs[i].len);
        at += l->segs[i].len;
    }
    if (ol)
        memcpy(s + at, overlay, ol);
    at += ol;
    memcpy(s + at, AGENT_REQUEST_LEAD, strlen(AGENT_REQUEST_LEAD));
    at += strlen(AGENT_REQUEST_LEAD);
    memcpy(s + at, request, strlen(request));
    at += strlen(request);
    s[at] = 0;
    if (len)
        *len = at;
    return s;
}
