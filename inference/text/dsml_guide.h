/* Grammar-constrained decoding of DSML completions ("strict tools"): which token ids may come next
 * so that the completion stays a prefix of one that inf_dsml_parse accepts and whose tool calls
 * the agent loop can run — known tool names, known parameters of that tool (each at most once,
 * string="true" for string-typed ones, string="false" with a JSON value of the declared type for
 * the others), required parameters present before the invoke closes, and the block closed.
 *
 * The guide works on bytes: a token is allowed when feeding its bytes to the state does not kill
 * it, so any tokenization of the same text is judged the same. Outside a tool-call block only
 * what the parser would reject is refused (a special token inside reasoning or content, a block
 * opened inside the reasoning, the end of sentence inside the reasoning); text is otherwise free.
 *
 * A guide (inf_dsml_guide_new) is immutable and may be shared by threads; the per-completion
 * state (struct inf_dsml_guide_state) is a small plain struct: copy it by assignment to try
 * something out. Feeding and masking allocate nothing. */
#ifndef INF_DSML_GUIDE_H
#define INF_DSML_GUIDE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsml.h"
#include "err.h"
#include "tokenizer.h"

/* Where a completion is; the fields are the guide's business (read only the phase helpers). */
struct inf_dsml_guide_state {
    uint8_t phase;
    uint8_t scan, taint;       /* text scanner: node, deferred special token */
    uint8_t jst, jlit, jdepth; /* JSON value: lexer state, literal cursor, nesting depth */
    uint8_t jflags;
    uint8_t ptype;             /* the open parameter's allowed kinds */
    uint16_t lit, pos;         /* literal alternatives (mask) and the cursor in them or in a name */
    uint16_t lo, hi;           /* candidate names (sorted index range) */
    uint16_t tool;             /* the open invoke's tool */
    uint16_t calls;            /* invokes completed in the block */
    uint64_t used;             /* parameters given in the open invoke (sorted index bits) */
    uint64_t jstack;           /* JSON containers: bit set = object */
};

struct inf_dsml_guide;

/* `tools`: the declared tools, OpenAI shape ([{type, function: {name, parameters: {properties,
 * required}}}]) or objects with "name" and optional "parameters". A property's "type" ("string",
 * "integer", "number", "boolean", "array", "object", "null", or an array of them) decides its
 * string attribute and JSON kind; without one, anything goes. Names must be non-empty, must not
 * hold '"', '<', '>' or a newline, nor repeat; at most 64 parameters per tool. The tokenizer must
 * outlive the guide (token bytes are borrowed); NULL gives a guide of bytes only (feed, close
 * text; no token is allowed). CTX_EINVAL names the offending tool/parameter. */
int inf_dsml_guide_new(const struct inf_tokenizer *tok, const cJSON *tools, struct inf_dsml_guide **out,
                       struct ctx_err *e);
void inf_dsml_guide_free(struct inf_dsml_guide *g);

/* The state at the start of a completion: in the reasoning (thinking mode: the prompt ended with
 * "<think>") or in the content (chat mode). */
void inf_dsml_guide_start(const struct inf_dsml_guide *g, enum inf_dsml_mode mode, struct inf_dsml_guide_state *s);

/* Feed completion bytes. Returns 0, or CTX_EFORMAT when they leave the grammar (the state is then
 * dead: every later feed fails and no token is allowed). */
int inf_dsml_guide_feed(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, const char *p, size_t n);
/* Feed one token: its bytes, except that the end-of-sentence id is allowed only where the
 * completion may end (the decoder stops on it, so it cannot be text inside a block). */
int inf_dsml_guide_feed_token(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, int32_t id);

/* Whether token `id` may come next. */
bool inf_dsml_guide_allows(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, int32_t id);

/* allow[id] = 1 or 0 for ids 0..n-1 (ids the tokenizer does not define are 0); returns how many
 * are allowed (0 only when the completion is over or the state is dead). Cost: one pass over the
 * ids plus the bytes of the tokens that can matter in this state (tokens whose first byte is
 * refused are skipped in bulk). */
size_t inf_dsml_guide_mask(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, uint8_t *allow,
                           size_t n);

/* Inside a tool-call block (from "\n\n<｜DSML｜tool_calls" to its closing tag). */
bool inf_dsml_guide_in_block(const struct inf_dsml_guide_state *s);
/* The completion is over (after the end of sentence) or its block is closed (and no part of an
 * end of sentence follows it). */
bool inf_dsml_guide_closed(const struct inf_dsml_guide_state *s);
bool inf_dsml_guide_dead(const struct inf_dsml_guide_state *s);
/* In the reasoning (thinking mode, before "</think>"), where the end of sentence is refused. */
bool inf_dsml_guide_in_reasoning(const struct inf_dsml_guide_state *s);

/* The shortest text that closes the open block without inventing a parameter or a value: only
 * between two parameters or calls, or after a complete JSON value, with the open call's required
 * parameters present. Writes it to buf (NUL-terminated) and returns 0, or CTX_ENOTFOUND when the
 * block cannot be closed from here (mid-name, mid-value, a required parameter missing) or no block
 * is open; CTX_ERANGE when cap is too small (128 bytes always suffice). */
int inf_dsml_guide_close_text(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, char *buf,
                              size_t cap, size_t *len);

/* The same, except that an open string="true" value may also be cut where it stands: for callers
 * that know that cutting it is harmless (a read-only tool's argument). Verified against the
 * grammar (a delimiter begun inside the value is taken into account). */
int inf_dsml_guide_close_value_text(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s, char *buf,
                                    size_t cap, size_t *len);

/* The open invoke's tool name (inside a block, once its name is complete), else NULL. */
const char *inf_dsml_guide_tool(const struct inf_dsml_guide *g, const struct inf_dsml_guide_state *s);

/* Number of tools the guide knows. */
size_t inf_dsml_guide_n_tools(const struct inf_dsml_guide *g);

#endif
