/* turn.c: a turn runs under a Redis lock and commits user message + reply together. */
#include "ctxd/turn.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/buf.h"
#include "ctxd/log.h"
#include "ctxd/message.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"

static void set_error(turn_result *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_error(turn_result *res, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    res->status = status;
    snprintf(res->code, sizeof(res->code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(res->errstr, sizeof(res->errstr), fmt, ap);
    va_end(ap);
    res->retry_after_s = status == 503 ? 1 : 0; /* callers may set another */
}

void turn_result_free(turn_result *res) {
    if (!res) return;
    free(res->body);
    res->body = NULL;
}

/* Map a store failure to the answer. */
static void store_error(turn_result *res, const store *st, const char *id) {
    switch (st->err) {
    case STORE_ERR_NOT_FOUND:
        set_error(res, 404, "context_not_found", "Context not found: %s", id);
        break;
    case STORE_ERR_LOCK_LOST:
    case STORE_ERR_CONFLICT:
        set_error(res, 409, "context_busy",
                  "Context %s changed while this turn ran (its lock expired); "
                  "nothing was stored, retry the request",
                  id);
        res->retry_after_s = 1;
        break;
    case STORE_ERR_TOO_LARGE:
        set_error(res, 413, "context_full",
                  "Context %s is full; it may hold at most the configured "
                  "CTXD_MAX_MESSAGES messages",
                  id);
        break;
    default: set_error(res, 503, "redis_unavailable", "%s", st->errstr); break;
    }
}

/* An idempotency record: "<expires_ms> <fp> <status> <body>". */
static char *idem_record(int ttl_s, uint64_t fp, int status, const char *body) {
    int64_t exp = util_now_ms() + (int64_t)ttl_s * 1000;
    size_t n = strlen(body) + 64;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%" PRId64 " %016" PRIx64 " %d %s", exp, fp, status, body);
    return r;
}

/* Answer from a stored record; 422 when the key came with another request. */
static int replay(const char *record, uint64_t fp, const char *key, turn_result *res) {
    unsigned long long rfp = 0;
    int status = 0, off = 0;
    if (sscanf(record, "%*d %16llx %d %n", &rfp, &status, &off) < 2 || !off) {
        set_error(res, 503, "redis_unavailable", "corrupt idempotency record");
        return CTXD_ERR;
    }
    if (rfp != fp) {
        set_error(res, 422, "idempotency_key_reused",
                  "Idempotency-Key '%s' was already used with a different "
                  "request; use a new key for a new request",
                  key);
        return CTXD_ERR;
    }
    res->status = status;
    res->replayed = 1;
    if (!(res->body = strdup(record + off))) {
        set_error(res, 503, "out_of_memory", "out of memory");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

/* Look for an earlier answer under idem_key. Returns 1 if res is filled. */
static int check_idem(ctxd_worker *w, const char *id, const char *key, uint64_t fp,
                      turn_result *res) {
    char *rec = NULL;
    if (!key) return 0;
    if (store_idem_get(w->st, id, key, &rec)) {
        store_error(res, w->st, id);
        return 1;
    }
    if (!rec) return 0;
    replay(rec, fp, key, res);
    free(rec);
    return 1;
}

/* One try at taking a context's lock; CTXD_ERR with st->err BUSY when
 * someone else holds it. */
typedef int (*lock_try_fn)(ctxd_worker *w, const char *id, const char *token, void *arg);

/* Take the context's lock with attempt, waiting up to lock_wait_ms. */
static int lock_or_fail(ctxd_worker *w, const char *id, const char *token, lock_try_fn attempt,
                        void *arg, turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    int64_t t0 = util_mono_us(), deadline = util_mono_ms() + cfg->lock_wait_ms;
    int pause = 5, waited = 0;
    for (;;) {
        if (attempt(w, id, token, arg) == CTXD_OK) {
            if (waited) metrics_lock_wait(util_mono_us() - t0);
            return CTXD_OK;
        }
        waited = 1;
        if (w->st->err != STORE_ERR_BUSY) {
            store_error(res, w->st, id);
            return CTXD_ERR;
        }
        int64_t left = deadline - util_mono_ms();
        if (left <= 0) break;
        int nap = pause + (int)util_rand((unsigned)pause);
        util_sleep_ms(nap < left ? nap : (int)left);
        if (pause < 100) pause *= 2;
    }
    metrics_lock_wait(util_mono_us() - t0);
    metrics_lock_busy();
    set_error(res, 409, "context_busy",
              "Context %s is busy with another turn; retry after the "
              "Retry-After delay",
              id);
    res->retry_after_s = 1;
    return CTXD_ERR;
}

/* The plain lock (appends). */
static int try_lock(ctxd_worker *w, const char *id, const char *token, void *arg) {
    CTXD_UNUSED(arg);
    return store_lock_acquire(w->st, id, token, w->cfg->lock_ttl_ms);
}

/* The lock and the turn's read together (one round trip). */
typedef struct turn_read_arg {
    const turn_request *req;
    int64_t user_estimate;
    store_context *ctx;
} turn_read_arg;

static int try_lock_and_read(ctxd_worker *w, const char *id, const char *token, void *arg) {
    turn_read_arg *a = arg;
    return store_turn_read(w->st, id, token, w->cfg->lock_ttl_ms, a->req->idem_key,
                           a->user_estimate, w->cfg->summary_batch, a->ctx);
}

/* The stored form of one message (see message.h). Returns a JSON text
 * (free it) or NULL when out of memory. r: the reply's figures, or NULL. */
static char *message_json(int64_t seq, const char *role, const char *content, size_t len,
                          int64_t now_ms, int64_t tokens, const llm_response *r) {
    message m = {.seq = seq,
                 .role = role,
                 .content = content,
                 .content_len = len,
                 .created_ms = now_ms,
                 .tokens = tokens,
                 .input_tokens = -1,
                 .output_tokens = -1};
    if (r) {
        m.model = r->model;
        m.stop_reason = r->stop_reason;
        m.input_tokens = r->input_tokens;
        m.output_tokens = r->output_tokens;
    }
    buf b;
    buf_init(&b);
    message_encode(&b, &m);
    return buf_take(&b, NULL);
}

/* The turn's answer body {"context_id","ai_response","usage","model"}. */
static char *answer_json(const char *id, const llm_response *r) {
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"context_id\":\"%s\",\"ai_response\":", id);
    buf_put_json_string(&b, r->text, r->text_len);
    buf_puts(&b, ",\"usage\":{\"input_tokens\":");
    if (r->input_tokens >= 0)
        buf_printf(&b, "%ld", r->input_tokens);
    else
        buf_puts(&b, "null");
    buf_puts(&b, ",\"output_tokens\":");
    if (r->output_tokens >= 0)
        buf_printf(&b, "%ld", r->output_tokens);
    else
        buf_puts(&b, "null");
    buf_puts(&b, "}");
    if (r->model[0]) {
        buf_puts(&b, ",\"model\":");
        buf_put_json_string(&b, r->model, strlen(r->model));
    }
    buf_puts(&b, "}");
    return buf_take(&b, NULL);
}

/* Stored messages decoded for a model call: msgs[] point into arena. */
typedef struct history {
    char *arena;
    llm_message *msgs; /* n stored + room for one more */
    int64_t *seqs;
    size_t n;
    int64_t tokens;            /* what the stored messages count */
    int64_t last_reply_tokens; /* the newest message's, if an assistant's; else -1 */
} history;

static void history_free(history *h) {
    free(h->arena);
    free(h->msgs);
    free(h->seqs);
    memset(h, 0, sizeof(*h));
}

/* Decode blobs (stored message JSON) into h. Unreadable ones are skipped. */
static int history_parse(history *h, const char *id, const store_blob *blobs, size_t n) {
    size_t room = 1, used = 0;
    memset(h, 0, sizeof(*h));
    h->last_reply_tokens = -1;
    for (size_t i = 0; i < n; i++) room += blobs[i].len + 2;
    h->arena = malloc(room);
    h->msgs = calloc(n + 1, sizeof(*h->msgs));
    h->seqs = calloc(n + 1, sizeof(*h->seqs));
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
        h->seqs[h->n++] = m.seq;
        int64_t t = m.tokens >= 0 ? m.tokens : message_tokens(m.content_len);
        h->tokens += t;
        h->last_reply_tokens = strcmp(m.role, "assistant") ? -1 : t;
    }
    return CTXD_OK;
}

/* What a prompt was made of: a later turn whose prompt extends it exactly
 * can derive its new message's token count from the upstream's figures. */
static void prompt_sig(char *out, size_t len, const store_context *c, int64_t next_seq) {
    uint64_t h = util_fnv1a(UTIL_FNV_SEED, c->system, strlen(c->system));
    snprintf(out, len, "%" PRId64 ":%" PRId64 ":%" PRId64 ":%08x", c->window_start_seq,
             c->summary_upto, next_seq, (unsigned)(h & 0xffffffffu));
}

/* The system prompt the model gets: the context's own plus its summary. */
static char *system_prompt(const store_context *c) {
    buf b;
    buf_init(&b);
    buf_puts(&b, c->system);
    if (c->summary[0]) {
        if (c->system[0]) buf_puts(&b, "\n\n");
        buf_puts(&b, "Summary of the earlier conversation:\n");
        buf_puts(&b, c->summary);
    }
    return buf_take(&b, NULL);
}

#define SUMMARY_SYSTEM                                                                             \
    "You maintain a running summary of a conversation between a user and an "                      \
    "assistant. Fold the new messages into the current summary. Keep names, "                      \
    "facts, decisions, preferences and open questions; drop small talk. Reply "                    \
    "with the updated summary only."

/* Fold the messages that left the window into the summary (strategy
 * summarize). Only the new messages and the previous summary are sent.
 * Returns 1 if the summary moved on; a failure is logged and retried on a
 * later turn, never failing the turn. */
static int fold_summary(ctxd_worker *w, const store_context *c, llm_tick_fn tick, void *tick_arg) {
    history h;
    llm_response r;
    buf b;
    int folded = 0;
    int64_t upto = c->summary_upto;
    llm_response_init(&r);
    buf_init(&b);
    if (history_parse(&h, c->id, c->fold, c->n_fold)) goto cleanup;
    buf_printf(&b, "Current summary:\n%s\n\nNew messages:\n",
               c->summary[0] ? c->summary : "(none)");
    for (size_t i = 0; i < h.n; i++) {
        upto = h.seqs[i];
        buf_printf(&b, "[seq %" PRId64 "] %s: ", upto, h.msgs[i].role);
        buf_putn(&b, h.msgs[i].content, h.msgs[i].content_len);
        buf_puts(&b, "\n");
    }
    if (b.err || h.n == 0) goto cleanup;
    llm_message prompt = {"user", b.data, b.len};
    llm_request lr = {.context_id = c->id,
                      .system = SUMMARY_SYSTEM,
                      .model = w->cfg->summary_model[0] ? w->cfg->summary_model
                               : c->model[0]            ? c->model
                                                        : NULL,
                      .messages = &prompt,
                      .n_messages = 1,
                      .summarize = 1,
                      .on_tick = tick,
                      .on_tick_arg = tick_arg};
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
    log_msg(LOG_DEBUG, "context %s: summary now covers seq <= %" PRId64, c->id, upto);
    folded = 1;
    metrics_summary_fold(1);
cleanup:
    history_free(&h);
    llm_response_free(&r);
    buf_free(&b);
    return folded;
}

static void llm_error(turn_result *res, const llm_response *r) {
    int ra = r->retry_after_ms > 0 ? (int)((r->retry_after_ms + 999) / 1000) : 0;
    switch (r->err) {
    case LLM_ERR_AUTH: set_error(res, 502, "upstream_auth", "%s", r->errstr); break;
    case LLM_ERR_RATE:
        set_error(res, 429, "upstream_rate_limited", "%s", r->errstr);
        res->retry_after_s = ra ? ra : 1;
        break;
    case LLM_ERR_OVERLOADED:
        set_error(res, 503, "upstream_overloaded", "%s", r->errstr);
        res->retry_after_s = ra ? ra : 1;
        break;
    case LLM_ERR_TIMEOUT: set_error(res, 504, "upstream_timeout", "%s", r->errstr); break;
    case LLM_ERR_CONNECT: set_error(res, 502, "upstream_unreachable", "%s", r->errstr); break;
    case LLM_ERR_BAD_REQUEST: set_error(res, 502, "upstream_rejected", "%s", r->errstr); break;
    case LLM_ERR_CONFIG: set_error(res, 503, "provider_unavailable", "%s", r->errstr); break;
    default: set_error(res, 502, "upstream_error", "%s", r->errstr); break;
    }
}

typedef struct tick_state {
    ctxd_worker *w;
    const char *id, *token;
    int64_t last_renew;
    int lost;
} tick_state;

/* Keep the lock alive while the model works (renew every third of its TTL). */
static int on_tick(void *arg) {
    tick_state *t = arg;
    int64_t now = util_mono_ms();
    if (now - t->last_renew < t->w->cfg->lock_ttl_ms / 3) return CTXD_OK;
    if (store_lock_renew(t->w->st, t->id, t->token, t->w->cfg->lock_ttl_ms)) {
        if (t->w->st->err == STORE_ERR_LOCK_LOST) {
            t->lost = 1;
            return CTXD_ERR;
        }
        return CTXD_OK; /* Redis hiccup: try again at the next tick */
    }
    t->last_renew = now;
    return CTXD_OK;
}

/* With strategy summarize, fold what left the window into the summary and
 * read again (the summary's size changed the budget). */
static int fold_if_needed(ctxd_worker *w, const turn_request *req, const char *token,
                          tick_state *ts, int64_t user_estimate, store_context *ctx,
                          turn_result *res) {
    const char *id = req->context_id;
    if (strcmp(ctx->strategy, "summarize") || !ctx->n_fold || !fold_summary(w, ctx, on_tick, ts))
        return CTXD_OK;
    store_context_free(ctx);
    if (!ts->lost && store_turn_read(w->st, id, token, w->cfg->lock_ttl_ms, NULL, user_estimate,
                                     w->cfg->summary_batch, ctx) == CTXD_OK)
        return CTXD_OK;
    if (ts->lost || w->st->err == STORE_ERR_BUSY) {
        set_error(res, 409, "context_busy",
                  "Context %s: this turn lost its lock while summarizing; nothing was "
                  "stored, retry the request",
                  id);
        res->retry_after_s = 1;
    } else {
        store_error(res, w->st, id);
    }
    return CTXD_ERR;
}

/* 413 when the prompt cannot fit the context's budget. */
static int check_budget(const store_context *ctx, const history *h, int64_t fixed,
                        turn_result *res) {
    int64_t need = fixed + (!strcmp(ctx->strategy, "summarize") ? ctx->summary_tokens : 0);
    if (!strcmp(ctx->strategy, "all")) need += h->tokens;
    if (need <= ctx->max_context_tokens) return CTXD_OK;
    int64_t summary = !strcmp(ctx->strategy, "summarize") ? ctx->summary_tokens : 0;
    char why[160];
    if (!strcmp(ctx->strategy, "all"))
        snprintf(why, sizeof(why),
                 "use strategy window or summarize (PATCH "
                 "/mcp/context/{id}) or raise max_context_tokens");
    else
        snprintf(why, sizeof(why),
                 "the new message and system prompt (%" PRId64 ") and summary (%" PRId64
                 ") alone exceed it; raise max_context_tokens",
                 fixed, summary);
    set_error(res, 413, "prompt_too_large",
              "Context %s: the prompt would need about %" PRId64 " tokens but "
              "max_context_tokens is %" PRId64 "; %s",
              ctx->id, need, ctx->max_context_tokens, why);
    return CTXD_ERR;
}

/* Everything after the lock is held and ctx read (run_locked frees it). */
static int run_locked(ctxd_worker *w, const turn_request *req, const char *token, store_context ctx,
                      int64_t user_estimate, turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    const char *id = req->context_id;
    history h = {0};
    llm_response r;
    char *user = NULL, *reply = NULL, *body = NULL, *rec = NULL, *system = NULL;
    char sig_before[64], sig_after[64];
    int rc = CTXD_ERR;
    llm_response_init(&r);

    if (ctx.idem_record) { /* a repeat that arrived while the first ran */
        rc = replay(ctx.idem_record, req->fingerprint, req->idem_key, res);
        goto cleanup;
    }
    tick_state ts = {w, id, token, util_mono_ms(), 0};
    if (fold_if_needed(w, req, token, &ts, user_estimate, &ctx, res)) goto cleanup;
    int64_t fixed = user_estimate + message_system_tokens(strlen(ctx.system));
    if (ctx.total_messages + 2 > cfg->max_messages && ctx.max_messages == 0) {
        set_error(res, 413, "context_full",
                  "Context %s holds %" PRId64 " messages; at most %ld are allowed "
                  "(CTXD_MAX_MESSAGES); set max_messages on the context to keep only "
                  "the newest",
                  id, ctx.total_messages, cfg->max_messages);
        goto cleanup;
    }
    if (history_parse(&h, id, ctx.messages, ctx.n_messages)) {
        set_error(res, 503, "out_of_memory", "out of memory");
        goto cleanup;
    }
    if (check_budget(&ctx, &h, fixed, res)) goto cleanup;
    h.msgs[h.n].role = "user";
    h.msgs[h.n].content = req->message;
    h.msgs[h.n].content_len = req->message_len;
    if (!(system = system_prompt(&ctx))) {
        set_error(res, 503, "out_of_memory", "out of memory");
        goto cleanup;
    }
    llm_request lr = {
        .context_id = id,
        .system = system[0] ? system : NULL,
        .model = ctx.model[0] ? ctx.model : NULL,
        .messages = h.msgs,
        .n_messages = h.n + 1,
        .on_delta = req->on_delta,
        .on_delta_arg = req->stream_arg,
        .on_tick = on_tick,
        .on_tick_arg = &ts,
    };
    if (req->on_start) {
        req->on_start(req->stream_arg);
        res->started = 1;
    }
    if (llm_complete(w->llm, &lr, &r)) {
        if (ts.lost) {
            set_error(res, 409, "context_busy",
                      "Context %s: this turn lost its lock while the model "
                      "worked; nothing was stored, retry the request",
                      id);
            res->retry_after_s = 1;
        } else {
            llm_error(res, &r);
        }
        log_msg(LOG_WARN, "context %s: model call failed: %s", id, r.errstr);
        goto cleanup;
    }

    /* The user message's tokens: exact when this prompt extends the last
     * one (input now - input then - the reply in between), else estimated. */
    int64_t user_tokens = user_estimate;
    prompt_sig(sig_before, sizeof(sig_before), &ctx, ctx.next_seq);
    if (r.input_tokens > 0 && ctx.prompt_tokens > 0 && h.last_reply_tokens >= 0 &&
        !strcmp(sig_before, ctx.prompt_sig)) {
        int64_t exact = r.input_tokens - ctx.prompt_tokens - h.last_reply_tokens;
        if (exact > 0) user_tokens = exact;
    }
    int64_t reply_tokens = r.output_tokens >= 0 ? r.output_tokens : message_tokens(r.text_len);
    prompt_sig(sig_after, sizeof(sig_after), &ctx, ctx.next_seq + 2);

    int64_t now = util_now_ms();
    user =
        message_json(ctx.next_seq, "user", req->message, req->message_len, now, user_tokens, NULL);
    reply = message_json(ctx.next_seq + 1, "assistant", r.text, r.text_len, now, reply_tokens, &r);
    body = answer_json(id, &r);
    if (body && req->idem_key)
        rec = idem_record(cfg->idempotency_ttl_s, req->fingerprint, 200, body);
    if (!user || !reply || !body || (req->idem_key && !rec)) {
        set_error(res, 503, "out_of_memory", "out of memory");
        goto cleanup;
    }
    store_blob blobs[2] = {{user, strlen(user)}, {reply, strlen(reply)}};
    store_append_req ar = {
        .id = id,
        .token = token,
        .expected_next_seq = ctx.next_seq,
        .now_ms = now,
        .messages = blobs,
        .n_messages = 2,
        .idem_key = req->idem_key,
        .idem_record = rec,
        .idem_ttl_s = cfg->idempotency_ttl_s,
        .max_messages = cfg->max_messages,
        .prompt_sig = r.input_tokens > 0 ? sig_after : NULL,
        .prompt_tokens = r.input_tokens,
    };
    if (store_append(w->st, &ar)) {
        store_error(res, w->st, id);
        goto cleanup;
    }
    res->status = 200;
    res->body = body;
    body = NULL;
    rc = CTXD_OK;
cleanup:
    history_free(&h);
    free(user);
    free(reply);
    free(body);
    free(rec);
    free(system);
    llm_response_free(&r);
    store_context_free(&ctx);
    return rc;
}

int turn_run(ctxd_worker *w, const turn_request *req, turn_result *res) {
    char token[33];
    memset(res, 0, sizeof(*res));
    if (check_idem(w, req->context_id, req->idem_key, req->fingerprint, res))
        return res->status < 400 ? CTXD_OK : CTXD_ERR;
    if (util_token(token)) {
        set_error(res, 503, "no_randomness", "no randomness for a lock token");
        return CTXD_ERR;
    }
    /* The new message is estimated; the read script adds the system
     * prompt's share (bytes / 4) and the summary's known count. */
    store_context ctx;
    turn_read_arg a = {req, message_tokens(req->message_len), &ctx};
    if (lock_or_fail(w, req->context_id, token, try_lock_and_read, &a, res)) return CTXD_ERR;
    int rc = run_locked(w, req, token, ctx, a.user_estimate, res);
    /* The append released the lock on success; make sure on every path. */
    if (rc != CTXD_OK || res->replayed) store_lock_release(w->st, req->context_id, token);
    return rc;
}

/* Body of turn_append once the lock is held. */
static int append_locked(ctxd_worker *w, const turn_append_request *req, const char *token,
                         turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    const char *id = req->context_id;
    store_context ctx;
    store_blob *blobs = NULL;
    char *body = NULL, *rec = NULL;
    int rc = CTXD_ERR;

    if (check_idem(w, id, req->idem_key, req->fingerprint, res))
        return res->status < 400 ? CTXD_OK : CTXD_ERR;
    if (store_read(w->st, id, 0, 0, 0, &ctx)) {
        store_error(res, w->st, id);
        return CTXD_ERR;
    }
    if (ctx.max_messages == 0 && ctx.total_messages + (int64_t)req->n > cfg->max_messages) {
        set_error(res, 413, "context_full",
                  "Context %s holds %" PRId64 " messages; %zu more would exceed "
                  "the limit of %ld (CTXD_MAX_MESSAGES)",
                  id, ctx.total_messages, req->n, cfg->max_messages);
        goto cleanup;
    }
    blobs = calloc(req->n, sizeof(*blobs));
    if (!blobs) goto oom;
    int64_t now = util_now_ms();
    for (size_t i = 0; i < req->n; i++) {
        blobs[i].data = message_json(ctx.next_seq + (int64_t)i, req->roles[i], req->contents[i],
                                     req->content_lens[i], now,
                                     message_tokens(req->content_lens[i]), NULL);
        if (!blobs[i].data) goto oom;
        blobs[i].len = strlen(blobs[i].data);
    }
    size_t blen = 128;
    if (!(body = malloc(blen))) goto oom;
    snprintf(body, blen, "{\"context_id\":\"%s\",\"appended\":%zu,\"first_seq\":%" PRId64 "}", id,
             req->n, ctx.next_seq);
    if (req->idem_key && !(rec = idem_record(cfg->idempotency_ttl_s, req->fingerprint, 201, body)))
        goto oom;
    store_append_req ar = {
        .id = id,
        .token = token,
        .expected_next_seq = ctx.next_seq,
        .now_ms = now,
        .messages = blobs,
        .n_messages = req->n,
        .idem_key = req->idem_key,
        .idem_record = rec,
        .idem_ttl_s = cfg->idempotency_ttl_s,
        .max_messages = cfg->max_messages,
    };
    if (store_append(w->st, &ar)) {
        store_error(res, w->st, id);
        goto cleanup;
    }
    res->status = 201;
    res->body = body;
    body = NULL;
    rc = CTXD_OK;
    goto cleanup;
oom:
    set_error(res, 503, "out_of_memory", "out of memory");
cleanup:
    if (blobs)
        for (size_t i = 0; i < req->n; i++) free(blobs[i].data);
    free(blobs);
    free(body);
    free(rec);
    store_context_free(&ctx);
    return rc;
}

int turn_append(ctxd_worker *w, const turn_append_request *req, turn_result *res) {
    char token[33];
    memset(res, 0, sizeof(*res));
    if (check_idem(w, req->context_id, req->idem_key, req->fingerprint, res))
        return res->status < 400 ? CTXD_OK : CTXD_ERR;
    if (util_token(token)) {
        set_error(res, 503, "no_randomness", "no randomness for a lock token");
        return CTXD_ERR;
    }
    if (lock_or_fail(w, req->context_id, token, try_lock, NULL, res)) return CTXD_ERR;
    int rc = append_locked(w, req, token, res);
    if (rc != CTXD_OK || res->replayed) store_lock_release(w->st, req->context_id, token);
    return rc;
}
