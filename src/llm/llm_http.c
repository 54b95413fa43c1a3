/* llm_http.c: one model API call over curl: keep-alive, timeouts, retries, SSE. */
#include "llm_http.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "ctxd/version.h"

#define TICK_EVERY_MS 500
#define SLEEP_SLICE_MS 100

struct llm_http {
    CURL *curl;
    unsigned rnd_state;
    char curl_err[CURL_ERROR_SIZE];

    /* The call in flight. */
    const llm_request *req;
    const llm_http_call *call;
    long long deadline;  /* monotonic ms */
    long long last_tick; /* monotonic ms */
    long idle_ms;        /* streaming: longest silence allowed, 0 none */

    /* This attempt. */
    int status;
    int mode_decided, sse_mode;
    char content_type[128];
    char retry_after[64];
    char retry_after_ms[64];
    int should_retry; /* x-should-retry: 1, 0, or -1 when absent */
    char *body;
    size_t body_len, body_cap;
    size_t received;
    long long last_byte;
    int too_large, idle_timeout, oom;
    llm_sse sse;

    /* Why this attempt failed (failed == 0: it did not). */
    int failed;
    llm_err f_err;
    int f_status;
    int f_retryable;
    char f_msg[CTXD_ERRSTR_LEN];

    /* The reply text, across attempts. */
    char *text;
    size_t text_len, text_cap;
    int delivered; /* some text reached on_delta: never retry after that */
};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append n bytes to a NUL-terminated growable buffer, up to max bytes. */
static int buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n, size_t max) {
    if (*len + n > max) return CTXD_ERR;
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n + 1) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return CTXD_ERR;
        *buf = nb;
        *cap = nc;
    }
    if (n) memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return CTXD_OK;
}

/* ---- Server-sent events ---- */

void llm_sse_init(llm_sse *p, llm_sse_event_fn fn, void *arg) {
    memset(p, 0, sizeof(*p));
    p->on_event = fn;
    p->arg = arg;
}

void llm_sse_reset(llm_sse *p) {
    p->line_len = p->data_len = 0;
    p->has_data = p->after_cr = p->bom_checked = 0;
    p->bom_seen = 0;
    p->event[0] = '\0';
}

void llm_sse_free(llm_sse *p) {
    if (!p) return;
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_cap = p->data_cap = 0;
    llm_sse_reset(p);
}

/* Dispatch the event gathered so far (a blank line was seen). */
static int sse_dispatch(llm_sse *p) {
    int rc = CTXD_OK;
    if (p->has_data) {
        if (p->data_len && p->data[p->data_len - 1] == '\n') p->data_len--;
        p->data[p->data_len] = '\0';
        rc = p->on_event(p->arg, p->event, p->data, p->data_len);
    }
    p->data_len = 0;
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
        if (buf_append(&p->data, &p->data_len, &p->data_cap, val, vlen, LLM_HTTP_MAX_BODY) ||
            buf_append(&p->data, &p->data_len, &p->data_cap, "\n", 1, LLM_HTTP_MAX_BODY))
            return CTXD_ERR;
        p->has_data = 1;
    } /* id, retry and unknown fields: nothing to do for us */
    return CTXD_OK;
}

int llm_sse_feed(llm_sse *p, const char *buf, size_t len) {
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    size_t i = 0;
    while (!p->bom_checked && i < len) {
        if ((unsigned char)buf[i] != bom[p->bom_seen]) {
            if (p->bom_seen && buf_append(&p->line, &p->line_len, &p->line_cap, (const char *)bom,
                                          p->bom_seen, LLM_HTTP_MAX_BODY))
                return CTXD_ERR;
            p->bom_checked = 1;
            break;
        }
        i++;
        if (++p->bom_seen == 3) p->bom_checked = 1;
    }
    for (; i < len; i++) {
        char c = buf[i];
        if (c == '\n' && p->after_cr) {
            p->after_cr = 0;
            continue;
        }
        p->after_cr = c == '\r';
        if (c == '\r' || c == '\n') {
            int rc = sse_line(p, p->line ? p->line : "", p->line_len);
            p->line_len = 0;
            if (rc) return CTXD_ERR;
            continue;
        }
        /* Copy the run of ordinary bytes at once. */
        size_t j = i;
        while (j < len && buf[j] != '\r' && buf[j] != '\n') j++;
        if (buf_append(&p->line, &p->line_len, &p->line_cap, buf + i, j - i, LLM_HTTP_MAX_BODY))
            return CTXD_ERR;
        i = j - 1;
    }
    return CTXD_OK;
}

