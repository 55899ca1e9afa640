/* A git repository as data: inventory (libgit2), symbols (tree-sitter), ranking (personalised
 * PageRank over the definition/reference graph) and the prompt layout of DESIGN.md §4.
 *
 * Nothing here knows about the model: token counts come in through a callback
 * (struct repo_layout_options.count_tokens). Paths are repository-relative, '/'-separated, and kept
 * byte-for-byte as git stores them (UTF-8 in practice); every list is sorted by strcmp order so that
 * the same repository state always gives the same bytes. */
#ifndef REPO_REPO_H
#define REPO_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct ctx_pool;

/* ---- vocabulary ---------------------------------------------------------------------------- */

enum repo_status {
    REPO_ST_UNMODIFIED = 0, /* same in HEAD, index and working tree */
    REPO_ST_MODIFIED,       /* changed in the index or the working tree */
    REPO_ST_ADDED,          /* new in the index, not in HEAD */
    REPO_ST_DELETED,        /* in HEAD, gone from the index or the working tree */
    REPO_ST_UNTRACKED,      /* only in the working tree, not ignored */
    REPO_ST_RENAMED,        /* old_path holds the name in HEAD */
    REPO_ST_TYPECHANGE,     /* e.g. a file became a symlink */
    REPO_ST_CONFLICTED,     /* unmerged entries in the index */
};

/* Why a file's text is not part of the layout. Every skip is recorded, never silent. */
enum repo_skip {
    REPO_SKIP_NONE = 0,
    REPO_SKIP_DELETED,     /* not in the working tree */
    REPO_SKIP_BINARY,      /* NUL byte in the first 8000 bytes, or the `binary` / `-diff` attribute */
    REPO_SKIP_GENERATED,   /* `linguist-generated` attribute, a generated-file marker, lock files */
    REPO_SKIP_VENDORED,    /* `linguist-vendored` attribute, or a vendor/node_modules/third_party dir */
    REPO_SKIP_TOO_LARGE,   /* over repo_options.max_file_size */
    REPO_SKIP_CTXIGNORE,   /* matched by a pattern in .ctxignore */
    REPO_SKIP_SUBMODULE,   /* a submodule: listed, never entered */
    REPO_SKIP_SYMLINK,     /* a symbolic link (its target is listed in skip_detail) */
    REPO_SKIP_UNREADABLE,  /* the file could not be read (skip_detail says why) */
};

enum repo_lang {
    REPO_LANG_NONE = 0, /* text without a grammar: fallback identifier scan */
    REPO_LANG_C,
    REPO_LANG_CPP,
    REPO_LANG_PYTHON,
    REPO_LANG_JAVASCRIPT,
    REPO_LANG_TYPESCRIPT,
    REPO_LANG_TSX,
    REPO_LANG_GO,
    REPO_LANG_RUST,
    REPO_LANG_JAVA,
    REPO_LANG_BASH,
    REPO_LANG_COUNT
};

enum repo_sym_kind {
    REPO_SYM_FUNCTION = 0,
    REPO_SYM_METHOD,
    REPO_SYM_CLASS,
    REPO_SYM_INTERFACE,
    REPO_SYM_TYPE,
    REPO_SYM_MODULE,
    REPO_SYM_MACRO,
    REPO_SYM_CONSTANT,
    REPO_SYM_VARIABLE,
    REPO_SYM_CALL,
    REPO_SYM_IMPLEMENTATION,
    REPO_SYM_IMPORT,
    REPO_SYM_FIELD,
    REPO_SYM_IDENTIFIER,
    REPO_SYM_OTHER,
    REPO_SYM_KIND_COUNT
};

const char *repo_status_name(enum repo_status s);
const char *repo_skip_name(enum repo_skip s);
const char *repo_lang_name(enum repo_lang l);
const char *repo_sym_kind_name(enum repo_sym_kind k);

/* Language from the path (extension, well-known names) and, failing that, a shebang line. */
enum repo_lang repo_lang_detect(const char *path, const char *text, size_t len);

/* ---- symbols ------------------------------------------------------------------------------- */

