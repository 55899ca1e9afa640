/* libFuzzer target: the remote backend's response path without the network — SSE framing (fed in
 * pieces whose size the first input byte picks, with a small event limit so it is reached), the
 * chat.completion.chunk assembler behind it, the final message, and error-body reading. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "openai.h"
#include "sse.h"

struct fuzz_ctx {
    struct agent_openai_stream *stream;
    size_t events;
};

static int on_event(void *ud, const struct agent_openai_event *ev, struct ctx_err *e)
{
    struct fuzz_ctx *f = ud;
    (void)e;
    /* touch what a consumer reads, so that sanitizers see bad pointers */
    if (ev->text && ev->len && ev->text[ev->len - 1] == '\x7f')
        f->events += 2;
    f->events++;
    return 0;
}

static int on_sse(void *ud, const struct agent_sse_event *ev, struct ctx_err *e)
{
    struct fuzz_ctx *f = ud;
    if (ev->done) {
        agent_openai_stream_done(f->stream);
        return 0;
    }
    return agent_openai_stream_data(f->stream, ev->data, ev->data_len, ev->offset, e);
}

int agent_fuzz_sse_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t piece = data[0] % 17; /* 0: everything at once */
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct fuzz_ctx f = {0};
    f.stream = agent_openai_stream_new(on_event, &f, 0);
    if (!f.stream)
        return 0;
    struct agent_sse p;
    agent_sse_init(&p, 4096);
    struct ctx_err e = {0};
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0;) {
        size_t take = piece ? (n - at < piece ? n - at : piece) : n;
        rc = agent_sse_feed(&p, s + at, take, on_sse, &f, &e);
        at += take;
    }
    if (rc == 0 && !agent_openai_stream_saw_done(f.stream))
        rc = agent_sse_finish(&p, &e);
    if (rc == 0)
        rc = agent_openai_stream_end(f.stream, &e);
    cJSON *m = agent_openai_stream_message(f.stream);
    cJSON_Delete(m);
    char msg[256];
    agent_openai_error_text(s, n, msg, sizeof msg);
    agent_sse_free(&p);
    agent_openai_stream_free(f.stream);
    return rc;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agent_fuzz_sse_one(data, size);
    return 0;
}
#endif
