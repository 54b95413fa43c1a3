/* turn.c: a turn runs under a Redis lock and commits user message + reply together. */
#include "ctxd/turn.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/buf.h"
#include "ctxd/context.h"
#include "ctxd/log.h"
#include "ctxd/message.h"
#include "ctxd/util.h"
#include "turn_int.h"

void turn_result_free(turn_result *res) {
    if (!res) return;
    free(res->reply.text);
    free(res->reply.content_json);
    res->reply.text = NULL;
    res->reply.content_json = NULL;
}

int64_t turn_reply_prompt_tokens(const turn_reply *r) {
    int64_t n = llm_prompt_tokens(r->input_tokens, r->cache_creation_input_tokens,
                                  r->cache_read_input_tokens);
    return n > 0 ? n : 0;
}

int64_t turn_reply_tokens(const turn_reply *r) {
    return turn_reply_prompt_tokens(r) + (r->output_tokens > 0 ? r->output_tokens : 0);
}

/* What a prompt was made of: a later turn whose prompt extends it exactly
 * can derive its new message's token count from the upstream's figures. */
static void prompt_sig(char *out, size_t len, const store_context *c, int64_t next_seq) {
    uint64_t h = util_fnv1a(UTIL_FNV_SEED, c->system, strlen(c->system));
    snprintf(out, len, "%" PRId64 ":%" PRId64 ":%" PRId64 ":%08x", c->window_start_seq,
             c->summary_upto, next_seq, (unsigned)(h & 0xffffffffu));
}

#define SUMMARY_HEADER "\n\nSummary of the earlier conversation:\n"

/* The system prompt the model gets: the context's own plus its summary,
 * cut to room tokens (at a character's boundary) when it is longer. */
static char *system_prompt(const store_context *c, int64_t room) {
    buf b;
    size_t len = strlen(c->summary);
    buf_init(&b);
    buf_puts(&b, c->system);
    if (room >= 0 && len > (size_t)room * MESSAGE_BYTES_PER_TOKEN) {
        len = (size_t)room * MESSAGE_BYTES_PER_TOKEN;
        while (len && ((unsigned char)c->summary[len] & 0xc0) == 0x80) len--;
    }
    if (len) {
        buf_puts(&b, SUMMARY_HEADER + (c->system[0] ? 0 : 2));
        buf_putn(&b, c->summary, len);
    }
    return buf_take(&b, NULL);
}

/* The summary's share of a summarize context's budget: half of what the
 * new message and the system prompt (fixed) leave, and no more than a
 * model call may write (CTXD_MAX_TOKENS). 0: no room. */
static int64_t summary_share(const ctxd_config *cfg, const store_context *c, int64_t fixed) {
    int64_t share = (c->max_context_tokens - fixed) / 2;
    if (share > cfg->max_tokens) share = cfg->max_tokens;
    return share > 0 ? share : 0;
}

static void llm_error(ctxd_error *e, const llm_response *r) {
    static const ctxd_err map[] = {
        [LLM_ERR_AUTH] = CTXD_E_UPSTREAM_AUTH,
        [LLM_ERR_RATE] = CTXD_E_UPSTREAM_RATE_LIMITED,
        [LLM_ERR_OVERLOADED] = CTXD_E_UPSTREAM_OVERLOADED,
        [LLM_ERR_UPSTREAM] = CTXD_E_UPSTREAM_ERROR,
        [LLM_ERR_BAD_REQUEST] = CTXD_E_UPSTREAM_REJECTED,
        [LLM_ERR_TIMEOUT] = CTXD_E_UPSTREAM_TIMEOUT,
        [LLM_ERR_CONNECT] = CTXD_E_UPSTREAM_UNREACHABLE,
        [LLM_ERR_ABORTED] = CTXD_E_UPSTREAM_ERROR,
        [LLM_ERR_CONFIG] = CTXD_E_PROVIDER_UNAVAILABLE,
    };
    ctxd_err err = (size_t)r->err < sizeof(map) / sizeof(map[0]) && map[r->err]
                       ? map[r->err]
                       : CTXD_E_UPSTREAM_ERROR;
    ctxd_error_set(e, err, "%s", r->errstr);
    if ((r->err == LLM_ERR_RATE || r->err == LLM_ERR_OVERLOADED) && r->retry_after_ms > 0)
        e->retry_after_s = (int)((r->retry_after_ms + 999) / 1000);
}