/* One definition or reference. The name is the byte span [name_off, name_off + name_len) of the
 * file's text; lines are 0-based, columns are byte offsets within the line. */
struct repo_symbol {
    uint32_t name_off, name_len;
    uint32_t line, col, end_line, end_col; /* the name */
    uint32_t node_line, node_end_line;     /* the whole definition (or reference) node */
    uint8_t is_def;
    uint8_t kind; /* enum repo_sym_kind */
    float rank;   /* definitions: share of the file's rank (repo_rank); 0 for references */
};

/* Compiled tags queries for every language (each compiled on first use, under a lock), and one
 * parser per thread: one symbolizer serves a pool, thread `tid` using slot tid. Keep one for the
 * life of a daemon (repo_options.symbolizer) so that queries compile once. */
struct repo_symbolizer;

int repo_symbolizer_new(int nthreads, struct repo_symbolizer **out, struct ctx_err *e);
void repo_symbolizer_free(struct repo_symbolizer *z);
int repo_symbolizer_threads(const struct repo_symbolizer *z);

/* Definitions and references of `text` in language `lang`, sorted by name offset, one tag per name
 * span. Syntax errors never fail: the tree is error-recovered and *syntax_errors is set. Languages
 * without a grammar (and files whose query yields no references) get a lexical identifier scan.
 * *out is malloc'd (NULL when *n == 0). */
int repo_symbols_extract(struct repo_symbolizer *z, int tid, enum repo_lang lang, const char *text,
                         size_t len, struct repo_symbol **out, size_t *n, bool *syntax_errors,
                         struct ctx_err *e);

/* ---- .ctxignore ---------------------------------------------------------------------------- */

/* gitignore syntax: blank lines and '#' comments, '!' negation, trailing '/' for directories only,
 * a leading or inner '/' anchors to the root, '*', '?', '[...]', and '**' across directories. The
 * last matching pattern wins. */
struct repo_ignore;

int repo_ignore_parse(const char *text, size_t len, struct repo_ignore **out, struct ctx_err *e);
void repo_ignore_free(struct repo_ignore *ig);
size_t repo_ignore_count(const struct repo_ignore *ig);
/* Whether `path` (relative, '/'-separated) is ignored; a path under an ignored directory is too. */
bool repo_ignore_match(const struct repo_ignore *ig, const char *path, bool is_dir);

/* ---- churn --------------------------------------------------------------------------------- */

/* Per-path history: how many commits (first-parent walk from HEAD, at most
 * repo_options.max_history) touched the path, and the commit time of the last one. Kept between
 * snapshots so that a new HEAD only walks the commits since the cached one; persisted by the
 * caller (store/ has the tables) through repo_churn_set / repo_churn_foreach. */
struct repo_churn;

struct repo_churn *repo_churn_new(void);
void repo_churn_free(struct repo_churn *c);
/* The commit the counts are up to date with ("" when empty), and how many commits they cover. */
const char *repo_churn_head(const struct repo_churn *c);
uint32_t repo_churn_walked(const struct repo_churn *c);
int repo_churn_set_head(struct repo_churn *c, const char *head_hex, uint32_t walked, bool truncated);
int repo_churn_set(struct repo_churn *c, const char *path, uint32_t commits, int64_t last_change);
bool repo_churn_get(const struct repo_churn *c, const char *path, uint32_t *commits, int64_t *last_change);
/* Whether the walk stopped early (shallow boundary or the max_history limit). */
bool repo_churn_truncated(const struct repo_churn *c);
void repo_churn_foreach(const struct repo_churn *c,
                        void (*fn)(void *ud, const char *path, uint32_t commits, int64_t last_change),
                        void *ud);

/* ---- inventory ----------------------------------------------------------------------------- */

struct repo_options {
    uint64_t max_file_size;     /* bytes; larger files are skipped (default 1 MiB) */
    uint32_t max_history;       /* commits walked for churn (default 5000) */
    bool skip_generated;        /* default true */
    bool skip_vendored;         /* default true */
    bool allow_foreign_owner;   /* open repositories owned by another user (default false) */
    struct ctx_pool *pool;      /* reading and parsing run on it; NULL: the calling thread */
    struct repo_symbolizer *symbolizer; /* borrowed, with a slot per pool thread; NULL: own one */
};

