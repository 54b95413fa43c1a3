/* store: every Redis key and command of ctxd (the README documents the layout). */
#ifndef CTXD_STORE_H
#define CTXD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/common.h"
#include "ctxd/config.h"
#include "ctxd/util.h"

/* Why the last call failed (store->err). */
typedef enum {
    STORE_ERR_NONE = 0,
    STORE_ERR_IO,        /* Redis unreachable or the connection broke */
    STORE_ERR_REDIS,     /* Redis answered an error (e.g. OOM, NOSCRIPT) */
    STORE_ERR_NOT_FOUND, /* the context does not exist */
    STORE_ERR_BUSY,      /* the context's lock is held by someone else */
    STORE_ERR_LOCK_LOST, /* our lock expired or was taken over */
    STORE_ERR_CONFLICT,  /* history moved on since it was read */
    STORE_ERR_TOO_LARGE, /* the result would exceed a size limit */
    STORE_ERR_EXISTS,    /* a create found the key already there */
    STORE_ERR_NOMEM
} store_err;

/* One Redis connection: not thread-safe, one per worker thread. It connects
 * lazily and reconnects after any error. */
typedef struct store {
    int err;                      /* store_err of the last failure */
    char errstr[CTXD_ERRSTR_LEN]; /* human sentence naming the Redis address */
    void *impl;                   /* private */
} store;

/* A message as stored: its JSON text (role, content, seq, created_at...). */
typedef struct store_blob {
    char *data; /* owned, NUL-terminated */
    size_t len;
} store_blob;

typedef struct store_context {
    char id[UTIL_UUID_LEN + 1];
    char created_at[UTIL_ISO_LEN];
    char last_updated[UTIL_ISO_LEN];
    char *system;           /* owned, "" when none */
    char *model;            /* owned, "" when none */
    int64_t next_seq;       /* seq the next stored message gets */
    int64_t first_seq;      /* seq of the oldest message still in the list */
    int64_t ttl_seconds;    /* 0: no expiry */
    int64_t total_messages; /* messages in the list */
    char strategy[16];      /* all, window or summarize */
    int64_t max_context_tokens;
    int64_t max_messages; /* 0: keep everything (up to the hard cap) */
    char *summary;        /* owned, "" when none */
    int64_t summary_upto; /* the summary covers seqs <= this */
    int64_t summary_tokens;
    char prompt_sig[64];   /* what the last turn sent, see turn.c */
    int64_t prompt_tokens; /* its input tokens as the upstream counted */

    /* store_turn_read only: messages that left the window but are not in the
     * summary yet (oldest first), and the seq the window starts at. */
    store_blob *fold;
    size_t n_fold;
    int64_t window_start_seq;
    char *idem_record; /* the unexpired idempotency record asked for, or NULL */

    store_blob *messages; /* owned; the range asked for, oldest first */
    size_t n_messages;

    /* State: keys and their JSON-encoded values, parallel arrays, owned. */
    store_blob *state_keys;
    store_blob *state_values;
    size_t n_state;
} store_context;

/* What store_read should fetch. */
#define STORE_READ_MESSAGES 1
#define STORE_READ_STATE 2

/* A context to create. Everything is borrowed. */
typedef struct store_new_context {
    const char *id;
    int64_t now_ms;
    const char *system; /* may be NULL */
    const char *model;  /* may be NULL */
    int64_t ttl_seconds;
    const char *strategy;
    int64_t max_context_tokens;
    int64_t max_messages;
    const store_blob *state_keys; /* JSON-encoded values in state_values */
    const store_blob *state_values;
    size_t n_state;
} store_new_context;

/* Create a store for cfg (borrowed; must outlive it). No I/O. Returns NULL
 * when out of memory. Free with store_free (accepts NULL). */
store *store_new(const ctxd_config *cfg);
void store_free(store *s);

/* Round trip to Redis. CTXD_OK, or CTXD_ERR with s->err/errstr. */
int store_ping(store *s);

/* Tell every store in the process that Redis was seen failing, so idle
 * connections are replaced before their next use. */
void store_invalidate_all(void);

/* Create a context. CTXD_ERR with STORE_ERR_EXISTS if the id is taken. */
int store_create(store *s, const store_new_context *nc);

/* Idempotent create: claim key for new_id. Returns CTXD_OK and sets
 * *claimed = 1 if this call owns the key; otherwise *claimed = 0 and
 * existing_id / existing_fp receive the first claim's context id and request
 * fingerprint. */
int store_create_claim(store *s, const char *key, uint64_t fp, const char *new_id, int ttl_s,
                       int *claimed, char existing_id[UTIL_UUID_LEN + 1], uint64_t *existing_fp);

