/* store: every Redis key and command of ctxd (the README documents the layout). */
#ifndef CTXD_STORE_H
#define CTXD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/common.h"
#include "ctxd/config.h"
#include "ctxd/error.h"
#include "ctxd/util.h"

/* One Redis connection: not thread-safe, one per worker thread. It connects
 * lazily and reconnects after any error. Every failing call leaves a
 * ctxd_err in err (CTXD_E_REDIS for Redis trouble, CTXD_E_NOMEM, or what the
 * operation documents) and a sentence in errstr naming the Redis address
 * (never a password). */
#define STORE_TENANT_MAX 64

typedef struct store {
    ctxd_err err;
    char errstr[CTXD_ERRSTR_LEN];
    void *impl; /* private */
    /* Whose contexts every call reaches: each key this store spells holds
     * the tenant (store_set_tenant; "default" from store_new). */
    char tenant[STORE_TENANT_MAX + 1];
} store;

/* A stored message: its JSON text (see message.h). */
typedef struct store_blob {
    char *data; /* owned, NUL-terminated */
    size_t len;
} store_blob;

/* A context's settings. In a store_new_context every field is used; in a
 * change (store_set_settings) NULL strings and negative numbers mean "leave
 * as it is". Strings are borrowed. */
typedef struct store_settings {
    const char *system;   /* "" or NULL: none */
    const char *model;    /* "" or NULL: the configured default */
    const char *strategy; /* all, window or summarize */
    int64_t ttl_seconds;  /* 0: no expiry */
    int64_t max_context_tokens;
    int64_t max_messages; /* 0: keep everything (up to the hard cap) */
    /* Tools a turn offers the model unless it brings its own (JSON text,
     * Anthropic's shape), and tool_choice; "" or NULL: none. */
    const char *tools;
    const char *tool_choice;
} store_settings;

#define STORE_SETTINGS_UNCHANGED                                                                   \
    { NULL, NULL, NULL, -1, -1, -1, NULL, NULL }

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
    char *tools;          /* owned JSON text, "" when none (see store_settings) */
    char *tool_choice;    /* owned JSON text, "" when none */
    int64_t summary_upto; /* the summary covers seqs <= this */
    int64_t summary_tokens;
    char prompt_sig[64];   /* what the last turn sent, see turn.c */
    int64_t prompt_tokens; /* its input tokens as the upstream counted */
    int64_t version;       /* up by one with every write: the context's ETag */

    store_blob *messages; /* owned; the range asked for, oldest first */
    size_t n_messages;
    /* store_read with messages: older messages exist before the page, and
     * the seq to pass as `before` for the page before it. */
    int has_more;
    int64_t next_before;

    /* store_turn_read only: messages that left the window but are not in the
     * summary yet (oldest first), the seq the window starts at, and the
     * unexpired idempotency record asked for (data NULL when none: then the
     * lock is held; when set, the lock was not taken). */
    store_blob *fold;
    size_t n_fold;
    int64_t window_start_seq;
    store_blob idem_record;

    /* State: keys and their JSON-encoded values, parallel arrays, owned. */
    store_blob *state_keys;
    store_blob *state_values;
    size_t n_state;
} store_context;

/* What store_read should fetch besides the settings. */
#define STORE_READ_MESSAGES 1
#define STORE_READ_STATE 2

/* A context to create. Everything is borrowed. */
typedef struct store_new_context {
    const char *id;
    int64_t now_ms;
    store_settings settings;
    const store_blob *state_keys; /* JSON-encoded values in state_values */
    const store_blob *state_values;
    size_t n_state;
} store_new_context;

/* Create a store for cfg (borrowed; must outlive it). No I/O. Returns NULL
 * when out of memory. Free with store_free (accepts NULL). */
store *store_new(const ctxd_config *cfg);
void store_free(store *s);

/* Serve tenant's contexts from now on: every key spelled afterwards is
 * that tenant's (a name of 1 to STORE_TENANT_MAX bytes of [a-z0-9_-],
 * checked by the caller). */
void store_set_tenant(store *s, const char *tenant);

/* Round trip to Redis. CTXD_OK, or CTXD_ERR with s->err/errstr. */
int store_ping(store *s);

/* 1 when the last call failed only because fewer replicas than
 * CTXD_REDIS_WAIT_REPLICAS acknowledged its write in time: the write is on
 * the master (so an idempotency claim must stay for the retry to find). */
int store_unreplicated(const store *s);

/* Create a context. CTXD_ERR with CTXD_E_EXISTS if the id is taken. */
int store_create(store *s, const store_new_context *nc);

/* Idempotent create: claim key for new_id. Returns CTXD_OK and sets
 * *claimed = 1 if this call owns the key; otherwise *claimed = 0 and
 * existing_id / existing_fp receive the first claim's context id and request
 * fingerprint. CTXD_ERR with CTXD_E_CONFLICT when the claim vanished
 * between its two steps (retry). */
