/* llm_sse.c: server-sent events: an incremental line parser with capped buffers. */
#include <string.h>

#include "llm_http.h"

void llm_sse_init(llm_sse *p, llm_sse_event_fn fn, void *arg) {
    memset(p, 0, sizeof(*p)); /* a zeroed buf is an empty one */
    p->on_event = fn;
    p->arg = arg;
}

void llm_sse_reset(llm_sse *p) {
    llm_buf_clear(&p->line);
    llm_buf_clear(&p->data);
    p->has_data = p->after_cr = p->bom_checked = 0;
    p->bom_seen = 0;
    p->event[0] = '\0';
}

void llm_sse_free(llm_sse *p) {
    if (!p) return;
    buf_free(&p->line);
    buf_free(&p->data);
    llm_sse_reset(p);
}

/* Dispatch the event gathered so far (a blank line was seen). */
static int sse_dispatch(llm_sse *p) {
    int rc = CTXD_OK;
    buf *d = &p->data;
    if (p->has_data) {
        if (d->len && d->data[d->len - 1] == '\n') d->len--;
        d->data[d->len] = '\0';
        rc = p->on_event(p->arg, p->event, d->data, d->len);
    }
    d->len = 0;
    p->has_data = 0;
    p->event[0] = '\0';
    return rc;
}

/* Handle one complete line (without its terminator). */
static int sse_line(llm_sse *p, const char *line, size_t len) {
    if (len == 0) return sse_dispatch(p);
    if (line[0] == ':') return CTXD_OK; /* comment */
    const char *colon = memchr(line, ':', len);
    size_t nlen = colon ? (size_t)(colon - line) : len;
    const char *val = colon ? colon + 1 : line + len;
    size_t vlen = (size_t)(line + len - val);
    if (vlen && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (nlen == 5 && !memcmp(line, "event", 5)) {
        size_t n = vlen < sizeof(p->event) - 1 ? vlen : sizeof(p->event) - 1;
        memcpy(p->event, val, n);
        p->event[n] = '\0';
    } else if (nlen == 4 && !memcmp(line, "data", 4)) {
        if (llm_buf_put(&p->data, val, vlen, LLM_HTTP_MAX_BODY) ||
            llm_buf_put(&p->data, "\n", 1, LLM_HTTP_MAX_BODY))
            return CTXD_ERR;
        p->has_data = 1;
    } /* id, retry and unknown fields: nothing to do for us */
    return CTXD_OK;
}

int llm_sse_feed(llm_sse *p, const char *bytes, size_t len) {
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    size_t i = 0;
    while (!p->bom_checked && i < len) {
        if ((unsigned char)bytes[i] != bom[p->bom_seen]) {
            if (p->bom_seen &&
                llm_buf_put(&p->line, (const char *)bom, p->bom_seen, LLM_HTTP_MAX_BODY))
                return CTXD_ERR;
            p->bom_checked = 1;
            break;
        }
        i++;
        if (++p->bom_seen == 3) p->bom_checked = 1;
    }
    for (; i < len; i++) {
        char c = bytes[i];
        if (c == '\n' && p->after_cr) {
            p->after_cr = 0;
            continue;
        }
        p->after_cr = c == '\r';
        if (c == '\r' || c == '\n') {
            int rc = sse_line(p, p->line.data ? p->line.data : "", p->line.len);
            p->line.len = 0;
            if (rc) return CTXD_ERR;
            continue;
        }
        /* Copy the run of ordinary bytes at once. */
        size_t j = i;
        while (j < len && bytes[j] != '\r' && bytes[j] != '\n') j++;
        if (llm_buf_put(&p->line, bytes + i, j - i, LLM_HTTP_MAX_BODY)) return CTXD_ERR;
        i = j - 1;
    }
    return CTXD_OK;
}