/* ---- JSON helpers ---- */

json_object *llm_json_parse(const char *s, size_t len) {
    if (len > (size_t)0x7fffffff) return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok) return NULL;
    json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    if (o && json_tokener_get_parse_end(tok) < len) {
        /* Only trailing whitespace may follow the value. */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            if (!isspace((unsigned char)s[i])) {
                json_object_put(o);
                o = NULL;
                break;
            }
        }
    }
    json_tokener_free(tok);
    return o;
}

const char *llm_json_str(json_object *obj, const char *key) {
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v)) return NULL;
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

long llm_json_long(json_object *obj, const char *key) {
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v)) return -1;
    if (!json_object_is_type(v, json_type_int)) return -1;
    return (long)json_object_get_int64(v);
}

/* Cut a UTF-8 sequence left incomplete at the end of s (by a truncation). */
static void utf8_trim(char *s) {
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i == 0 || (unsigned char)s[i - 1] < 0xC0) return; /* ASCII or stray */
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    if (n - (i - 1) < need) s[i - 1] = '\0';
}

/* Copy s into out, control characters as spaces, runs of space collapsed. */
static void copy_text(char *out, size_t cap, const char *s, size_t len) {
    size_t w = 0;
    if (!cap) return;
    for (size_t i = 0; i < len && w + 1 < cap; i++) {
        char c = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
        if (c == ' ' && (w == 0 || out[w - 1] == ' ')) continue;
        out[w++] = c;
    }
    while (w && out[w - 1] == ' ') w--;
    out[w] = '\0';
    utf8_trim(out);
}

/* Copy text into out after removing secret from the whole of it, so a cut
 * can never leave part of the secret behind. */
static void copy_scrubbed(char *out, size_t cap, const char *s, size_t len, const char *secret) {
    if (!secret || !*secret) {
        copy_text(out, cap, s, len);
        return;
    }
    size_t room = len * 2 + 32; /* "[redacted]" may be longer than the key */
    char *tmp = malloc(room);
    if (!tmp) {
        if (cap) out[0] = '\0';
        return;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    llm_http_scrub(tmp, room, secret);
    copy_text(out, cap, tmp, strlen(tmp));
    free(tmp);
}

/* A type or code field: a string, or a number written out. */
static void copy_code(char *out, size_t cap, json_object *v, const char *secret) {
    if (!v || json_object_is_type(v, json_type_null)) return;
    const char *s = json_object_is_type(v, json_type_string)
                        ? json_object_get_string(v)
                        : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    if (s) copy_scrubbed(out, cap, s, strlen(s), secret);
}

void llm_http_error_info(const char *body, size_t len, const char *secret, char *type,
                         size_t typelen, char *msg, size_t msglen) {
    if (typelen) type[0] = '\0';
    if (msglen) msg[0] = '\0';
    if (!body || !len) return;
    json_object *o = llm_json_parse(body, len);
    if (!o || !json_object_is_type(o, json_type_object)) {
        if (!o) copy_scrubbed(msg, msglen, body, len, secret);
        json_object_put(o);
        return;
    }
    json_object *e = NULL, *v = NULL;
    const char *m = NULL;
    if (json_object_object_get_ex(o, "error", &e) && json_object_is_type(e, json_type_object)) {
        if (json_object_object_get_ex(e, "type", &v) && !json_object_is_type(v, json_type_null))
            copy_code(type, typelen, v, secret);
        else if (json_object_object_get_ex(e, "code", &v))
            copy_code(type, typelen, v, secret);
        m = llm_json_str(e, "message");
    } else if (e && json_object_is_type(e, json_type_string)) {
        m = json_object_get_string(e);
    } else if (json_object_object_get_ex(o, "detail", &v)) {
        m = json_object_is_type(v, json_type_string)
                ? json_object_get_string(v)
                : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    } else {
        m = llm_json_str(o, "message");
    }
    if (m) copy_scrubbed(msg, msglen, m, strlen(m), secret);
    json_object_put(o);
}

/* ---- Retry policy ---- */

int llm_http_should_retry(int status, int should_retry) {
    if (should_retry == 1) return 1;
    if (should_retry == 0) return 0;
    return status == 408 || status == 409 || status == 429 || status >= 500;
}

/* A header value as a number: the whole value, surrounding spaces allowed. */
static int header_number(const char *s, double *out) {
    if (!s || !*s) return 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v)) return 0;
    while (*end == ' ' || *end == '\t') end++;
    if (*end) return 0;
    *out = v;
    return 1;
}