int store_create_claim(store *s, const char *key, uint64_t fp, const char *new_id, int ttl_s,
                       int *claimed, char existing_id[UTIL_UUID_LEN + 1], uint64_t *existing_fp);

/* Forget a create claim (the create that followed it failed). */
int store_create_unclaim(store *s, const char *key);

/* Read a context in one round trip. what: STORE_READ_* flags. Messages:
 * limit <= 0 means all; with before > 0 only messages with seq < before,
 * the newest limit of them; out->has_more and next_before say where the
 * page before starts. CTXD_ERR with CTXD_E_NOT_FOUND if absent. On success
 * out owns memory; free with store_context_free (also safe after a
 * failure). */
int store_read(store *s, const char *id, int what, long limit, int64_t before, store_context *out);
void store_context_free(store_context *c); /* accepts NULL */

/* What store_turn_read reads under the lock. */
typedef enum {
    STORE_TURN_WINDOW, /* the window (and fold) a model call sends */
    STORE_TURN_APPEND  /* the settings only: an append without a model call */
} store_turn_mode;

/* A turn's place in the queue of turns waiting for a context's lock. */
typedef struct store_turn_queue {
    /* In: > 0 to wait in the queue when the lock is not this turn's: the
     * place is kept this long after each read that renews it (a waiter that
     * stops reading loses it); 0: do not queue. */
    int ttl_ms;
    /* Out, with CTXD_E_BUSY: how many turns go first (the holder included),
     * and how long a stored turn held the lock lately, on average (0: not
     * known). */
    int64_t ahead;
    int64_t turn_ms;
} store_turn_queue;

/* Take the turn lock for token and read what the turn needs, reading only
 * the tail of the history (see lua/turn_read.lua), in one round trip. The
 * lock is token's when it is free and no other turn waits before token in
 * the context's queue. fixed_tokens: the new message; fold_max: most
 * messages to return for summarizing; idem_key (or NULL): an unexpired
 * record for it comes back in out->idem_record instead, without taking the
 * lock (and token leaves the queue). q (or NULL: do not queue) says
 * whether to queue and where token stands. CTXD_ERR with CTXD_E_BUSY when
 * the lock is not token's (q filled), CTXD_E_NOT_FOUND when there is no
 * such context (no lock taken then). */
int store_turn_read(store *s, const char *id, const char *token, int lock_ttl_ms,
                    const char *idem_key, store_turn_mode mode, int64_t fixed_tokens, long fold_max,
                    store_turn_queue *q, store_context *out);

/* Block up to timeout_ms (at least 1; keep it well under the connection's
 * timeout, CTXD_REDIS_TIMEOUT_MS) until token, waiting in the queue of
 * context id, is woken: its turn may have come, read again. *woken 0 when
 * the time ran out. CTXD_ERR with s->err when Redis fails. */
int store_turn_wait(store *s, const char *id, const char *token, int timeout_ms, int *woken);

/* Take token out of the queue of context id (a waiting turn gives up);
 * wakes the next waiter when token was first and the lock is free. */
int store_turn_leave(store *s, const char *id, const char *token);

/* Change the settings that are given (see store_settings). CTXD_ERR with
 * CTXD_E_NOT_FOUND, or CTXD_E_PRECONDITION_FAILED when if_match is given
 * (versions the caller accepts, space-separated, see store_context.version)
 * and the context's version is none of them: nothing changes. NULL or "":
 * any version. The state writes and store_append take if_match likewise. */
int store_set_settings(store *s, const char *id, const store_settings *change, int64_t now_ms,
                       const char *if_match);

/* Store a folded summary covering seqs <= upto, only if the summary still
 * covers expected_upto (else CTXD_ERR with CTXD_E_CONFLICT). */
int store_set_summary(store *s, const char *id, int64_t expected_upto, int64_t upto,
                      const char *text, int64_t tokens, int64_t now_ms);

