/* Synthetic agent transcripts (issue 12): a question about a real repository answered through
 * real tool calls. The conversation runs through agent_loop_run with agent/'s real tools; the
 * "model" is a script that decides the calls and, from the real tool results, the answer. Each
 * completion is the DSML encoder's canonical rendering of the scripted assistant message, so the
 * transcript is byte for byte what agent_loop_render_prompt gives for the same messages and what
 * the daemon renders at inference time (system text DATA_SYSTEM, the tool schemas, the layout). */
#ifndef DATA_TRANSCRIPT_H
#define DATA_TRANSCRIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "loop.h"
#include "repo.h"
#include "tokenizer.h"

/* daemon/repos.c DEFAULT_SYSTEM, byte for byte (the daemon's resident prefix starts with it). */
#define DATA_SYSTEM                                                                                \
    "You are ctxd, an assistant that answers questions about the git repository below. Its files " \
    "are quoted in full or as outlines; answer from them, name files and lines, and say so when "   \
    "the repository does not contain the answer."

/* Layout budget (tokens) of the repository block in every transcript; run the model with the same
 * `ctx --budget` / repo.open budget. */
#define DATA_BUDGET 1536

enum data_task_kind {
    DATA_TASK_DEF_FIND = 0, /* where is X defined: find_symbol, answer */
    DATA_TASK_DEF_SEARCH,   /* where is X defined: search, answer */
    DATA_TASK_DEF_READ,     /* where is X defined: find_symbol, read_file, answer quoting the line */
    DATA_TASK_USES,         /* where is X used: find_references, answer */
    DATA_TASK_EDIT,         /* add a comment above X's definition: edit_file, answer */
    DATA_TASK_KIND_COUNT
};

struct data_task {
    enum data_task_kind kind;
    const char *symbol;
    const char *path;  /* the defining file */
    unsigned line;     /* 1-based line of the definition's name */
    const char *line_text; /* that whole line, without the newline (DATA_TASK_EDIT) */
    const char *comment;   /* DATA_TASK_EDIT: the comment prefix for the file's language */
    uint64_t seed;     /* picks the phrasing */
    /* DATA_TASK_DEF_READ asked with its own phrasings ("Quote the line that defines X") and read over
     * line-1..line+1 only: a plain "where is X defined" then always answers right after find_symbol,
     * and the quoting answer copies from a short result (within the model's 128-token window). Off:
     * the first data set's recipe (where-phrasings, lines line-3..line+8). */
    bool quote;
};

struct data_transcript {
    struct agent_prompt prompt;  /* the whole transcript: text + literal spans */
    size_t ncomp;
    size_t comp_off[8], comp_len[8]; /* the model's completions in prompt.text */
    char *question;
    char *answer;                /* the final answer's content */
    size_t tool_calls;
};

void data_transcript_free(struct data_transcript *t);

/* The messages [system, user(first turn: layout + question)] for a question, as the daemon
 * builds them (conversation() in daemon/repos.c + the agent README's contract). */
cJSON *data_first_messages(const struct repo_layout *l, const char *question);

/* The question text for a task. */
char *data_task_question(const struct data_task *t);

/* Run a task. Returns 0 and fills *out, CTX_ENOTFOUND when the real tool output does not contain
 * the expected answer (the task is dropped), or another negative code. */
int data_transcript_run(struct agent_tools *tools, const struct repo_layout *l,
                        const struct data_task *task, struct data_transcript *out,
                        struct ctx_err *e);

/* Tokenize a transcript with its literal spans and mark the tokens of the completions.
 * *mask[i] = 1 when token i lies in a completion. CTX_EINTERNAL if a completion does not start
 * and end on token boundaries. */
int data_transcript_tokens(const struct inf_tokenizer *tok, const struct data_transcript *t,
                           int32_t **ids, uint8_t **mask, size_t *n, struct ctx_err *e);

#endif
