/* Helpers shared by ctx subcommands. */
#ifndef CTX_CLI_UTIL_H
#define CTX_CLI_UTIL_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "client.h"
#include "commands.h"

/* Connect to ctxd, starting it when `autostart` and none runs. Prints the error and returns NULL. */
struct ctxd_client *ctx_cli_connect(const struct ctx_cli *cli, const char *cmd, bool autostart);

/* Scan a subcommand's arguments for --json/--help (removing nothing). */
bool ctx_cli_has_flag(int argc, char **argv, const char *flag);

/* Read all of stdin into a malloc'd, NUL-terminated buffer (bounded at 1 GiB); -1 on error. */
int ctx_cli_read_stdin(char **out, size_t *len);

/* A numeric option's value: the whole text must be a number within [lo, hi]; otherwise prints
 * "ctx CMD: FLAG needs ..." naming the text and returns false (the command exits 2). */
bool ctx_cli_long(const char *cmd, const char *flag, const char *text, long lo, long hi, long *out);
bool ctx_cli_double(const char *cmd, const char *flag, const char *text, double lo, double hi, double *out);

/* Print a JSON value as one line on stdout. */
void ctx_cli_print_json(const cJSON *v);

#endif
