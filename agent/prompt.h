/* The prompt layout contract of DESIGN.md §4, in tokens. The resident prefix of a repository is
 *
 *   BOS, system text, the "## Tools" section (tools frozen per repository)   — the head
 *   <｜User｜> and the repository block: layout segments in order             — the opening of the
 *                                                                              first user turn
 *
 * and a conversation continues that first user turn with "Request: ..." and then follows the DSML
 * format. Each part is tokenized on its own, so that an edit re-tokenizes only the parts from the
 * first changed segment on; the boundaries are ones where separate tokenization equals whole-text
 * tokenization (every segment ends with '\n' and the next starts with a non-space character),
 * which prefix_build checks rather than assumes. Repository segments are tokenized literally: text
 * in a file that spells a control token ("<｜User｜>", "</think>") stays text. */
#ifndef AGENT_PROMPT_H
#define AGENT_PROMPT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "dsml.h"
#include "err.h"
#include "repo.h"
#include "tokenizer.h"

/* What turns the request into the first user turn's remainder. Starts with a letter: see above. */
#define AGENT_REQUEST_LEAD "Request: "

struct agent_prefix_opts {
    const char *system;       /* system text (raw, after BOS) */
    const cJSON *tools;       /* OpenAI-shape tool list, or NULL */
    enum inf_dsml_mode mode;
};

struct agent_prefix {
    int32_t *tokens;
    size_t n;
    size_t nparts;            /* 1 (head) + the layout's segments */
    size_t *part_start;       /* [nparts + 1]: token index where part i starts; [nparts] == n */
    uint64_t *part_hash;      /* [nparts]: hash of each part's text */
    char *head;               /* head text, ending with <｜User｜> */
    size_t head_len;
    size_t text_len;          /* bytes of the whole prefix text */
};

int agent_prefix_build(const struct inf_tokenizer *t, const struct agent_prefix_opts *o,
                       const struct repo_layout *l, struct agent_prefix *out, struct ctx_err *e);

/* After repo_layout_update reported first_changed_seg: re-tokenize the parts from there on.
 * *first_token gets the first token index that differs from before (tokens before it, and the
 * model state for them, stay valid); n if nothing changed. */
int agent_prefix_update(struct agent_prefix *p, const struct inf_tokenizer *t,
                        const struct repo_layout *l, size_t first_changed_seg, size_t *first_token,
                        struct ctx_err *e);

void agent_prefix_free(struct agent_prefix *p);

/* The whole prefix text (head + segments), malloc'd; for tests and for remote backends that take
 * text rather than tokens. */
char *agent_prefix_text(const struct agent_prefix *p, const struct repo_layout *l, size_t *len);

/* The first user message's content for a request: the repository block, then AGENT_REQUEST_LEAD
 * and the request. Rendering [system, user(this)] with the DSML encoder gives the prefix text
 * followed by the request: tests/agent/test_prompt.c checks that byte for byte. */
char *agent_first_turn_content(const struct repo_layout *l, const char *request, size_t *len);

/* The same with an overlay between the repository block and the request: the current text of
 * files edited since the resident prefix was computed (a long re-prefill deferred until the
 * repository is idle). The overlay must end with '\n'. */
char *agent_first_turn_content_overlay(const struct repo_layout *l, const char *overlay, const char *request,
                                       size_t *len);

#endif
