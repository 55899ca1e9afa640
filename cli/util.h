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

/* Print a JSON value as one line on stdout. */
void ctx_cli_print_json(const cJSON *v);

#endif