/* Forget a create claim (the create that followed it failed). */
int store_create_unclaim(store *s, const char *key);

/* Read a context in one round trip. what: STORE_READ_* flags. Messages:
 * limit <= 0 means all; with before > 0 only messages with seq < before,
 * the newest limit of them. CTXD_ERR with STORE_ERR_NOT_FOUND if absent.
 * On success out owns memory; free with store_context_free. */
int store_read(store *s, const char *id, int what, long limit, int64_t before, store_context *out);
void store_context_free(store_context *c); /* accepts NULL */

/* Take the turn lock for token and read what the turn needs, reading only
 * the tail of the history (see lua_turn_read in store.c), in one round trip.
 * fixed_tokens: the new message; fold_max: most messages to return for
 * summarizing; idem_key (or NULL): its record comes back in
 * out->idem_record. CTXD_ERR with STORE_ERR_BUSY when another owner holds
 * the lock, STORE_ERR_NOT_FOUND when there is no such context (no lock
 * taken then). */
int store_turn_read(store *s, const char *id, const char *token, int lock_ttl_ms,
                    const char *idem_key, int64_t fixed_tokens, long fold_max, store_context *out);

/* Change settings: fields[i] = values[i] in the meta hash (names checked by
 * the caller). CTXD_ERR with NOT_FOUND. */
int store_set_settings(store *s, const char *id, const char *const *fields,
                       const char *const *values, size_t n, int64_t now_ms);

/* Store a folded summary covering seqs <= upto, only if the summary still
 * covers expected_upto (else CTXD_ERR with STORE_ERR_CONFLICT). */
int store_set_summary(store *s, const char *id, int64_t expected_upto, int64_t upto,
                      const char *text, int64_t tokens, int64_t now_ms);

typedef struct store_list_item {
    char id[UTIL_UUID_LEN + 1];
    char created_at[UTIL_ISO_LEN];
    char last_updated[UTIL_ISO_LEN];
    int64_t activity_ms; /* index score: last write */
    int64_t message_count;
    store_blob last_message; /* JSON text, data NULL when none */
} store_list_item;

/* Contexts by last activity, newest first, strictly after the cursor
 * (cursor_ms 0: from the start). *items is owned by the caller: free with
 * store_list_free. */
int store_list(store *s, long limit, int64_t cursor_ms, const char *cursor_id,
               store_list_item **items, size_t *n);
void store_list_free(store_list_item *items, size_t n);

/* Delete every key of a context. *deleted = 1 if it existed. */
int store_delete(store *s, const char *id, int *deleted);

/* Turn lock: SET NX PX with an owner token. CTXD_ERR with STORE_ERR_BUSY when
 * held by someone else. Renew and release only act if token still owns it;
 * renew fails with STORE_ERR_LOCK_LOST otherwise. */
int store_lock_acquire(store *s, const char *id, const char *token, int ttl_ms);
int store_lock_renew(store *s, const char *id, const char *token, int ttl_ms);
int store_lock_release(store *s, const char *id, const char *token);

/* The idempotency record stored for key on context id, if any and not
 * expired. *record gets a malloc'd copy (free it) or NULL. */
int store_idem_get(store *s, const char *id, const char *key, char **record);

/* An append of messages, committed atomically with the idempotency record and
 * the lock release. Borrowed fields. */
typedef struct store_append_req {
    const char *id;
    const char *token;         /* lock owner; must still hold the lock */
    int64_t expected_next_seq; /* from the read under the lock */
    int64_t now_ms;
    const store_blob *messages; /* JSON texts, seqs from expected_next_seq */
    size_t n_messages;
    const char *idem_key; /* may be NULL */
    const char *idem_record;
    int idem_ttl_s;
    long max_messages;      /* hard cap when the context does not trim */
    const char *prompt_sig; /* may be NULL: leave the last turn's figures */
    int64_t prompt_tokens;
} store_append_req;

/* CTXD_ERR with NOT_FOUND (deleted meanwhile), LOCK_LOST, CONFLICT or
 * TOO_LARGE (max_messages) and nothing written; CTXD_OK when appended. The
 * lock is released in both cases if token owns it. */
int store_append(store *s, const store_append_req *req);

/* Replace the whole state. CTXD_ERR with NOT_FOUND or TOO_LARGE. */
int store_state_put(store *s, const char *id, const store_blob *keys, const store_blob *values,
                    size_t n, size_t max_bytes, int64_t now_ms);

/* Merge into the state: values[i] == NULL deletes keys[i]. The size check is
 * on the merged result; nothing changes when it fails. */
int store_state_patch(store *s, const char *id, const store_blob *keys, const store_blob *values,
                      size_t n, size_t max_bytes, int64_t now_ms);

#endif
