/* turn_append.c: messages appended without a model call, under the turn's lock and idempotency. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/context.h"
#include "ctxd/message.h"
#include "ctxd/util.h"
#include "turn_int.h"

/* The stored form of each new message, seqs from first_seq on. CTXD_ERR
 * when out of memory (free *out with blobs_free either way). */
static int encode_all(const turn_append_request *req, int64_t first_seq, int64_t now,
                      store_blob **out) {
    *out = calloc(req->n, sizeof(**out));
    if (!*out) return CTXD_ERR;
    for (size_t i = 0; i < req->n; i++) {
        store_blob *b = &(*out)[i];
        turn_content c = {req->contents[i], req->content_lens[i],
                          req->content_json ? req->content_json[i] : 0,
                          req->metadatas ? req->metadatas[i] : NULL,
                          req->metadata_lens ? req->metadata_lens[i] : 0};
        b->data =
            turn_message_json(first_seq + (int64_t)i, req->roles[i], &c, now,
                              message_content_tokens(c.text, c.len, c.json), NULL, NULL, &b->len);
        if (!b->data) return CTXD_ERR;
    }
    return CTXD_OK;
}

static void blobs_free(store_blob *b, size_t n) {
    if (!b) return;
    for (size_t i = 0; i < n; i++) free(b[i].data);
    free(b);
}

/* Body of turn_append once the lock is held (since locked_ms) and ctx read. */
static int append_locked(ctxd_worker *w, const turn_append_request *req, const char *token,
                         int64_t locked_ms, const store_context *ctx, turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    const char *id = req->context_id;
    store_blob *blobs = NULL;
    char *rec = NULL;
    int rc = CTXD_ERR;
    if (ctx->max_messages == 0 && ctx->total_messages + (int64_t)req->n > cfg->max_messages)
        return ctxd_error_set(&res->error, CTXD_E_CONTEXT_FULL,
                              "Context %s holds %" PRId64 " messages; %zu more would exceed "
                              "the limit of %ld (CTXD_MAX_MESSAGES)",
                              id, ctx->total_messages, req->n, cfg->max_messages);
    int64_t now = util_now_ms();
    if (encode_all(req, ctx->next_seq, now, &blobs) ||
        (req->idem_key && !(rec = turn_idem_record_append(cfg->idempotency_ttl_s, req->fingerprint,
                                                          req->n, ctx->next_seq)))) {
        ctxd_error_set(&res->error, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    store_append_req ar = {
        .id = id,
        .token = token,
        .expected_next_seq = ctx->next_seq,
        .now_ms = now,
        .messages = blobs,
        .n_messages = req->n,
        .idem_key = req->idem_key,
        .idem_record = {rec, rec ? strlen(rec) : 0},
        .idem_ttl_s = cfg->idempotency_ttl_s,
        .max_messages = cfg->max_messages,
        .held_ms = turn_lock_held_ms(locked_ms),
        .if_match = req->if_match,
    };
    if (store_append(w->st, &ar)) {
        context_store_error(&res->error, w, id);
        goto cleanup;
    }
    res->appended = req->n;
    res->first_seq = ctx->next_seq;
    rc = CTXD_OK;
cleanup:
    blobs_free(blobs, req->n);
    free(rec);
    return rc;
}

int turn_append(ctxd_worker *w, const turn_append_request *req, turn_result *res) {
    char token[33];
    store_context ctx;
    int64_t locked_ms;
    int rc = turn_lock_begin(w, req->context_id, req->idem_key, req->fingerprint, STORE_TURN_APPEND,
                             0, token, &ctx, &locked_ms, res);
    if (rc != CTXD_OK || res->replayed) return rc;
    rc = append_locked(w, req, token, locked_ms, &ctx, res);
    if (rc != CTXD_OK) store_lock_release(w->st, req->context_id, token);
    store_context_free(&ctx);
    return rc;
}
