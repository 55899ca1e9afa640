/* store/sessions.c: conversations in SQLite, surviving a reopen; the schema migrates from v1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sessions.h"

static cJSON *msg(const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    return m;
}

static void sessions_round_trip(void **state)
{
    (void)state;
    char path[] = "/tmp/ctx-sessions-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
    struct ctx_err e = {0};
    struct store_db *db;
    /* a v1 database migrates */
    assert_int_equal(store_open_at(path, 1, &db, &e), 0);
    store_close(db);
    assert_int_equal(store_open(path, &db, &e), 0);
    int v;
    assert_int_equal(store_schema_version(db, &v, &e), 0);
    assert_int_equal(v, (int)store_migration_count);

    char a[STORE_SESSION_ID_LEN + 1], b[STORE_SESSION_ID_LEN + 1];
    assert_int_equal(store_session_create(db, "/src/p", "thinking", a, &e), 0);
    assert_int_equal(strlen(a), STORE_SESSION_ID_LEN);
    assert_int_equal(store_session_create(db, "/src/q", "chat", b, &e), 0);
    assert_string_not_equal(a, b);
    cJSON *m1 = msg("user", "Where is add defined?"), *m2 = msg("assistant", "In math.c.");
    cJSON_AddStringToObject(m2, "reasoning_content", "Looking.");
    assert_int_equal(store_session_append(db, a, m1, NULL, &e), 0);
    assert_int_equal(store_session_append(db, a, m2, "Looking.</think>In math.c.<｜end▁of▁sentence｜>", &e), 0);
    cJSON *m3 = msg("user", "And sub?");
    assert_int_equal(store_session_append(db, a, m3, NULL, &e), 0);
    assert_int_equal(store_session_append(db, "0000", m3, NULL, &e), CTX_ENOTFOUND);

    store_close(db);
    assert_int_equal(store_open(path, &db, &e), 0);
    cJSON *s;
    assert_int_equal(store_session_get(db, a, &s, &e), 0);
    assert_string_equal(cJSON_GetObjectItem(s, "title")->valuestring, "Where is add defined?");
    assert_string_equal(cJSON_GetObjectItem(s, "mode")->valuestring, "thinking");
    cJSON *ms = cJSON_GetObjectItem(s, "messages");
    assert_int_equal(cJSON_GetArraySize(ms), 3);
    char *t1 = cJSON_PrintUnformatted(cJSON_GetArrayItem(ms, 1)), *t2 = cJSON_PrintUnformatted(m2);
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "raw"), 1)->valuestring,
                        "Looking.</think>In math.c.<｜end▁of▁sentence｜>");
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "raw"), 0)));
    cJSON_Delete(s);

    cJSON *l;
    assert_int_equal(store_session_list(db, "/src/p", &l, &e), 0);
    assert_int_equal(cJSON_GetArraySize(l), 1);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(l, 0), "n_messages")->valueint, 3);
    cJSON_Delete(l);
    assert_int_equal(store_session_list(db, NULL, &l, &e), 0);
    assert_int_equal(cJSON_GetArraySize(l), 2);
    cJSON_Delete(l);

    assert_int_equal(store_session_truncate(db, a, 2, &e), 0);
    assert_int_equal(store_session_get(db, a, &s, &e), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "messages")), 2);
    cJSON_Delete(s);
    assert_int_equal(store_session_delete(db, a, &e), 0);
    assert_int_equal(store_session_get(db, a, &s, &e), CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, a));
    assert_int_equal(store_session_delete(db, a, &e), CTX_ENOTFOUND);
    store_close(db);
    cJSON_Delete(m1);
    cJSON_Delete(m2);
    cJSON_Delete(m3);
    unlink(path);
    char wal[64];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sessions_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
