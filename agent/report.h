/* Output formats for review findings and suggest diffs (issue 9: editors, pre-commit and CI).
 *
 * Formats (names as accepted by `--format`):
 *   text     human text: "path:line[-end]: severity: message" (+ the suggested replacement indented)
 *   json     findings: the JSON array of review.h's shape; a diff: {"diff": text}
 *   diff     a unified diff: findings that carry a replacement become hunks (`git apply` ready,
 *            "a/" "b/" prefixes); a suggest diff is passed through as is
 *   github   the JSON body of GitHub's REST "create a review for a pull request":
 *            {"body", "event": "COMMENT", "comments": [{"path", "line", "start_line"?, "side":
 *            "RIGHT", "start_side"?, "body"}]}; replacements / diff hunks become ```suggestion blocks
 *   rdjsonl  reviewdog's rdjsonl: one Diagnostic JSON object per line (message, location{path,
 *            range}, severity, source{name}, suggestions[{range, text}])
 *   sarif    SARIF 2.1.0 log: one run, tool.driver {name "ctx", version, informationUri, rules},
 *            results {ruleId, level, message, locations[physicalLocation{artifactLocation{uri,
 *            uriBaseId "SRCROOT"}, region}], fixes[{description, artifactChanges[{artifactLocation,
 *            replacements[{deletedRegion, insertedContent}]}]}]}
 *
 * Positions: lines are 1-based; columns 1-based, in UTF-8 bytes for rdjsonl (reviewdog's unit) and
 * UTF-16 code units for SARIF (its default columnKind, stated in the run). A replacement always
 * covers whole lines line..end_line. Paths are made relative to the repository root with forward
 * slashes ("./" and "a/"-style prefixes of diffs removed, absolute paths inside the root made
 * relative); SARIF URIs are percent-encoded (RFC 3986) relative references.
 *
 * All outputs are malloc'd NUL-terminated text ending in a newline (except an empty diff / empty
 * rdjsonl, which are ""). Nothing is printed; errors fill `e`. */
#ifndef AGENT_REPORT_H
#define AGENT_REPORT_H

#include <stddef.h>

#include "err.h"
#include "review.h"

enum agent_report_format {
    AGENT_REPORT_TEXT = 0,
    AGENT_REPORT_JSON,
    AGENT_REPORT_DIFF,
    AGENT_REPORT_GITHUB,
    AGENT_REPORT_RDJSONL,
    AGENT_REPORT_SARIF,
};

/* "text", "json", "diff", "github", "rdjsonl", "sarif" -> the format (>= 0); anything else (or
 * NULL) -> CTX_EINVAL (negative). */
int agent_report_format_parse(const char *name);
const char *agent_report_format_name(enum agent_report_format fmt);
/* "text|json|diff|github|rdjsonl|sarif", for usage messages. */
const char *agent_report_format_list(void);

/* Review findings in `fmt`. `root` is the repository root: the diff and sarif formats read the
 * files there (the lines a replacement replaces, the columns of a region); a file that cannot be
 * read is an error for diff (CTX_ENOTFOUND / CTX_EIO naming it) and only loses the column detail
 * in sarif. root may be NULL for the other formats (and for sarif, which then omits the columns
 * and originalUriBaseIds).
 * Findings whose replacements overlap in the same file: the diff keeps the first (by line) and
 * leaves the others out (they stay findings in every other format). A finding whose lines are
 * past the end of its file is CTX_ERANGE for diff. `*out` malloc'd. */
int agent_report_findings(enum agent_report_format fmt, const struct agent_finding *findings, size_t n,
                          const char *root, char **out, struct ctx_err *e);

/* A suggest answer (a unified diff, as agent_tools_overlay_diff writes it) in `fmt`: text and
 * diff pass it through, json wraps it, github/rdjsonl/sarif turn each hunk into a suggestion on
 * the old lines it replaces (a pure insertion is anchored to the line before it, repeated in the
 * suggestion). CTX_EFORMAT (naming the diff line) for a diff that does not parse; "" (or an empty
 * log / review with no comments) for an empty diff. `*out` malloc'd. */
int agent_report_diff(enum agent_report_format fmt, const char *diff_text, char **out, struct ctx_err *e);

#endif
