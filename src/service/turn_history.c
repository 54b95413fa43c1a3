/* turn_history.c: stored messages decoded for a model call, and the summary fold. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/buf.h"
#include "ctxd/log.h"
#include "ctxd/message.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"
#include "turn_int.h"

void turn_history_free(turn_history *h) {
    free(h->arena);
    free(h->msgs);
    free(h->seqs);
    memset(h, 0, sizeof(*h));
}

int turn_history_parse(turn_history *h, const char *id, const store_blob *blobs, size_t n,
                       size_t more) {
    size_t room = 1, used = 0;
    memset(h, 0, sizeof(*h));
    h->last_reply_tokens = -1;
    for (size_t i = 0; i < n; i++) room += blobs[i].len + 2;
    h->arena = malloc(room);
    h->msgs = calloc(n + more, sizeof(*h->msgs));
    h->seqs = calloc(n + more, sizeof(*h->seqs));
    if (!h->arena || !h->msgs || !h->seqs) return CTXD_ERR;
    for (size_t i = 0; i < n; i++) {
        message m;
        size_t mark = used;
        if (message_decode(blobs[i].data, blobs[i].len, h->arena, &used, &m)) {
            used = mark;
            log_msg(LOG_WARN, "context %s: skipping an unreadable stored message", id);
            continue;
        }
        llm_message *lm = &h->msgs[h->n];
        lm->role = m.role;
        lm->content = m.content;
        lm->content_len = m.content_len;
        lm->content_json = m.content_json;
        h->seqs[h->n++] = m.seq;
        int64_t t = m.tokens >= 0
                        ? m.tokens
                        : message_content_tokens(m.content, m.content_len, m.content_json);
        h->tokens += t;
        h->last_reply_tokens = strcmp(m.role, "assistant") ? -1 : t;
    }
    return CTXD_OK;
}

int turn_message_id(char out[40]) {
    memcpy(out, "msg_", 4);
    return util_token62(out + 4, TURN_MESSAGE_ID_LEN - 4);
}

char *turn_message_json(int64_t seq, const char *role, const turn_content *c, int64_t now_ms,
                        int64_t tokens, const llm_response *r, const char *given_id,
                        size_t *out_len) {
    char id[40];
    if (given_id)
        snprintf(id, sizeof(id), "%s", given_id);
    else if (turn_message_id(id))
        return NULL;
    message m = {.seq = seq,
                 .role = role,
                 .content = c->text,
                 .content_len = c->len,
                 .content_json = c->json,
                 .tool_result =
                     !strcmp(role, "user") && message_has_tool_result(c->text, c->len, c->json),
                 .id = id,
                 .metadata = c->metadata,
                 .metadata_len = c->metadata_len,
                 .created_ms = now_ms,
                 .tokens = tokens,
                 .input_tokens = -1,
                 .output_tokens = -1,
                 .cache_creation_input_tokens = -1,
                 .cache_read_input_tokens = -1};
    if (r) {
        m.model = r->model;
        m.stop_reason = r->stop_reason;
        m.input_tokens = r->input_tokens;
        m.output_tokens = r->output_tokens;
        m.cache_creation_input_tokens = r->cache_creation_input_tokens;
        m.cache_read_input_tokens = r->cache_read_input_tokens;
    }
    buf b;
    buf_init(&b);
    message_encode(&b, &m);
    return buf_take(&b, out_len);
}

#define SUMMARY_SYSTEM                                                                             \
    "You maintain a running summary of a conversation between a user and an "                      \
    "assistant. Fold the new messages into the current summary. Keep names, "                      \
    "facts, decisions, preferences and open questions; drop small talk. Reply "                    \
    "with the updated summary only."

/* Only the new messages and the previous summary are sent. */
int turn_fold_summary(ctxd_worker *w, const store_context *c, turn_lock_keeper *keeper,
                      int64_t max_tokens, int condense) {
    turn_history h;
    llm_response r;
    buf b;
    int folded = 0;
    int64_t upto = c->summary_upto;
    llm_response_init(&r);
    buf_init(&b);
    if (turn_history_parse(&h, c->id, condense ? NULL : c->fold, condense ? 0 : c->n_fold, 1))
        goto cleanup;
    buf_printf(&b, "Current summary:\n%s\n\n", c->summary[0] ? c->summary : "(none)");
    if (condense) {
        /* No new messages: the summary itself is too long for its share. */
        buf_printf(&b,
                   "New messages:\n(none)\n\nThe summary is too long: rewrite it in at most "
                   "%" PRId64 " tokens (about %" PRId64 " words), keeping what matters most.\n",
                   max_tokens, max_tokens * 3 / 4);
    } else {
        buf_puts(&b, "New messages:\n");
        for (size_t i = 0; i < h.n; i++) {
            upto = h.seqs[i];
            buf_printf(&b, "[seq %" PRId64 "] %s: ", upto, h.msgs[i].role);
            message_content_text(&b, h.msgs[i].content, h.msgs[i].content_len,
                                 h.msgs[i].content_json);
            buf_puts(&b, "\n");
        }
        /* The summary must fit its share of the context's budget. */
        buf_printf(&b, "\nKeep the updated summary under %" PRId64 " tokens.\n", max_tokens);
    }
    if (b.err || (!condense && h.n == 0) || (condense && !c->summary[0])) goto cleanup;
    llm_message prompt = {"user", b.data, b.len, 0};
    llm_request lr = {.context_id = c->id,
                      .system = SUMMARY_SYSTEM,
                      .model = w->cfg->summary_model[0] ? w->cfg->summary_model
                               : c->model[0]            ? c->model
                                                        : NULL,
                      .messages = &prompt,
                      .n_messages = 1,
                      .max_tokens = max_tokens > INT32_MAX ? INT32_MAX : (int)max_tokens,
                      .summarize = 1,
                      .on_tick = turn_lock_tick,
                      .on_tick_arg = keeper};
    if (llm_complete(w->llm, &lr, &r)) {
        log_msg(LOG_WARN, "context %s: summary call failed (retried on a later turn): %s", c->id,
                r.errstr);
        metrics_summary_fold(0);
        goto cleanup;
    }
    int64_t tokens = r.output_tokens >= 0 ? r.output_tokens : message_tokens(r.text_len);
    if (store_set_summary(w->st, c->id, c->summary_upto, upto, r.text, tokens, util_now_ms())) {
        log_msg(LOG_WARN, "context %s: summary not stored: %s", c->id, w->st->errstr);
        goto cleanup;
    }
    log_msg(LOG_DEBUG, "context %s: summary now covers seq <= %" PRId64 " in %" PRId64 " tokens%s",
            c->id, upto, tokens, condense ? " (shortened)" : "");
    folded = 1;
    metrics_summary_fold(1);
cleanup:
    turn_history_free(&h);
    llm_response_free(&r);
    buf_free(&b);
    return folded;
}
