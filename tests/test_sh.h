/* Shell steps of the tests (git init, commits, fixture files): printf-style, and a command that
 * fails fails the test. Included after <cmocka.h> by any test program that needs it. */
#ifndef TESTS_TEST_SH_H
#define TESTS_TEST_SH_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static inline void test_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd)
        fail_msg("shell command too long (%d bytes): %.200s...", n, cmd);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

#endif