long llm_http_header_ms(const char *retry_after_ms, const char *retry_after, long now) {
    double v;
    if (header_number(retry_after_ms, &v) && v > 0) return v > 1e9 ? 1000000000L : (long)ceil(v);
    if (header_number(retry_after, &v))
        return v <= 0 ? -1 : v > 1e6 ? 1000000000L : (long)ceil(v * 1000);
    if (retry_after && *retry_after) {
        time_t t = curl_getdate(retry_after, NULL);
        if (t != (time_t)-1 && (long)t > now)
            return (long)t - now > 1000000 ? 1000000000L : ((long)t - now) * 1000;
    }
    return -1;
}

long llm_http_retry_wait_ms(const char *retry_after_ms, const char *retry_after, long now,
                            int retry, double rnd, long cap_ms) {
    long ms = llm_http_header_ms(retry_after_ms, retry_after, now);
    if (ms > 0 && ms <= cap_ms) return ms;
    double base = LLM_HTTP_BACKOFF_BASE_MS;
    for (int i = 0; i < retry && base < LLM_HTTP_BACKOFF_MAX_MS; i++) base *= 2;
    if (base > LLM_HTTP_BACKOFF_MAX_MS) base = LLM_HTTP_BACKOFF_MAX_MS;
    long wait = (long)(base * (1.0 - rnd * 0.25));
    return wait < cap_ms ? wait : cap_ms;
}

llm_err llm_http_status_err(int status) {
    if (status == 401 || status == 403) return LLM_ERR_AUTH;
    if (status == 429) return LLM_ERR_RATE;
    if (status == 503 || status == 529) return LLM_ERR_OVERLOADED;
    if (status == 408) return LLM_ERR_TIMEOUT;
    if (status >= 500) return LLM_ERR_UPSTREAM;
    if (status >= 400) return LLM_ERR_BAD_REQUEST;
    return LLM_ERR_UPSTREAM;
}

void llm_copy_str(char *out, size_t cap, const char *s) {
    if (s) snprintf(out, cap, "%s", s);
}

const char *llm_http_secret(const llm_http *h) { return h && h->call ? h->call->secret : NULL; }

void llm_http_scrub(char *s, size_t cap, const char *secret) {
    static const char mark[] = "[redacted]";
    size_t sl = secret ? strlen(secret) : 0;
    if (!sl || !s) return;
    char *p = s;
    while ((p = strstr(p, secret)) != NULL) {
        size_t tail = strlen(p + sl);
        size_t ml = sizeof(mark) - 1;
        size_t room = cap - (size_t)(p - s) - 1; /* bytes from p to the end */
        if (ml > room) ml = room;
        if (ml + tail > room) tail = room - ml;
        memmove(p + ml, p + sl, tail);
        memcpy(p, mark, ml);
        p[ml + tail] = '\0';
        p += ml; /* the mark itself is never searched again */
    }
}

int llm_http_url(char *out, size_t cap, const char *base, const char *path) {
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    if (bl >= 3 && !strncmp(base + bl - 3, "/v1", 3) && !strncmp(path, "/v1/", 4)) path += 3;
    int n = snprintf(out, cap, "%.*s%s", (int)bl, base, path);
    return n < 0 || (size_t)n >= cap ? CTXD_ERR : CTXD_OK;
}

/* ---- The transfer ---- */

static int on_sse_event(void *arg, const char *event, const char *data, size_t len);

llm_http *llm_http_new(void) {
    llm_http *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        return NULL;
    }
    h->rnd_state = (unsigned)time(NULL) ^ (unsigned)(size_t)h;
    llm_sse_init(&h->sse, on_sse_event, h);
    return h;
}

void llm_http_free(llm_http *h) {
    if (!h) return;
    curl_easy_cleanup(h->curl);
    llm_sse_free(&h->sse);
    free(h->body);
    free(h->text);
    free(h);
}

void llm_http_fail(llm_http *h, llm_err err, int status, int retryable, const char *fmt, ...) {
    va_list ap;
    h->failed = 1;
    h->f_err = err;
    h->f_status = status;
    h->f_retryable = retryable;
    /* Format in full and scrub the key before cutting to f_msg's size. */
    char full[8192];
    va_start(ap, fmt);
    int n = vsnprintf(full, sizeof(full), fmt, ap);
    va_end(ap);
    copy_scrubbed(h->f_msg, sizeof(h->f_msg), full,
                  n < 0                      ? 0
                  : (size_t)n < sizeof(full) ? (size_t)n
                                             : sizeof(full) - 1,
                  h->call ? h->call->secret : NULL);
}