void repo_options_default(struct repo_options *o);

struct repo_file {
    char *path;
    char *old_path;             /* renames: the path in HEAD; else NULL */
    enum repo_status status;
    enum repo_skip skip;
    char *skip_detail;          /* e.g. "2.1 MiB > 1.0 MiB", "attribute linguist-generated" */
    enum repo_lang lang;
    char blob_id[41];           /* git blob id of the text used (working tree), hex */
    uint64_t size;
    uint64_t hash;              /* 64-bit FNV-1a of the text */
    uint32_t churn_commits;
    int64_t last_change;        /* commit time (Unix seconds) of the last commit touching it; 0 */
    bool dirty;                 /* differs from HEAD (index or working tree) */
    char *text;                 /* valid UTF-8, NUL-terminated; NULL when skipped */
    bool not_utf8;              /* the file was not UTF-8: invalid bytes became U+FFFD in text */
    size_t len;
    struct repo_symbol *syms;
    size_t nsyms, ndefs;
    bool syntax_errors;
    double rank;                /* repo_rank; sums to 1 over the files */
};

struct repo_snapshot {
    char *workdir;              /* absolute, ends with '/' */
    char *name;                 /* last component of workdir */
    char head[41];              /* "" for an unborn branch */
    char *branch;               /* short name; NULL when detached or unborn */
    bool detached, unborn, shallow;
    bool churn_truncated;       /* history walk stopped at a shallow boundary or max_history */
    struct repo_file *files;    /* sorted by path */
    size_t nfiles;
    struct repo_options opts;
    struct repo_symbolizer *symbolizer; /* opts.symbolizer, or owned when that was NULL */
    struct repo_priv *priv;             /* libgit2 handles and ignore rules; internal */
    bool ranked;                        /* repo_rank ran since the last inventory change */
};

/* Inventory of the repository containing `path` (HEAD tree, index, working tree, status, ignore
 * rules, skips), the text of every kept file, churn (using and updating `churn` when not NULL) and
 * symbols. Errors name the repository; an unborn branch, a detached HEAD and a shallow clone work.
 * A repository owned by another user fails with CTX_EDENIED unless allow_foreign_owner. */
/* The work tree containing path (a file or a folder): the nearest folder, going up from its real
 * path, that has a .git entry. 0 with out (cap bytes) set, or CTX_ENOTFOUND naming the path. */
int repo_work_tree(const char *path, char *out, size_t cap, struct ctx_err *e);

int repo_snapshot_open(const char *path, const struct repo_options *o, struct repo_churn *churn,
                       struct repo_snapshot **out, struct ctx_err *e);
void repo_snapshot_free(struct repo_snapshot *s);
struct repo_file *repo_snapshot_find(const struct repo_snapshot *s, const char *path);

/* Re-read the given paths from the working tree (status, skips, text, symbols) after an edit the
 * caller knows about (file watcher, editor save). New paths are inserted; paths that no longer
 * exist become REPO_SKIP_DELETED, or are dropped if they were untracked. Churn is not recomputed. */
int repo_snapshot_refresh(struct repo_snapshot *s, const char *const *paths, size_t n,
                          struct ctx_err *e);

/* ---- ranking ------------------------------------------------------------------------------- */

struct repo_focus {
    const char *const *idents; /* identifiers mentioned in the request */
    size_t nidents;
    const char *const *paths;  /* files mentioned or open in the editor */
    size_t npaths;
};

/* Personalised PageRank over files (edge: referencing file -> defining file, per identifier),
 * then each file's rank pushed down to its definitions. focus may be NULL (global ranking, what
 * the layout's prefix uses, so that it does not change per request). Deterministic. */
int repo_rank(struct repo_snapshot *s, const struct repo_focus *focus, struct ctx_err *e);

/* ---- layout -------------------------------------------------------------------------------- */

