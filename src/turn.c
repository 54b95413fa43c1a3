/* turn.c: a turn runs under a Redis lock and commits user message + reply together. */
#include "ctxd/turn.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/log.h"
#include "ctxd/util.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static void set_error(turn_result *res, int status, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void set_error(turn_result *res, int status, const char *code,
                      const char *fmt, ...) {
    va_list ap;
    res->status = status;
    snprintf(res->code, sizeof(res->code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(res->errstr, sizeof(res->errstr), fmt, ap);
    va_end(ap);
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
    default:
        set_error(res, 503, "redis_unavailable", "%s", st->errstr);
        res->retry_after_s = 1;
        break;
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
static int replay(const char *record, uint64_t fp, const char *key,
                  turn_result *res) {
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
static int check_idem(ctxd_worker *w, const char *id, const char *key,
                      uint64_t fp, turn_result *res) {
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

/* Take the context's lock, waiting up to lock_wait_ms. */
static int lock_or_fail(ctxd_worker *w, const char *id, const char *token,
                        turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    int64_t deadline = util_mono_ms() + cfg->lock_wait_ms;
    int pause = 5;
    for (;;) {
        if (store_lock_acquire(w->st, id, token, cfg->lock_ttl_ms) == CTXD_OK)
            return CTXD_OK;
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
    set_error(res, 409, "context_busy",
              "Context %s is busy with another turn; retry after the "
              "Retry-After delay",
              id);
    res->retry_after_s = 1;
    return CTXD_ERR;
}

/* The stored form of one message. Returns a JSON text (free it) or NULL. */
static char *message_json(int64_t seq, const char *role, const char *content,
                          size_t len, int64_t now_ms, const llm_response *r) {
    char iso[UTIL_ISO_LEN];
    util_iso8601(now_ms, iso);
    json_object *o = json_object_new_object();
    if (!o) return NULL;
    json_object_object_add(o, "seq", json_object_new_int64(seq));
    json_object_object_add(o, "role", json_object_new_string(role));
    json_object_object_add(o, "content", json_object_new_string_len(content, (int)len));
    json_object_object_add(o, "created_at", json_object_new_string(iso));
    if (r) {
        json_object *u = json_object_new_object();
        json_object_object_add(u, "input_tokens", r->input_tokens >= 0 ? json_object_new_int64(r->input_tokens) : NULL);
        json_object_object_add(u, "output_tokens", r->output_tokens >= 0 ? json_object_new_int64(r->output_tokens) : NULL);
        json_object_object_add(o, "usage", u);
        if (r->model[0]) json_object_object_add(o, "model", json_object_new_string(r->model));
        if (r->stop_reason[0])
            json_object_object_add(o, "stop_reason", json_object_new_string(r->stop_reason));
    }
    char *out = strdup(json_object_to_json_string_ext(o, JSON_FLAGS));
    json_object_put(o);
    return out;
}

/* The turn's answer body {"context_id","ai_response","usage"}. */
static char *answer_json(const char *id, const llm_response *r) {
    json_object *o = json_object_new_object();
    if (!o) return NULL;
    json_object_object_add(o, "context_id", json_object_new_string(id));
    json_object_object_add(o, "ai_response", json_object_new_string_len(r->text, (int)r->text_len));
    json_object *u = json_object_new_object();
    json_object_object_add(u, "input_tokens", r->input_tokens >= 0 ? json_object_new_int64(r->input_tokens) : NULL);
    json_object_object_add(u, "output_tokens", r->output_tokens >= 0 ? json_object_new_int64(r->output_tokens) : NULL);
    json_object_object_add(o, "usage", u);
    if (r->model[0]) json_object_object_add(o, "model", json_object_new_string(r->model));
    char *out = strdup(json_object_to_json_string_ext(o, JSON_FLAGS));
    json_object_put(o);
    return out;
}

/* History for the model: parse each stored message. parsed[] keeps the json
 * objects alive while msgs[] borrows their strings. */
static int build_history(const store_context *ctx, const char *text, size_t len,
                         json_object **parsed, llm_message *msgs, size_t *n) {
    size_t k = 0;
    for (size_t i = 0; i < ctx->n_messages; i++) {
        json_object *o = json_tokener_parse(ctx->messages[i].data);
        parsed[i] = o;
        json_object *role, *content;
        if (!o || !json_object_object_get_ex(o, "role", &role) ||
            !json_object_object_get_ex(o, "content", &content)) {
            log_msg(LOG_WARN, "context %s: skipping unreadable stored message %zu",
                    ctx->id, i);
            continue;
        }
        msgs[k].role = json_object_get_string(role);
        msgs[k].content = json_object_get_string(content);
        msgs[k].content_len = (size_t)json_object_get_string_len(content);
        k++;
    }
    msgs[k].role = "user";
    msgs[k].content = text;
    msgs[k].content_len = len;
    *n = k + 1;
    return CTXD_OK;
}

static void llm_error(turn_result *res, const llm_response *r) {
    int ra = r->retry_after_ms > 0 ? (int)((r->retry_after_ms + 999) / 1000) : 0;
    switch (r->err) {
    case LLM_ERR_AUTH:
        set_error(res, 502, "upstream_auth", "%s", r->errstr);
        break;
    case LLM_ERR_RATE:
        set_error(res, 429, "upstream_rate_limited", "%s", r->errstr);
        res->retry_after_s = ra ? ra : 1;
        break;
    case LLM_ERR_OVERLOADED:
        set_error(res, 503, "upstream_overloaded", "%s", r->errstr);
        res->retry_after_s = ra ? ra : 1;
        break;
    case LLM_ERR_TIMEOUT:
        set_error(res, 504, "upstream_timeout", "%s", r->errstr);
        break;
    case LLM_ERR_CONNECT:
        set_error(res, 502, "upstream_unreachable", "%s", r->errstr);
        break;
    case LLM_ERR_BAD_REQUEST:
        set_error(res, 502, "upstream_rejected", "%s", r->errstr);
        break;
    case LLM_ERR_CONFIG:
        set_error(res, 503, "provider_unavailable", "%s", r->errstr);
        break;
    default:
        set_error(res, 502, "upstream_error", "%s", r->errstr);
        break;
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

/* Everything after the lock is held. */
static int run_locked(ctxd_worker *w, const turn_request *req, const char *token,
                      turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    const char *id = req->context_id;
    store_context ctx;
    json_object **parsed = NULL;
    llm_message *msgs = NULL;
    llm_response r;
    char *user = NULL, *reply = NULL, *body = NULL, *rec = NULL;
    int rc = CTXD_ERR;
    llm_response_init(&r);

    if (check_idem(w, id, req->idem_key, req->fingerprint, res)) return res->status < 400 ? CTXD_OK : CTXD_ERR;
    if (store_read(w->st, id, STORE_READ_MESSAGES, 0, 0, &ctx)) {
        store_error(res, w->st, id);
        return CTXD_ERR;
    }
    if (ctx.total_messages + 2 > cfg->max_messages) {
        set_error(res, 413, "context_full",
                  "Context %s holds %" PRId64 " messages; at most %ld are "
                  "allowed (CTXD_MAX_MESSAGES)",
                  id, ctx.total_messages, cfg->max_messages);
        goto cleanup;
    }
    parsed = calloc(ctx.n_messages + 1, sizeof(*parsed));
    msgs = calloc(ctx.n_messages + 1, sizeof(*msgs));
    if (!parsed || !msgs) {
        set_error(res, 503, "out_of_memory", "out of memory");
        goto cleanup;
    }
    size_t n = 0;
    build_history(&ctx, req->message, req->message_len, parsed, msgs, &n);

    tick_state ts = {w, id, token, util_mono_ms(), 0};
    llm_request lr = {
        .context_id = id,
        .system = ctx.system[0] ? ctx.system : NULL,
        .model = ctx.model[0] ? ctx.model : NULL,
        .max_tokens = 0,
        .messages = msgs,
        .n_messages = n,
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

    int64_t now = util_now_ms();
    user = message_json(ctx.next_seq, "user", req->message, req->message_len, now, NULL);
    reply = message_json(ctx.next_seq + 1, "assistant", r.text, r.text_len, now, &r);
    body = answer_json(id, &r);
    if (body && req->idem_key) rec = idem_record(cfg->idempotency_ttl_s, req->fingerprint, 200, body);
    if (!user || !reply || !body || (req->idem_key && !rec)) {
        set_error(res, 503, "out_of_memory", "out of memory");
        goto cleanup;
    }
    store_blob blobs[2] = {{user, strlen(user)}, {reply, strlen(reply)}};
    store_append_req ar = {
        .id = id, .token = token, .expected_next_seq = ctx.next_seq,
        .now_ms = now, .messages = blobs, .n_messages = 2,
        .idem_key = req->idem_key, .idem_record = rec,
        .idem_ttl_s = cfg->idempotency_ttl_s, .max_messages = cfg->max_messages,
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
    if (parsed)
        for (size_t i = 0; i < ctx.n_messages; i++) json_object_put(parsed[i]);
    free(parsed);
    free(msgs);
    free(user);
    free(reply);
    free(body);
    free(rec);
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
        set_error(res, 503, "out_of_memory", "no randomness for a lock token");
        return CTXD_ERR;
    }
    if (lock_or_fail(w, req->context_id, token, res)) return CTXD_ERR;
    int rc = run_locked(w, req, token, res);
    /* The append released the lock on success; make sure on every path. */
    if (rc != CTXD_OK || res->replayed) store_lock_release(w->st, req->context_id, token);
    return rc;
}

/* Body of turn_append once the lock is held. */
static int append_locked(ctxd_worker *w, const turn_append_request *req,
                         const char *token, turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    const char *id = req->context_id;
    store_context ctx;
    store_blob *blobs = NULL;
    char *body = NULL, *rec = NULL;
    int rc = CTXD_ERR;

    if (check_idem(w, id, req->idem_key, req->fingerprint, res)) return res->status < 400 ? CTXD_OK : CTXD_ERR;
    if (store_read(w->st, id, 0, 0, 0, &ctx)) {
        store_error(res, w->st, id);
        return CTXD_ERR;
    }
    if (ctx.total_messages + (int64_t)req->n > cfg->max_messages) {
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
        blobs[i].data = message_json(ctx.next_seq + (int64_t)i, req->roles[i],
                                     req->contents[i], req->content_lens[i], now, NULL);
        if (!blobs[i].data) goto oom;
        blobs[i].len = strlen(blobs[i].data);
    }
    size_t blen = 128;
    if (!(body = malloc(blen))) goto oom;
    snprintf(body, blen, "{\"context_id\":\"%s\",\"appended\":%zu,\"first_seq\":%" PRId64 "}",
             id, req->n, ctx.next_seq);
    if (req->idem_key && !(rec = idem_record(cfg->idempotency_ttl_s, req->fingerprint, 201, body)))
        goto oom;
    store_append_req ar = {
        .id = id, .token = token, .expected_next_seq = ctx.next_seq,
        .now_ms = now, .messages = blobs, .n_messages = req->n,
        .idem_key = req->idem_key, .idem_record = rec,
        .idem_ttl_s = cfg->idempotency_ttl_s, .max_messages = cfg->max_messages,
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
        set_error(res, 503, "out_of_memory", "no randomness for a lock token");
        return CTXD_ERR;
    }
    if (lock_or_fail(w, req->context_id, token, res)) return CTXD_ERR;
    int rc = append_locked(w, req, token, res);
    if (rc != CTXD_OK || res->replayed) store_lock_release(w->st, req->context_id, token);
    return rc;
}
