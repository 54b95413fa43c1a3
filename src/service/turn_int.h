/* turn_int.h: what the turn's files share: lock waits, idempotency records, history, summaries. */
#ifndef CTXD_TURN_INT_H
#define CTXD_TURN_INT_H

#include "ctxd/store.h"
#include "ctxd/turn.h"

/* ---- The lock (turn_lock.c) ---- */

/* Start a turn or an append: clear res, make a lock token, take the
 * context's lock and read it (store_turn_read). While other turns hold the
 * lock or came first it waits in the context's queue, woken when its turn
 * comes, up to the configured lock wait, or less when the turns ahead
 * cannot be done within it going by their average. Returns CTXD_ERR with
 * res->error (CTXD_E_BUSY after the wait, having left the queue); CTXD_OK
 * with res->replayed set when idem_key was answered before (res filled
 * from the record, no lock taken); else CTXD_OK with the lock held for
 * token since *locked_ms (util_mono_ms) and ctx filled (free it with
 * store_context_free). */
int turn_lock_begin(ctxd_worker *w, const char *id, const char *idem_key, uint64_t fp,
                    store_turn_mode mode, int64_t fixed_tokens, char token[33], store_context *ctx,
                    int64_t *locked_ms, turn_result *res);

/* How long the lock has been held since locked_ms (from turn_lock_begin),
 * for the context's average turn: at least 1 ms (0 would not count). */
int64_t turn_lock_held_ms(int64_t locked_ms);

/* Keeps a turn's lock alive while the model works: pass turn_lock_tick and
 * a keeper as the model call's on_tick. */
typedef struct turn_lock_keeper {
    ctxd_worker *w;
    const char *id, *token;
    int64_t last_renew;
    int lost; /* the lock was lost: the call was aborted */
} turn_lock_keeper;

void turn_lock_keeper_init(turn_lock_keeper *k, ctxd_worker *w, const char *id, const char *token);
int turn_lock_tick(void *keeper);

/* ---- Idempotency records (turn_idem.c) ---- */

/* A record for a turn's reply or an append's outcome, expiring ttl_s from
 * now. Returns a string to store (caller frees; *len bytes, the reply text
 * may hold NULs) or NULL when out of memory. */
char *turn_idem_record_reply(int ttl_s, uint64_t fp, const turn_reply *reply, size_t *len);
char *turn_idem_record_append(int ttl_s, uint64_t fp, size_t appended, int64_t first_seq);

/* Answer from a stored record of a turn (append 0) or an append (append 1):
 * fills res (replayed set) and returns CTXD_OK, or CTXD_ERR with
 * res->error: CTXD_E_IDEM_KEY_REUSED when the key came with another request
 * (fp or kind differs), CTXD_E_REDIS for a record that cannot be read. */
int turn_idem_replay(const store_blob *record, int append, uint64_t fp, const char *key,
                     turn_result *res);

/* ---- History decoded for a model call (turn_history.c) ---- */

typedef struct turn_history {
    char *arena;       /* the decoded texts */
    llm_message *msgs; /* n stored + room for one more; point into arena */
    int64_t *seqs;
    size_t n;
    int64_t tokens;            /* what the stored messages count */
    int64_t last_reply_tokens; /* the newest message's, if an assistant's; else -1 */
} turn_history;

/* What one new message holds (borrowed): text, or the JSON text of content
 * blocks (json 1), and the client's metadata (JSON text, or NULL). */
typedef struct turn_content {
    const char *text;
    size_t len;
    int json;
    const char *metadata;
    size_t metadata_len;
} turn_content;

/* The stored form of one message (see message.h) with id (NULL: a new
 * one): a JSON text of *out_len bytes (caller frees), or NULL when out of
 * memory or randomness. r: a reply's figures (model, stop reason, usage),
 * or NULL for a message the client wrote. */
char *turn_message_json(int64_t seq, const char *role, const turn_content *c, int64_t now_ms,
                        int64_t tokens, const llm_response *r, const char *id, size_t *out_len);

/* Decode stored message JSON into h, with room for that many more
 * messages after them (unreadable ones are skipped and logged). CTXD_ERR when out of memory. Free with turn_history_free either
 * way. */
int turn_history_parse(turn_history *h, const char *id, const store_blob *blobs, size_t n,
                       size_t room);
void turn_history_free(turn_history *h);

/* Fold the messages that left the window (c->fold) into the summary, or
 * with condense only shorten the summary, asking the model for at most
 * max_tokens (the summary's share of the context's budget), with the
 * keeper's tick during the model call. Returns 1 if the summary changed; a
 * failure is logged and retried on a later turn, never failing the turn. */
int turn_fold_summary(ctxd_worker *w, const store_context *c, turn_lock_keeper *keeper,
                      int64_t max_tokens, int condense);

#endif
