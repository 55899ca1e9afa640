#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_MAX ((size_t)256 << 20)

cJSON *ctx_json_parse(const char *buf, size_t len, const char *what, struct ctx_err *e)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(buf, len, &end, false);
    if (!v) {
        size_t off = end && end >= buf ? (size_t)(end - buf) : 0;
        const char *ep = cJSON_GetErrorPtr();
        if (!end && ep && ep >= buf && ep <= buf + len)
            off = (size_t)(ep - buf);
        ctx_err_set(e, CTX_EFORMAT, "%s: invalid JSON near byte %zu", what, off);
        return NULL;
    }
    /* Anything after the value other than whitespace is an error, not silently ignored. */
    if (end) {
        size_t off = (size_t)(end - buf);
        while (off < len && (buf[off] == ' ' || buf[off] == '\t' || buf[off] == '\n' ||
                             buf[off] == '\r' || buf[off] == 0))
            off++;
        if (off < len) {
            cJSON_Delete(v);
            ctx_err_set(e, CTX_EFORMAT, "%s: unexpected data after the JSON value at byte %zu",
                        what, off);
            return NULL;
        }
    }
    return v;
}

int ctx_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, struct ctx_err *e)
{
    if (!max_bytes)
        max_bytes = DEFAULT_MAX;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ctx_err_errno(e, errno == ENOENT ? CTX_ENOTFOUND : CTX_EIO, errno, "opening %s", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int er = errno;
        fclose(f);
        return ctx_err_errno(e, CTX_EIO, er, "stat %s", path);
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(f);
        return ctx_err_set(e, CTX_EINVAL, "%s is a directory, not a file", path);
    }
    if ((size_t)st.st_size > max_bytes) {
        fclose(f);
        return ctx_err_set(e, CTX_ERANGE, "%s is %lld bytes, over the limit of %zu", path,
                           (long long)st.st_size, max_bytes);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory reading %s", path);
    }
    for (;;) {
        if (n + 1 >= cap) { /* the file grew, or is a pipe: read on, within the bound */
            if (cap > max_bytes) {
                free(buf);
                fclose(f);
                return ctx_err_set(e, CTX_ERANGE, "%s is over the limit of %zu bytes", path, max_bytes);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return ctx_err_set(e, CTX_ENOMEM, "out of memory reading %s", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                int er = errno;
                free(buf);
                fclose(f);
                return ctx_err_errno(e, CTX_EIO, er, "reading %s", path);
            }
            break;
        }
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    if (out_len)
        *out_len = n;
    return 0;
}

cJSON *ctx_json_read_file(const char *path, size_t max_bytes, struct ctx_err *e)
{
    char *buf;
    size_t n;
    if (ctx_read_file(path, max_bytes, &buf, &n, e) != 0)
        return NULL;
    cJSON *v = ctx_json_parse(buf, n, path, e);
    free(buf);
    return v;
}

static int field(const cJSON *obj, const char *name, bool required, const cJSON **out,
                 const char *ctx_name, struct ctx_err *e)
{
    if (!cJSON_IsObject(obj))
        return ctx_err_set(e, CTX_EINVAL, "%s must be a JSON object", ctx_name ? ctx_name : "value");
    *out = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!*out && required)
        return ctx_err_set(e, CTX_EINVAL, "%s.%s is missing", ctx_name ? ctx_name : "value", name);
    return 0;
}

int ctx_json_get_string(const cJSON *obj, const char *name, bool required, const char *def,
                        const char **out, const char *ctx_name, struct ctx_err *e)
{
    const cJSON *v;
    int rc = field(obj, name, required, &v, ctx_name, e);
    if (rc)
        return rc;
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsString(v))
        return ctx_err_set(e, CTX_EINVAL, "%s.%s must be a string", ctx_name ? ctx_name : "value", name);
    *out = v->valuestring;
    return 0;
}

int ctx_json_get_double(const cJSON *obj, const char *name, bool required, double def,
                        double *out, const char *ctx_name, struct ctx_err *e)
{
    const cJSON *v;
    int rc = field(obj, name, required, &v, ctx_name, e);
    if (rc)
        return rc;
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return ctx_err_set(e, CTX_EINVAL, "%s.%s must be a number", ctx_name ? ctx_name : "value", name);
    *out = v->valuedouble;
    return 0;
}

int ctx_json_get_int(const cJSON *obj, const char *name, bool required, int64_t def,
                     int64_t *out, const char *ctx_name, struct ctx_err *e)
{
    double d;
    int rc = ctx_json_get_double(obj, name, required, (double)def, &d, ctx_name, e);
    if (rc)
        return rc;
    if (d != floor(d) || d < -9007199254740992.0 || d > 9007199254740992.0)
        return ctx_err_set(e, CTX_EINVAL, "%s.%s must be an integer", ctx_name ? ctx_name : "value", name);
    *out = (int64_t)d;
    return 0;
}

int ctx_json_get_bool(const cJSON *obj, const char *name, bool required, bool def, bool *out,
                      const char *ctx_name, struct ctx_err *e)
{
    const cJSON *v;
    int rc = field(obj, name, required, &v, ctx_name, e);
    if (rc)
        return rc;
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return ctx_err_set(e, CTX_EINVAL, "%s.%s must be true or false", ctx_name ? ctx_name : "value", name);
    *out = cJSON_IsTrue(v);
    return 0;
}

char *ctx_json_print(const cJSON *v)
{
    return cJSON_PrintUnformatted(v);
}