enum repo_seg_kind { REPO_SEG_PREAMBLE = 0, REPO_SEG_MAP, REPO_SEG_FILE, REPO_SEG_OUTLINE, REPO_SEG_REPORT };

enum repo_decision {
    REPO_DEC_FULL = 0, /* whole text */
    REPO_DEC_OUTLINE,  /* signatures only: over budget and ranked low */
    REPO_DEC_OMITTED,  /* not even an outline fits */
    REPO_DEC_SKIPPED,  /* skipped by the inventory (repo_file.skip says why) */
};

const char *repo_seg_kind_name(enum repo_seg_kind k);
const char *repo_decision_name(enum repo_decision d);

struct repo_layout_options {
    size_t budget;     /* total tokens (default 500000; at most REPO_BUDGET_MAX) */
    size_t map_budget; /* tokens for the map segment; 0: budget/32, clamped to [256, 16384] */
    /* Token count of text[0, len); returns 0 or a negative CTX_E* code. Called from pool threads
     * when count_thread_safe, else from the calling thread only. */
    int (*count_tokens)(void *ud, const char *text, size_t len, size_t *n);
    void *count_ud;
    bool count_thread_safe;
    struct ctx_pool *pool;
};

#define REPO_BUDGET_DEFAULT 500000u
#define REPO_BUDGET_MAX 1048576u

void repo_layout_options_default(struct repo_layout_options *o);

/* Every segment ends with '\n' and the next begins with a letter, so that tokenizing segments one
 * by one gives the same tokens as tokenizing their concatenation. */
struct repo_segment {
    enum repo_seg_kind kind;
    char *path;    /* file and outline segments */
    char *text;
    size_t len;
    size_t tokens;
    uint64_t hash; /* FNV-1a of text */
};

struct repo_report_entry {
    char *path;
    enum repo_decision decision;
    const char *reason;   /* static text: "in budget", "over budget, ranked low", a skip name */
    char *detail;         /* skip detail, or NULL */
    size_t tokens_full;   /* tokens of the full segment (0 when not counted) */
    size_t tokens_used;   /* tokens in the layout */
    double rank;
    size_t segment;       /* index of its segment, or SIZE_MAX */
};

struct repo_layout {
    struct repo_segment *segs;
    size_t nsegs;
    size_t total_tokens;
    size_t budget;
    struct repo_report_entry *report; /* one per repository file, sorted by path */
    size_t nreport;
    size_t n_full, n_outline, n_omitted, n_skipped;
    bool over_budget;                 /* only after repo_layout_update: rebuild to fix */
};

/* Segments: preamble, map, files stable -> volatile (increasing churn; working-tree changes last),
 * report of what is not shown in full. Over budget, the lowest-ranked files become outlines and,
 * if needed, are omitted. Uses the snapshot's last ranking (repo_rank, with or without focus), or
 * ranks it with repo_rank(s, NULL) if it has not been ranked since it changed. */
int repo_layout_build(struct repo_snapshot *s, const struct repo_layout_options *o,
                      struct repo_layout **out, struct ctx_err *e);

/* After repo_snapshot_refresh(s, changed, n): re-render and recount only those files' segments,
 * keeping the order, map and decisions of the other files (so the prefix before the first edited
 * file keeps its cached state). New files go after the last file segment. *first_changed is the
 * index of the first segment whose text differs from before (nsegs if none). */
int repo_layout_update(struct repo_layout *l, struct repo_snapshot *s,
                       const struct repo_layout_options *o, const char *const *changed, size_t n,
                       size_t *first_changed, struct ctx_err *e);

void repo_layout_free(struct repo_layout *l);

/* Map text for a focus (the volatile tail of a turn): ranked definitions rendered within
 * `budget` tokens. *out is malloc'd. Re-ranks the snapshot with the focus. */
int repo_map_render(struct repo_snapshot *s, const struct repo_focus *focus,
                    const struct repo_layout_options *o, size_t budget, char **out, size_t *len,
                    size_t *tokens, struct ctx_err *e);

/* 64-bit FNV-1a, the hash used for file text and segments. */
uint64_t repo_hash64(const void *data, size_t len);

#endif
