/* llm_http.c: one model API call over curl: keep-alive, timeouts, retries, streaming. */
#include "llm_http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "ctxd/util.h"
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
    int64_t deadline;  /* monotonic ms */
    int64_t last_tick; /* monotonic ms */
    long idle_ms;      /* streaming: longest silence allowed, 0 none */

    /* This attempt. */
    int status;
    int mode_decided, sse_mode;
    char content_type[128];
    char retry_after[64];
    char retry_after_ms[64];
    int should_retry; /* x-should-retry: 1, 0, or -1 when absent */
    buf body;
    size_t received;
    int64_t last_byte;
    int too_large, idle_timeout, oom;
    llm_sse sse;

    /* Why this attempt failed (failed == 0: it did not). */
    int failed;
    llm_err f_err;
    int f_status;
    int f_retryable;
    char f_msg[CTXD_ERRSTR_LEN];

    /* The reply text, across attempts. */
    buf text;
    int delivered; /* some text reached on_delta: never retry after that */
};

const char *llm_http_secret(const llm_http *h) { return h && h->call ? h->call->secret : NULL; }

/* The endpoint URL: base with path appended, skipping a duplicated "/v1"
 * when base already ends with it. Returns CTXD_ERR when it does not fit. */
static int llm_http_url(char *out, size_t cap, const char *base, const char *path) {
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    if (bl >= 3 && !strncmp(base + bl - 3, "/v1", 3) && !strncmp(path, "/v1/", 4)) path += 3;
    int n = snprintf(out, cap, "%.*s%s", (int)bl, base, path);
    return n < 0 || (size_t)n >= cap ? CTXD_ERR : CTXD_OK;
}

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
    buf_free(&h->body);
    buf_free(&h->text);
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
    llm_http_copy_scrubbed(h->f_msg, sizeof(h->f_msg), full,
                           n < 0                      ? 0
                           : (size_t)n < sizeof(full) ? (size_t)n
                                                      : sizeof(full) - 1,
                           llm_http_secret(h));
}

json_object *llm_http_event_json(llm_http *h, const char *data, size_t len, const char *what) {
    json_object *o = llm_json_parse(data, len);
    if (o && json_object_is_type(o, json_type_object)) return o;
    json_object_put(o);
    llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0, "the upstream sent a stream %s that is not JSON",
                  what);
    return NULL;
}

