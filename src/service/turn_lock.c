/* turn_lock.c: waiting for a context's turn lock, keeping it alive, and store failures. */
#include <stdio.h>
#include <string.h>

#include "ctxd/context.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"
#include "turn_int.h"

/* Take the lock and read, waiting while another owner holds it. */
static int lock_read(ctxd_worker *w, const char *id, const char *token, const char *idem_key,
                     store_turn_mode mode, int64_t fixed_tokens, store_context *ctx,
                     turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    int64_t t0 = util_mono_us(), deadline = util_mono_ms() + cfg->lock_wait_ms;
    int pause = 5, waited = 0;
    for (;;) {
        if (store_turn_read(w->st, id, token, cfg->lock_ttl_ms, idem_key, mode, fixed_tokens,
                            cfg->summary_batch, ctx) == CTXD_OK) {
            if (waited) metrics_lock_wait(util_mono_us() - t0);
            return CTXD_OK;
        }
        waited = 1;
        if (w->st->err != CTXD_E_BUSY) {
            context_store_error(&res->error, w, id);
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
    return ctxd_error_set(&res->error, CTXD_E_BUSY,
                          "Context %s is busy with another turn; retry after the "
                          "Retry-After delay",
                          id);
}

int turn_lock_begin(ctxd_worker *w, const char *id, const char *idem_key, uint64_t fp,
                    store_turn_mode mode, int64_t fixed_tokens, char token[33], store_context *ctx,
                    turn_result *res) {
    memset(res, 0, sizeof(*res));
    if (util_token(token))
        return ctxd_error_set(&res->error, CTXD_E_NO_RANDOMNESS, "no randomness for a lock token");
    if (lock_read(w, id, token, idem_key, mode, fixed_tokens, ctx, res)) return CTXD_ERR;
    if (!ctx->idem_record.data) return CTXD_OK;
    int rc = turn_idem_replay(&ctx->idem_record, mode == STORE_TURN_APPEND, fp, idem_key, res);
    store_context_free(ctx);
    return rc;
}

void turn_lock_keeper_init(turn_lock_keeper *k, ctxd_worker *w, const char *id, const char *token) {
    k->w = w;
    k->id = id;
    k->token = token;
    k->last_renew = util_mono_ms();
    k->lost = 0;
}

/* Renew every third of the lock's TTL; abort the call once it is lost. */
int turn_lock_tick(void *keeper) {
    turn_lock_keeper *k = keeper;
    const ctxd_config *cfg = k->w->cfg;
    int64_t now = util_mono_ms();
    if (now - k->last_renew < cfg->lock_ttl_ms / 3) return CTXD_OK;
    if (store_lock_renew(k->w->st, k->id, k->token, cfg->lock_ttl_ms)) {
        if (k->w->st->err == CTXD_E_LOCK_LOST) {
            k->lost = 1;
            return CTXD_ERR;
        }
        return CTXD_OK; /* Redis hiccup: try again at the next tick */
    }
    k->last_renew = now;
    return CTXD_OK;
}
