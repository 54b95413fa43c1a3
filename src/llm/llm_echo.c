/* llm_echo.c: the offline "echo" model, deterministic and history-aware. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/llm.h"
#include "ctxd/message.h"
#include "ctxd/util.h"
#include "llm_provider.h"

static int echo_delay_ms; /* written once at start, before threads */

void llm_echo_set_delay(int ms) { echo_delay_ms = ms; }

/* Sleep ms in slices, ticking so a turn's lock stays renewed. */
static int echo_wait(const llm_request *req, int ms) {
    while (ms > 0) {
        int slice = ms < 100 ? ms : 100;
        util_sleep_ms(slice);
        ms -= slice;
        if (req->on_tick && req->on_tick(req->on_tick_arg)) return CTXD_ERR;
    }
    return CTXD_OK;
}

/* ASCII case-insensitive search of needle in hay[0..len). */
static int contains_ci(const char *hay, size_t len, const char *needle) {
    size_t nl = strlen(needle);
    if (nl > len) return 0;
    for (size_t i = 0; i + nl <= len; i++) {
        size_t j = 0;
        while (j < nl && tolower((unsigned char)hay[i + j]) == needle[j]) j++;
        if (j == nl) return 1;
    }
    return 0;
}

/* Build the reply text; returns a malloc'd string or NULL (out of memory). */
static char *echo_reply(const llm_request *req) {
    const llm_message *said = &req->messages[req->n_messages - 1];
    /* Blocks: their text is what was said. */
    buf said_text;
    buf_init(&said_text);
    message_content_text(&said_text, said->content, said->content_len, said->content_json);
    if (said_text.err) return NULL;
    llm_message text_only = {said->role, said_text.data ? said_text.data : "", said_text.len, 0};
    const llm_message *last = said->content_json ? &text_only : said;
    char *out = NULL;
    int flight = 0;
    long earlier = 0;
    for (size_t i = 0; i < req->n_messages; i++) {
        const llm_message *m = &req->messages[i];
        if (contains_ci(m->content, m->content_len, "flight")) flight = 1;
        if (i + 1 < req->n_messages && !strcmp(m->role, "user")) earlier++;
    }
    const char *fixed = NULL;
    if (contains_ci(last->content, last->content_len, "hello"))
        fixed = "Hello there! How can I help you today?";
    else if (flight && contains_ci(last->content, last->content_len, "next tuesday"))
        fixed = "Got it, a flight for next Tuesday. Any specific time or airline?";
    else if (flight && contains_ci(last->content, last->content_len, "window seat"))
        fixed = "A window seat, noted. Is there anything else you'd like to add "
                "to your flight preferences?";
    if (fixed) {
        out = strdup(fixed);
        goto cleanup;
    }

#define ECHO_FMT                                                                                   \
    "Acknowledged: '%.*s'. How can I further assist you with the context "                         \
    "ID '%s'? (echo model: %ld earlier turn%s in this conversation%s)"
    const char *cid = req->context_id ? req->context_id : "";
    const char *sys = req->system && *req->system ? "; I have a system prompt" : "";
    int n = snprintf(NULL, 0, ECHO_FMT, (int)last->content_len, last->content, cid, earlier,
                     earlier == 1 ? "" : "s", sys);
    if (n >= 0 && (out = malloc((size_t)n + 1)))
        snprintf(out, (size_t)n + 1, ECHO_FMT, (int)last->content_len, last->content, cid, earlier,
                 earlier == 1 ? "" : "s", sys);
cleanup:
    buf_free(&said_text);
    return out;
}

/* A summary fold: keep the current summary and add one short line per new
 * message, so tests can see exactly what was folded. The prompt's layout is
 * turn.c's (TURN_SUMMARY_* markers): "Current summary:" then "New
 * messages:" with one "[seq N] role: text" line each. */
static char *echo_summary(const llm_message *prompt) {
    const char *text = prompt->content, *end = text + prompt->content_len;
    const char *cur = strstr(text, "Current summary:\n");
    const char *news = strstr(text, "\n\nNew messages:\n");
    if (!cur || !news) return strdup("(echo summary: unrecognised prompt)");
    cur += strlen("Current summary:\n");
    size_t cap = prompt->content_len + 64, n = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    if (strncmp(cur, "(none)", 6) != 0) {
        memcpy(out, cur, (size_t)(news - cur));
        n = (size_t)(news - cur);
    }
    for (const char *p = news + strlen("\n\nNew messages:\n"); p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (l && p[0] == '[') {
            size_t take = l > 72 ? 72 : l;
            while (take < l && ((unsigned char)p[take] & 0xc0) == 0x80)
                take--; /* keep UTF-8 whole */
            if (n) out[n++] = '\n';
            memcpy(out + n, p, take);
            n += take;
        }
        p += l + 1;
    }
    out[n] = '\0';
    return out;
}

/* Stream the reply word by word (the delay spread between words) so
 * streaming works offline too. */
static int echo_stream(const llm_request *req, const char *text, size_t len) {
    size_t start = 0, words = 1;
    for (size_t i = 1; i < len; i++) words += text[i] == ' ';
    int pause = echo_delay_ms / (int)words;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || (text[i] == ' ' && i > start)) {
            size_t end = i == len ? len : i;
            if (echo_wait(req, pause)) return CTXD_ERR;
            if (req->on_delta(req->on_delta_arg, text + start, end - start)) return CTXD_ERR;
            start = end;
        }
    }
    return CTXD_OK;
}

int llm_echo_complete(const llm_request *req, llm_response *resp) {
    if (req->n_messages == 0) {
        llm_response_set_error(resp, LLM_ERR_BAD_REQUEST, 0, "no messages to answer");
        return CTXD_ERR;
    }
    char *text =
        req->summarize ? echo_summary(&req->messages[req->n_messages - 1]) : echo_reply(req);
    if (!text) {
        llm_response_set_error(resp, LLM_ERR_UPSTREAM, 0, "out of memory");
        return CTXD_ERR;
    }
    size_t len = strlen(text);
    if (req->on_delta ? echo_stream(req, text, len) : echo_wait(req, echo_delay_ms)) {
        free(text);
        llm_response_set_error(resp, LLM_ERR_ABORTED, 0, "the echo call was aborted");
        return CTXD_ERR;
    }
    /* Counted like the estimate, but additively, the way real upstreams
     * count: the system prompt plus every message. */
    long in = req->system ? (long)message_system_tokens(strlen(req->system)) : 0;
    for (size_t i = 0; i < req->n_messages; i++)
        in += (long)message_tokens(req->messages[i].content_len);
    resp->text = text;
    resp->text_len = len;
    resp->input_tokens = in;
    resp->output_tokens = (long)message_tokens(len);
    snprintf(resp->stop_reason, sizeof(resp->stop_reason), "end_turn");
    snprintf(resp->model, sizeof(resp->model), "%s",
             req->model && *req->model ? req->model : "echo");
    return CTXD_OK;
}