/* Append reply text and pass it to req->on_delta when streaming. */
static int emit(llm_http *h, const char *text, size_t len) {
    if (!len) return CTXD_OK;
    if (llm_buf_put(&h->text, text, len, LLM_HTTP_MAX_BODY)) {
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

int llm_http_emit_block(llm_http *h, json_object *block) {
    if (!h->req || !h->req->on_block || !h->call || !h->call->stream) return CTXD_OK;
    const char *s = json_object_to_json_string_ext(block, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!s) {
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 0, "out of memory passing a block on");
        return CTXD_ERR;
    }
    h->delivered = 1;
    if (h->req->on_block(h->req->on_delta_arg, s, strlen(s))) {
        llm_http_fail(h, LLM_ERR_ABORTED, h->status, 0, "the stream was aborted by the client");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int llm_http_emit_str(llm_http *h, json_object *obj, const char *key) {
    json_object *v = NULL;
    if (!obj || !json_object_object_get_ex(obj, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return CTXD_OK;
    return emit(h, json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

/* Call on_tick when it is due. Returns CTXD_ERR when it asks to abort. */
static int tick_maybe(llm_http *h, int64_t t) {
    if (!h->req || !h->req->on_tick || t - h->last_tick < TICK_EVERY_MS) return CTXD_OK;
    h->last_tick = t;
    if (h->req->on_tick(h->req->on_tick_arg) == CTXD_OK) return CTXD_OK;
    llm_http_fail(h, LLM_ERR_ABORTED, h->status, 0, "the call was aborted by its caller");
    return CTXD_ERR;
}

/* Sleep ms, ticking along. Returns CTXD_ERR when on_tick aborted. */
static int sleep_ticking(llm_http *h, long ms) {
    int64_t end = util_mono_ms() + ms;
    for (;;) {
        int64_t t = util_mono_ms();
        if (tick_maybe(h, t)) return CTXD_ERR;
        if (t >= end) return CTXD_OK;
        util_sleep_ms((int)(end - t < SLEEP_SLICE_MS ? end - t : SLEEP_SLICE_MS));
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

static size_t on_header(char *data, size_t size, size_t n, void *arg) {
    llm_http *h = arg;
    size_t len = size * n;
    if (len >= 5 && !strncmp(data, "HTTP/", 5)) { /* a new response begins */
        h->content_type[0] = h->retry_after[0] = h->retry_after_ms[0] = '\0';
        h->should_retry = -1;
        return len;
    }
    char sr[16] = "";
    header_take(data, len, "content-type", h->content_type, sizeof(h->content_type));
    header_take(data, len, "retry-after", h->retry_after, sizeof(h->retry_after));
    header_take(data, len, "retry-after-ms", h->retry_after_ms, sizeof(h->retry_after_ms));
    header_take(data, len, "x-should-retry", sr, sizeof(sr));
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

/* The status of the answer curl is receiving (0 before one came). */
static void take_status(llm_http *h) {
    long st = 0;
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &st);
    h->status = (int)st;
}

static size_t on_write(char *data, size_t size, size_t n, void *arg) {
    llm_http *h = arg;
    size_t len = size * n;
    if (!h->mode_decided) {
        take_status(h);
        h->sse_mode = h->call->stream && h->status / 100 == 2 &&
                      !strncasecmp(h->content_type, "text/event-stream", 17);
        h->mode_decided = 1;
    }
    h->last_byte = util_mono_ms();
    h->received += len;
    if (h->received > (h->sse_mode ? LLM_HTTP_MAX_STREAM : LLM_HTTP_MAX_BODY)) {
        h->too_large = 1;
        return 0;
    }
    if (h->sse_mode) return llm_sse_feed(&h->sse, data, len) ? 0 : len;
    if (llm_buf_put(&h->body, data, len, LLM_HTTP_MAX_BODY)) {
        h->oom = 1;
        return 0;
    }
    return len;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    llm_http *h = arg;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    int64_t t = util_mono_ms();
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
    h->received = 0;
    llm_buf_clear(&h->body);
    h->too_large = h->idle_timeout = h->oom = 0;
    h->failed = 0;
    h->f_msg[0] = '\0';
    h->last_byte = util_mono_ms();
    llm_sse_reset(&h->sse);
    /* Text from a failed attempt that never reached on_delta is dropped. */
    llm_buf_clear(&h->text);
}

/* Set up the easy handle for one attempt and run it. */
static CURLcode perform(llm_http *h, const ctxd_config *cfg, struct curl_slist *hdrs) {
    const llm_http_call *c = h->call;
    int64_t left = h->deadline - util_mono_ms();
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
    llm_http_error_info(h->body.data, h->body.len, llm_http_secret(h), type, sizeof(type), msg,
                        sizeof(msg));
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
        if (util_mono_ms() >= h->deadline - 5)
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
    if (!h->mode_decided) take_status(h);
    if (rc != CURLE_OK) {
        fail_transfer(h, rc);
        return;
    }
    if (h->status / 100 != 2) {
        fail_status(h);
        return;
    }
    const char *body = h->sse_mode ? NULL : h->body.data ? h->body.data : "";
    if (h->call->ops->finish(h->call->arg, h, body, h->sse_mode ? 0 : h->body.len, resp) &&
        !h->failed)
        llm_http_fail(h, LLM_ERR_UPSTREAM, h->status, 0, "the upstream answer could not be read");
}

/* Free a header list, wiping it first: it holds the API key. */
static void free_headers(struct curl_slist *list) {
    for (struct curl_slist *p = list; p; p = p->next)
        if (p->data) memset(p->data, 0, strlen(p->data));
    curl_slist_free_all(list);
}

/* Append key_header followed by secret to list; the copy made on the way is wiped. */
static struct curl_slist *append_key(struct curl_slist *list, const char *key_header,
                                     const char *secret) {
    size_t n = strlen(key_header) + strlen(secret) + 1;
    char *line = malloc(n);
    if (!line) return NULL;
    snprintf(line, n, "%s%s", key_header, secret);
    struct curl_slist *t = curl_slist_append(list, line);
    memset(line, 0, n);
    free(line);
    return t;
}

static struct curl_slist *build_headers(const llm_http_call *call) {
    struct curl_slist *list = NULL, *t;
    for (size_t i = 0; call->headers && call->headers[i]; i++) {
        const char *line = call->headers[i];
        if (strcmp(line, LLM_HTTP_KEY_SLOT))
            t = curl_slist_append(list, line);
        else if (call->secret)
            t = append_key(list, call->ops->key_header, call->secret);
        else
            continue; /* no key (local Ollama, vLLM): no key header at all */
        if (!t) goto oom;
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
    if (h->f_status == 429 || h->f_status == 503 || h->f_status == 529)
        resp->retry_after_ms =
            llm_http_header_ms(h->retry_after_ms, h->retry_after, (long)time(NULL));
}

/* Run call, with its headers in hdrs, under cfg's timeouts and retry policy
 * (llm_http_post's contract). */
static int run(llm_http *h, const ctxd_config *cfg, const llm_request *req,
               const llm_http_call *call, struct curl_slist *hdrs, llm_response *resp) {
    h->req = req;
    h->call = call;
    h->delivered = 0;
    h->last_tick = util_mono_ms();
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
        if (util_mono_ms() + wait >= h->deadline) break; /* no time left: keep this error */
        if (sleep_ticking(h, wait)) break;
        resp->retries = attempt + 1;
    }
    h->req = NULL;
    if (h->failed) {
        report_failure(h, call, resp);
        return CTXD_ERR;
    }
    if (!(resp->text = buf_take(&h->text, &resp->text_len))) {
        llm_response_set_error(resp, LLM_ERR_UPSTREAM, 0, "out of memory");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int llm_http_post(llm_http *h, const ctxd_config *cfg, const llm_request *req, llm_http_call *call,
                  json_object *body, llm_response *resp) {
    char url[600];
    const char *text = NULL;
    struct curl_slist *hdrs = NULL;
    int rc = CTXD_ERR;
    if (llm_http_url(url, sizeof(url), call->base_url, call->ops->path)) {
        llm_response_set_error(resp, LLM_ERR_CONFIG, 0, "%s is too long", call->ops->url_setting);
        goto cleanup;
    }
    if (!body ||
        !(text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE)) ||
        !(hdrs = build_headers(call))) {
        llm_response_set_error(resp, LLM_ERR_UPSTREAM, 0, "out of memory");
        goto cleanup;
    }
    call->url = url;
    call->body = text;
    call->body_len = strlen(text);
    call->stream = req->on_delta != NULL;
    rc = run(h, cfg, req, call, hdrs, resp);
cleanup:
    free_headers(hdrs);
    json_object_put(body);
    return rc;
}