static int lost_lock(turn_result *res, const char *id, const char *while_what) {
    return ctxd_error_set(&res->error, CTXD_E_BUSY,
                          "Context %s: this turn lost its lock while %s; nothing was "
                          "stored, retry the request",
                          id, while_what);
}

/* With strategy summarize, fold what left the window into the summary, or
 * shorten a summary longer than its share (written before shares, or by a
 * model that ignored max_tokens), and read again (the summary's size
 * changed the budget). At most two summary calls per turn; a summary still
 * too long is cut in the prompt (check_budget), never refusing the turn. */
static int fold_if_needed(ctxd_worker *w, const turn_request *req, const char *token,
                          turn_lock_keeper *keeper, int64_t user_estimate, store_context *ctx,
                          turn_result *res) {
    const char *id = req->context_id;
    if (strcmp(ctx->strategy, "summarize")) return CTXD_OK;
    for (int calls = 0; calls < 2; calls++) {
        int64_t fixed = user_estimate + message_system_tokens(strlen(ctx->system));
        int64_t share = summary_share(w->cfg, ctx, fixed);
        int condense = !ctx->n_fold || calls > 0;
        if (!share || (condense && ctx->summary_tokens <= share)) return CTXD_OK;
        if (!turn_fold_summary(w, ctx, keeper, share, condense)) return CTXD_OK;
        store_context_free(ctx);
        if (keeper->lost) return lost_lock(res, id, "summarizing");
        if (store_turn_read(w->st, id, token, w->cfg->lock_ttl_ms, NULL, STORE_TURN_WINDOW,
                            user_estimate, w->cfg->summary_batch, NULL, ctx) == CTXD_OK)
            continue;
        if (w->st->err == CTXD_E_BUSY) return lost_lock(res, id, "summarizing");
        context_store_error(&res->error, w, id);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

/* How many of the summary's tokens the prompt can carry: all of them, or
 * what the new message and the system prompt (fixed) leave (-1: no
 * summary, or no limit). */
static int64_t summary_room(const store_context *ctx, int64_t fixed) {
    if (strcmp(ctx->strategy, "summarize") || !ctx->summary[0]) return -1;
    int64_t room =
        ctx->max_context_tokens - fixed - message_system_tokens(sizeof(SUMMARY_HEADER) - 1);
    return ctx->summary_tokens <= room ? -1 : room > 0 ? room : 0;
}

/* The prompt must fit the context's budget. With summarize only the new
 * message and the system prompt must: a longer summary is cut. */
static int check_budget(const store_context *ctx, const turn_history *h, int64_t fixed,
                        turn_result *res) {
    int all = !strcmp(ctx->strategy, "all");
    int64_t room = summary_room(ctx, fixed);
    int64_t summary =
        !strcmp(ctx->strategy, "summarize") ? room >= 0 ? room : ctx->summary_tokens : 0;
    int64_t need = fixed + summary + (all ? h->tokens : 0);
    if (need <= ctx->max_context_tokens) return CTXD_OK;
    char why[160];
    if (all)
        snprintf(why, sizeof(why),
                 "use strategy window or summarize (PATCH "
                 "/mcp/context/{id}) or raise max_context_tokens");
    else
        snprintf(why, sizeof(why),
                 "the new message and system prompt (%" PRId64 ") and summary (%" PRId64
                 ") alone exceed it; raise max_context_tokens",
                 fixed, summary);
    return ctxd_error_set(&res->error, CTXD_E_PROMPT_TOO_LARGE,
                          "Context %s: the prompt would need about %" PRId64 " tokens but "
                          "max_context_tokens is %" PRId64 "; %s",
                          ctx->id, need, ctx->max_context_tokens, why);
}

/* The user message's tokens: exact when this prompt extends the last one
 * (prompt now - prompt then - the reply in between, each prompt whole:
 * cached tokens included), else the estimate. */
static int64_t user_tokens(const store_context *ctx, const turn_history *h, const llm_response *r,
                           int64_t estimate) {
    char sig[64];
    long prompt = llm_response_prompt_tokens(r);
    prompt_sig(sig, sizeof(sig), ctx, ctx->next_seq);
    if (prompt > 0 && ctx->prompt_tokens > 0 && h->last_reply_tokens >= 0 &&
        !strcmp(sig, ctx->prompt_sig)) {
        int64_t exact = prompt - ctx->prompt_tokens - h->last_reply_tokens;
        if (exact > 0) return exact;
    }
    return estimate;
}

/* Keep the reply as the turn's answer (takes r->text). */
static void take_reply(turn_result *res, llm_response *r) {
    turn_reply *out = &res->reply;
    out->text = r->text;
    out->text_len = r->text_len;
    out->content_json = r->content_json;
    out->content_json_len = r->content_json_len;
    r->text = NULL;
    r->content_json = NULL;
    snprintf(out->stop_reason, sizeof(out->stop_reason), "%s", r->stop_reason);
    snprintf(out->model, sizeof(out->model), "%s", r->model);
    out->input_tokens = r->input_tokens;
    out->output_tokens = r->output_tokens;
    out->cache_creation_input_tokens = r->cache_creation_input_tokens;
    out->cache_read_input_tokens = r->cache_read_input_tokens;
}

/* Store the user message and the reply with the idempotency record, and
 * release the lock (held since locked_ms); on success res->reply holds the
 * reply. */
static int commit(ctxd_worker *w, const turn_request *req, const char *token, int64_t locked_ms,
                  const store_context *ctx, const turn_history *h, int64_t user_estimate,
                  llm_response *r, turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    char sig_after[64], reply_id[40];
    char *rec = NULL;
    size_t rec_len = 0, n = req->n_lead + 2, ok = 0;
    store_blob *blobs = calloc(n, sizeof(*blobs));
    int64_t now = util_now_ms(), seq = ctx->next_seq;
    int64_t reply_tokens = r->output_tokens >= 0 ? r->output_tokens : message_tokens(r->text_len);
    int rc = CTXD_ERR;
    prompt_sig(sig_after, sizeof(sig_after), ctx, ctx->next_seq + (int64_t)n);
    turn_content user = {req->message, req->message_len, req->message_json, req->metadata,
                         req->metadata_len},
                 reply = {r->content_json ? r->content_json : r->text,
                          r->content_json ? r->content_json_len : r->text_len,
                          r->content_json != NULL, NULL, 0};
    if (req->reply_id)
        snprintf(reply_id, sizeof(reply_id), "%s", req->reply_id);
    else if (turn_message_id(reply_id))
        goto oom;
    if (!blobs) goto oom;
    for (size_t i = 0; i < req->n_lead; i++) {
        const turn_message *m = &req->lead[i];
        turn_content c = {m->content, m->len, m->json, NULL, 0};
        blobs[i].data = turn_message_json(seq + (int64_t)i, m->role, &c, now,
                                          message_content_tokens(m->content, m->len, m->json), NULL,
                                          NULL, &blobs[i].len);
        ok += blobs[i].data != NULL;
    }
    /* The user message's exact count is known only when it is the one new. */
    blobs[n - 2].data = turn_message_json(
        seq + (int64_t)n - 2, "user", &user, now,
        req->n_lead ? message_content_tokens(req->message, req->message_len, req->message_json)
                    : user_tokens(ctx, h, r, user_estimate),
        NULL, NULL, &blobs[n - 2].len);
    blobs[n - 1].data = turn_message_json(seq + (int64_t)n - 1, "assistant", &reply, now,
                                          reply_tokens, r, reply_id, &blobs[n - 1].len);
    ok += (blobs[n - 2].data != NULL) + (blobs[n - 1].data != NULL);
    take_reply(res, r);
    snprintf(res->reply.id, sizeof(res->reply.id), "%s", reply_id);
    if (req->idem_key)
        rec =
            turn_idem_record_reply(cfg->idempotency_ttl_s, req->fingerprint, &res->reply, &rec_len);
    if (ok < n || (req->idem_key && !rec)) goto oom;
    store_append_req ar = {
        .id = req->context_id,
        .token = token,
        .expected_next_seq = ctx->next_seq,
        .now_ms = now,
        .messages = blobs,
        .n_messages = n,
        .idem_key = req->idem_key,
        .idem_record = {rec, rec_len},
        .idem_ttl_s = cfg->idempotency_ttl_s,
        .max_messages = cfg->max_messages,
        .prompt_sig = r->input_tokens > 0 ? sig_after : NULL,
        .prompt_tokens = llm_response_prompt_tokens(r),
        .held_ms = turn_lock_held_ms(locked_ms),
    };
    if (store_append(w->st, &ar))
        context_store_error(&res->error, w, req->context_id);
    else
        rc = CTXD_OK;
    goto cleanup;
oom:
    ctxd_error_set(&res->error, CTXD_E_NOMEM, "out of memory");
cleanup:
    for (size_t i = 0; blobs && i < n; i++) free(blobs[i].data);
    free(blobs);
    free(rec);
    return rc;
}

/* What one message of a window is, read as the store's window reads it:
 * whether a unit starts there (a user message that is not tool results),
 * its seq and tokens. CTXD_ERR when out of memory. */
static int window_head(const store_blob *b, int *starts, int64_t *seq, int64_t *tokens) {
    char role[16];
    if (message_head(b->data, b->len, role, tokens, seq)) return CTXD_ERR;
    *starts = !strcmp(role, "user");
    if (*tokens < 0) *tokens = message_tokens(b->len);
    return CTXD_OK;
}

/* With prompt caching, a window slides in steps so the cached prefix stays
 * the same for several turns: it keeps starting where the last turn's did
 * while that still fits (the store's window reaches back to it), and when
 * it must move on, it starts at the newest units that fill half the budget,
 * leaving room for the turns to come. ctx's messages lose their front. */
static void step_window(const ctxd_config *cfg, store_context *ctx, int64_t fixed) {
    /* Only strategy window: with summarize, what the step would leave out is
     * not in the summary yet. */
    if (!cfg->prompt_cache || cfg->provider != CTXD_PROVIDER_ANTHROPIC ||
        strcmp(ctx->strategy, "window") || ctx->n_messages < 2 || !ctx->prompt_sig[0])
        return;
    int64_t prev = strtoll(ctx->prompt_sig, NULL, 10), budget = ctx->max_context_tokens - fixed;
    size_t n = ctx->n_messages, cut = 0, half = n;
    int64_t tail = 0;
    int64_t *tok = calloc(n, sizeof(*tok));
    int *starts = calloc(n, sizeof(*starts)), found = 0;
    if (!tok || !starts) goto cleanup;
    for (size_t i = 0; i < n; i++) {
        int64_t seq;
        if (window_head(&ctx->messages[i], &starts[i], &seq, &tok[i])) goto cleanup;
        if (starts[i] && seq == prev) found = 1, cut = i;
    }
    if (!found) {
        /* A new anchor: the newest whole units within half the budget (at
         * least the newest unit the store gave). */
        for (size_t i = n; i-- > 0;) {
            tail += tok[i];
            if (!starts[i]) continue;
            if (tail > budget / 2 && half < n) break;
            half = i;
        }
        cut = half < n ? half : 0;
    }
    if (!cut) goto cleanup;
    for (size_t i = 0; i < cut; i++) free(ctx->messages[i].data);
    memmove(ctx->messages, ctx->messages + cut, (n - cut) * sizeof(*ctx->messages));
    ctx->n_messages = n - cut;
    ctx->window_start_seq += (int64_t)cut;
cleanup:
    free(tok);
    free(starts);
}

/* Everything after the lock is held (since locked_ms) and ctx read
 * (run_locked frees it). */
static int run_locked(ctxd_worker *w, const turn_request *req, const char *token, int64_t locked_ms,
                      store_context ctx, int64_t user_estimate, turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    const char *id = req->context_id;
    turn_history h = {0};
    llm_response r;
    char *system = NULL;
    int rc = CTXD_ERR;
    llm_response_init(&r);

    turn_lock_keeper keeper;
    turn_lock_keeper_init(&keeper, w, id, token);
    if (req->system) { /* this call's own system prompt (an SDK route's "system") */
        char *s = strdup(req->system);
        if (!s) {
            ctxd_error_set(&res->error, CTXD_E_NOMEM, "out of memory");
            goto cleanup;
        }
        free(ctx.system);
        ctx.system = s;
    }
    if (fold_if_needed(w, req, token, &keeper, user_estimate, &ctx, res)) goto cleanup;
    int64_t fixed = user_estimate + message_system_tokens(strlen(ctx.system));
    step_window(cfg, &ctx, fixed);
    if (ctx.total_messages + 2 + (int64_t)req->n_lead > cfg->max_messages &&
        ctx.max_messages == 0) {
        ctxd_error_set(&res->error, CTXD_E_CONTEXT_FULL,
                       "Context %s holds %" PRId64 " messages; at most %ld are allowed "
                       "(CTXD_MAX_MESSAGES); set max_messages on the context to keep only "
                       "the newest",
                       id, ctx.total_messages, cfg->max_messages);
        goto cleanup;
    }
    if (turn_history_parse(&h, id, ctx.messages, ctx.n_messages, req->n_lead + 1) ||
        !(system = system_prompt(&ctx, summary_room(&ctx, fixed)))) {
        ctxd_error_set(&res->error, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (check_budget(&ctx, &h, fixed, res)) goto cleanup;
    size_t n = h.n;
    for (size_t i = 0; i < req->n_lead; i++, n++) {
        h.msgs[n].role = req->lead[i].role;
        h.msgs[n].content = req->lead[i].content;
        h.msgs[n].content_len = req->lead[i].len;
        h.msgs[n].content_json = req->lead[i].json;
    }
    h.msgs[n].role = "user";
    h.msgs[n].content = req->message;
    h.msgs[n].content_len = req->message_len;
    h.msgs[n].content_json = req->message_json;
    llm_request lr = {
        .context_id = id,
        .system = system[0] ? system : NULL,
        .model = ctx.model[0] ? ctx.model : req->model,
        .max_tokens = req->max_tokens,
        .messages = h.msgs,
        .n_messages = n + 1,
        .on_delta = req->on_delta,
        .on_block = req->on_block,
        .extra_json = req->extra_json,
        .extra_openai = req->extra_openai,
        .anthropic_beta = req->anthropic_beta,
        .on_delta_arg = req->stream_arg,
        .on_tick = turn_lock_tick,
        .on_tick_arg = &keeper,
        /* The turn's tools, else the context's. */
        .tools_json = req->tools_json ? req->tools_json
                      : ctx.tools[0]  ? ctx.tools
                                      : NULL,
        .tool_choice_json = req->tools_json                      ? req->tool_choice_json
                            : ctx.tools[0] && ctx.tool_choice[0] ? ctx.tool_choice
                                                                 : NULL,
        .cache_prefix = 1,
    };
    if (req->on_start) {
        req->on_start(req->stream_arg, lr.model && *lr.model ? lr.model : cfg->model);
        res->started = 1;
    }
    if (llm_complete(w->llm, &lr, &r)) {
        if (keeper.lost)
            lost_lock(res, id, "the model worked");
        else
            llm_error(&res->error, &r);
        log_msg(LOG_WARN, "context %s: model call failed: %s", id, r.errstr);
        goto cleanup;
    }
    rc = commit(w, req, token, locked_ms, &ctx, &h, user_estimate, &r, res);
cleanup:
    turn_history_free(&h);
    free(system);
    llm_response_free(&r);
    store_context_free(&ctx);
    return rc;
}

int turn_run(ctxd_worker *w, const turn_request *req, turn_result *res) {
    char token[33];
    store_context ctx;
    int64_t locked_ms;
    /* The new message is estimated; the read script adds the system
     * prompt's share and the summary's known count. */
    int64_t estimate = message_content_tokens(req->message, req->message_len, req->message_json);
    for (size_t i = 0; i < req->n_lead; i++)
        estimate +=
            message_content_tokens(req->lead[i].content, req->lead[i].len, req->lead[i].json);
    int rc = turn_lock_begin(w, req->context_id, req->idem_key, req->fingerprint, STORE_TURN_WINDOW,
                             estimate, token, &ctx, &locked_ms, res);
    if (rc != CTXD_OK || res->replayed) return rc;
    rc = run_locked(w, req, token, locked_ms, ctx, estimate, res);
    /* The append released the lock on success; make sure on every path. */
    if (rc != CTXD_OK) store_lock_release(w->st, req->context_id, token);
    return rc;
}