int llm_http_emit(llm_http *h, const char *text, size_t len) {
    if (!len) return CTXD_OK;
    if (buf_append(&h->text, &h->text_len, &h->text_cap, text, len, LLM_HTTP_MAX_BODY)) {
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 0,
                      "the upstream reply is larger than %u bytes", LLM_HTTP_MAX_BODY);
        return CTXD_ERR;
    }
    if (h->req && h->req->on_delta && h->call && h->call->stream) {
        h->delivered = 1;
        if (h->req->on_delta(h->req->on_delta_arg, text, len)) {
            llm_http_fail(h, LLM_ERR_ABORTED, h->status, 0, "the stream was aborted by the client");
            return CTXD_ERR;
        }
    }
    return CTXD_OK;
}

/* Call on_tick when it is due. Returns CTXD_ERR when it asks to abort. */
static int tick_maybe(llm_http *h, long long t) {
    if (!h->req || !h->req->on_tick || t - h->last_tick < TICK_EVERY_MS) return CTXD_OK;
    h->last_tick = t;
    if (h->req->on_tick(h->req->on_tick_arg) == CTXD_OK) return CTXD_OK;
    llm_http_fail(h, LLM_ERR_ABORTED, h->status, 0, "the call was aborted by its caller");
    return CTXD_ERR;
}

/* Sleep ms, ticking along. Returns CTXD_ERR when on_tick aborted. */
static int sleep_ticking(llm_http *h, long ms) {
    long long end = now_ms() + ms;
    for (;;) {
        long long t = now_ms();
        if (tick_maybe(h, t)) return CTXD_ERR;
        if (t >= end) return CTXD_OK;
        long long slice = end - t < SLEEP_SLICE_MS ? end - t : SLEEP_SLICE_MS;
        struct timespec ts = {(time_t)(slice / 1000), (long)(slice % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Copy a header's value into out when line is "name: value". */
static void header_take(const char *line, size_t len, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl)) return;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && isspace((unsigned char)end[-1])) end--;
    size_t n = (size_t)(end - v) < cap - 1 ? (size_t)(end - v) : cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg) {
    llm_http *h = arg;
    size_t len = size * n;
    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) { /* a new response begins */
        h->content_type[0] = h->retry_after[0] = h->retry_after_ms[0] = '\0';
        h->should_retry = -1;
        return len;
    }
    char sr[16] = "";
    header_take(buf, len, "content-type", h->content_type, sizeof(h->content_type));
    header_take(buf, len, "retry-after", h->retry_after, sizeof(h->retry_after));
    header_take(buf, len, "retry-after-ms", h->retry_after_ms, sizeof(h->retry_after_ms));
    header_take(buf, len, "x-should-retry", sr, sizeof(sr));
    if (!strcmp(sr, "true"))
        h->should_retry = 1;
    else if (!strcmp(sr, "false"))
        h->should_retry = 0;
    return len;
}

/* One SSE event: hand it to the provider. */
static int on_sse_event(void *arg, const char *event, const char *data, size_t len) {
    llm_http *h = arg;
    if (h->call->ops->on_event(h->call->arg, h, event, data, len) == CTXD_OK) return CTXD_OK;
    if (!h->failed)
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 0, "the upstream stream could not be read");
    return CTXD_ERR;
}

static size_t on_write(char *buf, size_t size, size_t n, void *arg) {
    llm_http *h = arg;
    size_t len = size * n;
    if (!h->mode_decided) {
        long st = 0;
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &st);
        h->status = (int)st;
        h->sse_mode = h->call->stream && st / 100 == 2 &&
                      !strncasecmp(h->content_type, "text/event-stream", 17);
        h->mode_decided = 1;
    }
    h->last_byte = now_ms();
    h->received += len;
    if (h->received > (h->sse_mode ? LLM_HTTP_MAX_STREAM : LLM_HTTP_MAX_BODY)) {
        h->too_large = 1;
        return 0;
    }
    if (h->sse_mode) return llm_sse_feed(&h->sse, buf, len) ? 0 : len;
    if (buf_append(&h->body, &h->body_len, &h->body_cap, buf, len, LLM_HTTP_MAX_BODY)) {
        h->oom = 1;
        return 0;
    }
    return len;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    llm_http *h = arg;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    long long t = now_ms();
    if (tick_maybe(h, t)) return 1;
    if (h->idle_ms > 0 && t - h->last_byte > h->idle_ms) {
        h->idle_timeout = 1;
        return 1;
    }
    return 0;
}