typedef struct store_list_item {
    char id[UTIL_UUID_LEN + 1];
    char created_at[UTIL_ISO_LEN];
    char last_updated[UTIL_ISO_LEN];
    int64_t activity_ms; /* last write */
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

/* Renew and release the turn lock; both act only while token owns it.
 * Renew fails with CTXD_E_LOCK_LOST otherwise. A release wakes the next
 * waiting turn. */
int store_lock_renew(store *s, const char *id, const char *token, int ttl_ms);
int store_lock_release(store *s, const char *id, const char *token);

/* An append of messages, committed atomically with the idempotency record and
 * the lock release. Borrowed fields. */
typedef struct store_append_req {
    const char *id;
    const char *token;         /* lock owner; must still hold the lock */
    int64_t expected_next_seq; /* from the read under the lock */
    int64_t now_ms;
    const store_blob *messages; /* JSON texts, seqs from expected_next_seq */
    size_t n_messages;
    const char *idem_key;   /* may be NULL */
    store_blob idem_record; /* borrowed */
    int idem_ttl_s;
    long max_messages;      /* hard cap when the context does not trim */
    const char *prompt_sig; /* may be NULL: leave the last turn's figures */
    int64_t prompt_tokens;
    int64_t held_ms;      /* how long token has held the lock, for the context's
                        average turn (store_turn_queue); 0: not counted */
    const char *if_match; /* NULL or "": any version (see store_set_settings) */
} store_append_req;

/* CTXD_ERR with CTXD_E_NOT_FOUND (deleted meanwhile), CTXD_E_LOCK_LOST,
 * CTXD_E_CONFLICT or CTXD_E_CONTEXT_FULL (max_messages) and nothing written;
 * CTXD_OK when appended (and held_ms counted). The lock is released in both
 * cases if token owns it, as store_lock_release does. */
int store_append(store *s, const store_append_req *req);

/* Replace the whole state. CTXD_ERR with CTXD_E_NOT_FOUND or
 * CTXD_E_STATE_TOO_LARGE (over max_bytes). */
int store_state_put(store *s, const char *id, const store_blob *keys, const store_blob *values,
                    size_t n, size_t max_bytes, int64_t now_ms, const char *if_match);

/* Merge into the state: values[i].data == NULL deletes keys[i]. The size
 * check is on the merged result; nothing changes when it fails. */
int store_state_patch(store *s, const char *id, const store_blob *keys, const store_blob *values,
                      size_t n, size_t max_bytes, int64_t now_ms, const char *if_match);

/* ---- API keys (store_auth.c) ---- */

/* An API key as stored: never the key itself, only its SHA-256. */
typedef struct store_apikey {
    char id[40];
    char sha[65]; /* hex SHA-256 of the key */
    char tenant[STORE_TENANT_MAX + 1];
    char scopes[32]; /* "read,write,admin", comma-separated */
    char name[128];
    int64_t requests_per_minute; /* 0: the configured default */
    int64_t tokens_per_minute;
    char created_at[UTIL_ISO_LEN];
} store_apikey;

/* Store a new key. CTXD_ERR with CTXD_E_EXISTS when its id or hash is
 * taken. */
int store_apikey_put(store *s, const store_apikey *k);

/* The key whose SHA-256 is sha_hex, in one round trip: *found 0 when there
 * is none (revoked or never made). */
int store_apikey_get(store *s, const char *sha_hex, store_apikey *out, int *found);

/* Every key (the caller filters by tenant); *keys is the caller's to free(). */
int store_apikey_list(store *s, store_apikey **keys, size_t *n);

/* Forget the key with this id; *found 0 when there was none. */
int store_apikey_revoke(store *s, const char *id, int *found);

/* ---- Rate limits (store_auth.c) ---- */

typedef enum {
    STORE_RATE_TAKE,  /* use cost units if they fit, else refuse (nothing used) */
    STORE_RATE_PEEK,  /* allowed while any room is left */
    STORE_RATE_CHARGE /* use cost units, fitting or not */
} store_rate_mode;

typedef struct store_rate {
    int allowed;
    int64_t remaining; /* units left now */
    int64_t reset_ms;  /* until the whole limit is back */
    int64_t retry_ms;  /* refused: until a retry can pass */
} store_rate;

/* One limit ("requests", "tokens") of key_id: per_minute units a minute,
 * by GCRA on one Redis key, in one round trip, exact across processes. */
int store_rate_use(store *s, const char *key_id, const char *limit, int64_t per_minute,
                   int64_t cost, store_rate_mode mode, store_rate *out);

/* ---- MCP sessions (store_mcp.c) ---- */

/* An MCP session of the store's tenant: one hash per session
 * ("ctxd:{mcp:<tenant>:<id>}", see store_keys.c) that expires when unused. */
#define STORE_MCP_SESSION_ID_MAX 64
typedef struct store_mcp_session {
    char id[STORE_MCP_SESSION_ID_MAX + 1];
    char protocol_version[16]; /* negotiated at initialize */
    char client_name[128];     /* clientInfo, as the client gave it ("" when none) */
    char client_version[64];
    char key_id[40]; /* the API key that started it ("" with auth off) */
    char created_at[UTIL_ISO_LEN];
} store_mcp_session;

/* Store a new session, expiring ttl_s seconds from now. CTXD_OK, or
 * CTXD_ERR with s->err. */
int store_mcp_session_put(store *s, const store_mcp_session *sess, int ttl_s);

/* Read session id and start its ttl_s countdown again, in one round trip:
 * *found 0 when there is none (ended, expired, or another tenant's). */
int store_mcp_session_get(store *s, const char *id, int ttl_s, store_mcp_session *out, int *found);

/* End session id; *found 0 when there was none. */
int store_mcp_session_delete(store *s, const char *id, int *found);

#endif
