/* turn_lock.c: waiting in line for a context's turn lock, and keeping it alive. */
#include <stdio.h>
#include <string.h>

#include "ctxd/context.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"
#include "turn_int.h"

/* A waiting turn looks again at least this often even when nobody wakes
 * it: a lock whose holder died expires without a release, and a first
 * waiter that died keeps its place until its entry expires. */
#define WAIT_SLICE_MS 250
/* Redis may end a BLPOP this much after its timeout (its timers tick at
 * hz 10): the connection's own timeout must leave room for that. */
#define WAIT_MARGIN_MS 200
/* A waiter that stops looking (killed) loses its place after this, and
 * never later than a lock left by a killed holder expires. */
#define QUEUE_TTL_MS 3000

/* How long a waiter's place lasts; 0 (no queueing) for turns that never
 * wait. */
static int queue_ttl(const ctxd_config *cfg) {
    if (cfg->lock_wait_ms <= 0) return 0;
    return cfg->lock_ttl_ms < QUEUE_TTL_MS ? cfg->lock_ttl_ms : QUEUE_TTL_MS;
}

/* Sleep until woken or for up to left ms (a slice of it). */
static int wait_turn(ctxd_worker *w, const char *id, const char *token, int64_t left) {
    int ms = left < WAIT_SLICE_MS ? (int)left : WAIT_SLICE_MS;
    int most = w->cfg->redis_timeout_ms - WAIT_MARGIN_MS, woken;
    if (most < 10) { /* too short a connection timeout to block on: look often */
        util_sleep_ms(ms < 10 ? ms : 10);
        return CTXD_OK;
    }
    return store_turn_wait(w->st, id, token, ms < most ? ms : most, &woken);
}

/* Going by the average turn, the turns ahead cannot finish within left ms. */
static int too_far_back(const store_turn_queue *q, int64_t left) {
    return q->turn_ms > 0 && q->ahead * q->turn_ms > left;
}

/* Take the lock and read, waiting in the context's queue while other turns
 * hold the lock or come first: until the lock wait is over, or earlier
 * when the turns ahead cannot be done by then. */
static int lock_read(ctxd_worker *w, const char *id, const char *token, const char *idem_key,
                     store_turn_mode mode, int64_t fixed_tokens, store_context *ctx,
                     turn_result *res) {
    const ctxd_config *cfg = w->cfg;
    int64_t t0 = util_mono_us(), deadline = util_mono_ms() + cfg->lock_wait_ms;
    store_turn_queue q = {.ttl_ms = queue_ttl(cfg)};
    int waited = 0;
    for (;;) {
        if (store_turn_read(w->st, id, token, cfg->lock_ttl_ms, idem_key, mode, fixed_tokens,
                            cfg->summary_batch, &q, ctx) == CTXD_OK) {
            if (waited) metrics_lock_wait(util_mono_us() - t0);
            return CTXD_OK;
        }
        if (w->st->err != CTXD_E_BUSY) break;
        waited = 1;
        int64_t left = deadline - util_mono_ms();
        if (left <= 0 || too_far_back(&q, left)) break;
        if (wait_turn(w, id, token, left)) break;
    }
    if (w->st->err == CTXD_E_BUSY) {
        metrics_lock_wait(util_mono_us() - t0);
        metrics_lock_busy();
        ctxd_error_set(&res->error, CTXD_E_BUSY,
                       "Context %s is busy with another turn; retry after the "
                       "Retry-After delay",
                       id);
    } else {
        context_store_error(&res->error, w, id);
    }
    /* Give the place up; if this fails too, the entry expires. */
    if (waited && q.ttl_ms > 0) store_turn_leave(w->st, id, token);
    return CTXD_ERR;
}

int turn_lock_begin(ctxd_worker *w, const char *id, const char *idem_key, uint64_t fp,
                    store_turn_mode mode, int64_t fixed_tokens, char token[33], store_context *ctx,
                    int64_t *locked_ms, turn_result *res) {
    memset(res, 0, sizeof(*res));
    if (util_token(token))
        return ctxd_error_set(&res->error, CTXD_E_NO_RANDOMNESS, "no randomness for a lock token");
    if (lock_read(w, id, token, idem_key, mode, fixed_tokens, ctx, res)) return CTXD_ERR;
    *locked_ms = util_mono_ms();
    if (!ctx->idem_record.data) return CTXD_OK;
    int rc = turn_idem_replay(&ctx->idem_record, mode == STORE_TURN_APPEND, fp, idem_key, res);
    store_context_free(ctx);
    return rc;
}

int64_t turn_lock_held_ms(int64_t locked_ms) {
    int64_t ms = util_mono_ms() - locked_ms;
    return ms > 0 ? ms : 1;
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