static void attempt_reset(llm_http *h) {
    h->status = 0;
    h->mode_decided = h->sse_mode = 0;
    h->content_type[0] = h->retry_after[0] = h->retry_after_ms[0] = '\0';
    h->should_retry = -1;
    h->body_len = h->received = 0;
    if (h->body) h->body[0] = '\0';
    h->too_large = h->idle_timeout = h->oom = 0;
    h->failed = 0;
    h->f_msg[0] = '\0';
    h->last_byte = now_ms();
    llm_sse_reset(&h->sse);
    /* Text from a failed attempt that never reached on_delta is dropped. */
    h->text_len = 0;
    if (h->text) h->text[0] = '\0';
}

/* Set up the easy handle for one attempt and run it. */
static CURLcode perform(llm_http *h, const ctxd_config *cfg, struct curl_slist *hdrs) {
    const llm_http_call *c = h->call;
    long long left = h->deadline - now_ms();
    long total = c->stream
                     ? (long)left
                     : (long)(left < cfg->upstream_timeout_ms ? left : cfg->upstream_timeout_ms);
    long connect =
        cfg->upstream_connect_timeout_ms < total ? cfg->upstream_connect_timeout_ms : total;
    h->idle_ms = c->stream ? cfg->upstream_timeout_ms : 0;
    h->curl_err[0] = '\0';

    CURL *k = h->curl;
    curl_easy_reset(k); /* keeps the connection cache: keep-alive survives */
    curl_easy_setopt(k, CURLOPT_URL, c->url);
    curl_easy_setopt(k, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k, CURLOPT_POST, 1L);
    curl_easy_setopt(k, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(k, CURLOPT_USERAGENT, "ctxd/" CTXD_VERSION);
    curl_easy_setopt(k, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT_MS, connect > 0 ? connect : 1L);
    curl_easy_setopt(k, CURLOPT_TIMEOUT_MS, total > 0 ? total : 1L);
    curl_easy_setopt(k, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(k, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(k, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(k, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(k, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(k, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(k, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(k, CURLOPT_NOPROGRESS, 0L);
    return curl_easy_perform(k);
}

static const char *status_prefix(llm_err err) {
    switch (err) {
    case LLM_ERR_AUTH: return "the upstream refused the API key";
    case LLM_ERR_RATE: return "the upstream is rate limiting";
    case LLM_ERR_OVERLOADED: return "the upstream is overloaded";
    case LLM_ERR_BAD_REQUEST: return "the upstream rejected the request";
    case LLM_ERR_TIMEOUT: return "the upstream timed out";
    default: return "the upstream failed";
    }
}

/* A non-2xx answer: record its error. */
static void fail_status(llm_http *h) {
    char type[64], msg[180];
    llm_http_error_info(h->body, h->body_len, h->call ? h->call->secret : NULL, type, sizeof(type),
                        msg, sizeof(msg));
    llm_err err = llm_http_status_err(h->status);
    llm_http_fail(h, err, h->status, llm_http_should_retry(h->status, h->should_retry),
                  "%s: HTTP %d%s%s%s%s", status_prefix(err), h->status, type[0] ? " " : "", type,
                  msg[0] ? ": " : "", msg);
}

/* A transfer that did not complete: say why. */
static void fail_transfer(llm_http *h, CURLcode rc) {
    const char *detail = h->curl_err[0] ? h->curl_err : curl_easy_strerror(rc);
    if (h->too_large || h->oom) {
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 0,
                      "the upstream answer is larger than %u bytes",
                      h->sse_mode ? LLM_HTTP_MAX_STREAM : LLM_HTTP_MAX_BODY);
    } else if (h->idle_timeout) {
        llm_http_fail(h, LLM_ERR_TIMEOUT, h->status, 1, "the upstream stream was silent for %ld ms",
                      h->idle_ms);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        if (now_ms() >= h->deadline - 5)
            llm_http_fail(h, LLM_ERR_TIMEOUT, h->status, 0,
                          "the upstream did not answer within the deadline");
        else
            llm_http_fail(h, LLM_ERR_TIMEOUT, h->status, 1,
                          "the upstream did not answer in time: %s", detail);
    } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
               rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_SSL_CONNECT_ERROR) {
        llm_http_fail(h, LLM_ERR_CONNECT, 0, 1, "cannot connect to the upstream: %s", detail);
    } else if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
        llm_http_fail(h, LLM_ERR_CONFIG, 0, 0, "the upstream URL is not usable: %s", detail);
    } else if (rc == CURLE_OUT_OF_MEMORY) {
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 0, "out of memory");
    } else {
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 1, "the connection to the upstream broke: %s",
                      detail);
    }
}

/* Judge one finished attempt; leaves h->failed set when it failed. */
static void judge(llm_http *h, CURLcode rc, llm_response *resp) {
    if (h->failed) return; /* the provider, on_delta or on_tick said why */
    if (!h->mode_decided) {
        long st = 0;
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &st);
        h->status = (int)st;
    }
    if (rc != CURLE_OK) {
        fail_transfer(h, rc);
        return;
    }
    if (h->status / 100 != 2) {
        fail_status(h);
        return;
    }
    const char *body = h->sse_mode ? NULL : h->body ? h->body : "";
    if (h->call->ops->finish(h->call->arg, h, body, h->sse_mode ? 0 : h->body_len, resp) &&
        !h->failed)
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 0, "the upstream answer could not be read");
}

/* Free a header list, wiping it first: it holds the API key. */
static void free_headers(struct curl_slist *list) {
    for (struct curl_slist *p = list; p; p = p->next)
        if (p->data) memset(p->data, 0, strlen(p->data));
    curl_slist_free_all(list);
}

static struct curl_slist *build_headers(const llm_http_call *call) {
    struct curl_slist *list = NULL, *t;
    for (size_t i = 0; call->headers && call->headers[i]; i++) {
        if (!(t = curl_slist_append(list, call->headers[i]))) goto oom;
        list = t;
    }
    /* No "Expect: 100-continue" round trip for larger bodies. */
    if (!(t = curl_slist_append(list, "Expect:"))) goto oom;
    return t;
oom:
    free_headers(list);
    return NULL;
}

/* Copy the final failure into resp. */
static void report_failure(llm_http *h, const llm_http_call *call, llm_response *resp) {
    if (resp->retries)
        llm_response_set_error(resp, h->f_err, h->f_status, "%s (after %d %s)", h->f_msg,
                               resp->retries, resp->retries == 1 ? "retry" : "retries");
    else
        llm_response_set_error(resp, h->f_err, h->f_status, "%s", h->f_msg);
    llm_http_scrub(resp->errstr, sizeof(resp->errstr), call->secret);
    utf8_trim(resp->errstr);
    if (h->f_status == 429 || h->f_status == 503 || h->f_status == 529)
        resp->retry_after_ms =
            llm_http_header_ms(h->retry_after_ms, h->retry_after, (long)time(NULL));
}

int llm_http_run(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                 const llm_http_call *call, llm_response *resp) {
    struct curl_slist *hdrs = build_headers(call);
    if (!hdrs) {
        llm_response_set_error(resp, LLM_ERR_UPSTREAM, 0, "out of memory");
        return CTXD_ERR;
    }
    h->req = req;
    h->call = call;
    h->delivered = 0;
    h->last_tick = now_ms();
    h->deadline = h->last_tick + cfg->upstream_deadline_ms;
    for (int attempt = 0;; attempt++) {
        attempt_reset(h);
        call->ops->begin(call->arg);
        CURLcode rc = perform(h, cfg, hdrs);
        judge(h, rc, resp);
        if (!h->failed) break;
        if (!h->f_retryable || h->delivered || attempt >= cfg->upstream_max_retries) break;
        double rnd = rand_r(&h->rnd_state) / ((double)RAND_MAX + 1.0);
        long wait = llm_http_retry_wait_ms(h->retry_after_ms, h->retry_after, (long)time(NULL),
                                           attempt, rnd, cfg->upstream_retry_cap_ms);
        if (now_ms() + wait >= h->deadline) break; /* no time left: keep this error */
        if (sleep_ticking(h, wait)) break;
        resp->retries = attempt + 1;
    }
    free_headers(hdrs);
    h->req = NULL;
    if (h->failed) {
        report_failure(h, call, resp);
        return CTXD_ERR;
    }
    resp->text = h->text ? h->text : strdup("");
    resp->text_len = h->text ? h->text_len : 0;
    h->text = NULL;
    h->text_len = h->text_cap = 0;
    if (!resp->text) {
        llm_response_set_error(resp, LLM_ERR_UPSTREAM, 0, "out of memory");
        return CTXD_ERR;
    }
    return CTXD_OK;
}
