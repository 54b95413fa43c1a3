/* store_int.h: what the store's own files share: keys, scripts, the connection, arguments. */
#ifndef CTXD_STORE_INT_H
#define CTXD_STORE_INT_H

#include <hiredis/hiredis.h>

#include "ctxd/store.h"

/* ---- Keys (store_keys.c: the one place key names are spelled) ---- */

#define STORE_KEY_LEN 320

/* The keys of one context, in the order every context script gets them as
 * KEYS (the scripts name them through the prelude store_keys.c builds from
 * the same table). K_WAKE is the stem of each waiting turn's own key
 * (store_key_wake). */
enum { K_META = 0, K_MESSAGES, K_STATE, K_IDEM, K_LOCK, K_QUEUE, K_WAKE, K_COUNT };

typedef struct ctx_keys {
    char key[K_COUNT][STORE_KEY_LEN];
    const char *all[K_COUNT]; /* points into key[] */
} ctx_keys;

void store_keys_init(ctx_keys *k, const char *tenant, const char *id);

/* The list a turn waiting in the context's queue blocks on: the scripts
 * push to it when it is that turn's turn (token: the turn's lock token). */
void store_key_wake(const ctx_keys *k, const char *token, char out[STORE_KEY_LEN]);

/* A key in the same hash slot as key, for a write of no value that WAIT
 * can wait for: "ctxd:wait:{<key's hash tag>}". */
void store_key_wait(const char *key, char out[STORE_KEY_LEN]);

/* The key of an idempotent create's claim. */
void store_key_create(char out[STORE_KEY_LEN], const char *tenant, const char *idem_key);

/* The activity index's buckets: which one a context id belongs to, and a
 * bucket's key. */
#define STORE_INDEX_BUCKETS 16
unsigned store_index_bucket(const char *id);
void store_key_index_bucket(const char *tenant, unsigned bucket, char out[STORE_KEY_LEN]);

/* A tenant's activity index of ctxd 0.4 and before (listing reads it too,
 * until every context in it was touched again). */
void store_key_index(const char *tenant, char out[STORE_KEY_LEN]);

/* API keys: the record of the key whose SHA-256 is sha_hex, and the hash
 * of key ids to their SHA-256 (both in one hash slot). */
void store_key_apikey(char out[STORE_KEY_LEN], const char *sha_hex);
const char *store_key_apikey_ids(void);

/* The GCRA state of one limit ("requests", "tokens") of an API key. */
void store_key_rate(char out[STORE_KEY_LEN], const char *key_id, const char *limit);

/* An MCP session of tenant: "ctxd:{mcp:<tenant>:<session id>}", its own
 * hash slot. */
void store_key_mcp_session(char out[STORE_KEY_LEN], const char *tenant, const char *id);

/* ---- Scripts (store_keys.c): the embedded .lua files with their prelude ---- */

enum {
    S_CREATE,
    S_READ,
    S_TURN_LOCK,
    S_APPEND,
    S_DELETE,
    S_RENEW,
    S_RELEASE,
    S_STATE_PUT,
    S_STATE_PATCH,
    S_SETTINGS,
    S_SUMMARY,
    S_APIKEY_PUT,
    S_APIKEY_REVOKE,
    S_APIKEY_LIST,
    S_RATE,
    S_QUEUE_LEAVE,
    S_INDEX_RESTORE,
    S_COUNT
};

/* The full text Redis runs for script (prelude included), built once; NULL
 * only when out of memory at the first call. */
const char *store_script_text(int script);

/* A Redis timeout of ms milliseconds. */
static inline struct timeval store_ms_tv(int ms) {
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/* ---- Sentinel (store_sentinel.c): where the master is, process-wide ---- */

/* Ask the Sentinels in turn, from *next (the last that answered; updated),
 * where the master is: CTXD_OK with host and port, or CTXD_ERR with the
 * last Sentinel's why. */
int store_sentinel_ask(const ctxd_config *cfg, int *next, char host[256], int *port, char *why,
                       size_t whylen);

/* Record where the Sentinels say the master is: a move bumps the generation
 * (so every thread reconnects) and is logged once. Returns the generation of
 * host:port. */
unsigned store_sentinel_note(const ctxd_config *cfg, const char *host, int port);

/* The current generation of the master's address. */
unsigned store_sentinel_gen(void);

/* Ask one Sentinel whether the master moved: at most once a second per
 * process (now: at once), less often while Sentinels do not answer. */
void store_sentinel_probe(const ctxd_config *cfg, int *next, int now);

/* ---- Redis Cluster (store_cluster.c): the slot map, process-wide ---- */

#define STORE_CLUSTER_SLOTS 16384
#define STORE_CLUSTER_NODES_MAX 64

/* What the configured redis:// server turned out to be (found on the first
 * connection: CLUSTER SLOTS answers, or says cluster support is disabled). */
enum { STORE_MODE_UNKNOWN = -1, STORE_MODE_STANDALONE = 0, STORE_MODE_CLUSTER = 1 };
int store_cluster_mode(void);

/* A plain server answered at the seed'th seed of the URL: standalone mode,
 * and that seed is the server. */
void store_cluster_set_standalone(int seed);
int store_cluster_standalone_seed(void);

/* The hash slot of a key (its hash tag's, when it has one). */
unsigned store_cluster_slot(const char *key, size_t len);

/* Install the map a CLUSTER SLOTS reply describes (asked_host stands for an
 * empty host in it) and enter cluster mode. CTXD_ERR when r is no map. */
int store_cluster_load(const redisReply *r, const char *asked_host);

/* The master serving slot: CTXD_OK, or CTXD_ERR when none is known. */
int store_cluster_node(unsigned slot, ctxd_hostport *out);

/* Up to max known masters into out; returns how many. */
int store_cluster_nodes(ctxd_hostport *out, int max);

/* A MOVED said slot lives at host:port now: remember it, and reload the
 * whole map soon. */
void store_cluster_moved(unsigned slot, const char *host, int port);

/* The map may be wrong (a node failed, a redirect): reload it soon. */
void store_cluster_stale(void);

/* 1 when the caller should reload the map now (stale, and no other thread
 * did in the last 100 ms). */
int store_cluster_refresh_due(void);

/* What an error reply asks of a cluster client: MOVED or ASK (with slot and
 * the node in to; an empty host means the node that answered), RETRY for
 * TRYAGAIN and CLUSTERDOWN (wait, then send again), or NONE. */
enum { STORE_REDIRECT_NONE, STORE_REDIRECT_MOVED, STORE_REDIRECT_ASK, STORE_REDIRECT_RETRY };
int store_cluster_redirect(const char *err, unsigned *slot, ctxd_hostport *to);

/* ---- The connection (store_conn.c) ---- */

/* Record a failure in s. */
void store_fail(store *s, ctxd_err err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The Redis address for messages. */
const char *store_addr(const store *s);

/* Run a command: connect if needed; Redis error replies become CTXD_E_REDIS.
 * Returns the reply (caller frees with freeReplyObject) or NULL with
 * s->err. read_command retries once on a fresh connection after an I/O
 * error (only for commands that change nothing). */
redisReply *store_command(store *s, int argc, const char **argv, const size_t *lens);
redisReply *store_read_command(store *s, int argc, const char **argv);

/* Send argc commands pipelined (argvs[i] with argcs[i] words) to the server
 * of the first key, and return the last reply (caller frees), or NULL with
 * s->err. On a cluster their keys must share a slot (store_index_cmds
 * leaves out the other slot's command there). */
redisReply *store_pipeline(store *s, int n, const char **const *argvs, const int *argcs);

/* Commands one pipeline may hold. */
#define STORE_BATCH_MAX 16

/* Send n commands pipelined, their keys all in one hash slot, and put every
 * reply into rs (caller frees; error replies as they are): CTXD_OK, or
 * CTXD_ERR with s->err. */
int store_pipeline_all(store *s, int n, const char **const *argvs, const int *argcs,
                       redisReply **rs);

/* 1 when the server is a Redis Cluster (known once connected). */
int store_is_cluster(const store *s);

/* An error reply r: recorded in s as for any command (a Sentinel master
 * that was demoted included), CTXD_ERR; CTXD_OK when r is none. r stays
 * the caller's. */
int store_reply_error(store *s, const redisReply *r);

/* 1 when the last failure was a demoted master refusing a write
 * (READONLY) before anything was written: worth one more try. */
int store_demoted(const store *s);

/* 1 when the last failure was the connection itself (worth one retry of a
 * read). */
int store_failed_io(const store *s);

/* With CTXD_REDIS_WAIT_REPLICAS, wait (Redis WAIT, up to CTXD_REDIS_WAIT_MS)
 * until that many replicas hold every write this connection made; a no-op
 * when it is 0. store_eval calls it after each acknowledged write script that
 * wrote. CTXD_OK, or CTXD_ERR with CTXD_E_REDIS and store_unreplicated 1 (too
 * few replicas in time: the write stays on the master). */
int store_wait_replicas(store *s);

/* Likewise, but for everything the master holding key holds now, whoever
 * wrote it: for an answer from a record another connection wrote (an
 * idempotent replay, whose first attempt may have timed out waiting). WAIT
 * covers only the connection's own writes, so this first makes a write the
 * replicas get, in the same round trip: an empty message PUBLISHed on the
 * channel ctxd:wait, or in a cluster (where PUBLISH is not replicated) a
 * short-lived empty key in key's slot (store_key_wait). */
int store_wait_replicas_all(store *s, const char *key);

/* Script arguments: borrowed strings and binary blobs, plus a few numbers
 * formatted into the builder itself. */
#define ARGS_NUMS 16
typedef struct args {
    const char **v;
    size_t *len;
    int n, cap;
    char nums[ARGS_NUMS][24];
    int n_nums;
} args;

/* Room for cap arguments. CTXD_ERR with CTXD_E_NOMEM in s. */
int args_init(store *s, args *a, size_t cap);
void args_free(args *a);
void args_bin(args *a, const char *data, size_t len); /* NULL: "" */
void args_str(args *a, const char *str);
void args_int(args *a, int64_t v);

/* Run a script by SHA (EVAL when Redis forgot it) with nkeys keys and a's
 * arguments. Returns the reply (caller frees) or NULL with s->err. The
 * _read variant retries once after an I/O error: only for scripts that
 * change nothing. */
redisReply *store_eval(store *s, int script, int nkeys, const char *const *keys, const args *a);

/* store_eval, then n_after more commands, in the same pipeline (one round
 * trip) when they are on the script's server (always, but in a cluster
 * where their keys are in other slots: then each after the script, to its
 * own node, and only when the script succeeded). Their replies go into
 * after_out (caller frees; error replies as they are); when the script
 * fails they are freed and set to NULL. */
redisReply *store_eval_then(store *s, int script, int nkeys, const char *const *keys, const args *a,
                            int n_after, const char **const *after, const int *after_argc,
                            redisReply **after_out);
redisReply *store_eval_read(store *s, int script, int nkeys, const char *const *keys,
                            const args *a);

/* Run a context write script (all the context's keys) and read its status
 * reply: 'OK', or NOT_FOUND / LOCK_LOST / CONFLICT, or TOO_LARGE, which
 * becomes too_large. CTXD_OK or CTXD_ERR with s->err. */
int store_write_script(store *s, int script, const char *id, const args *a, ctxd_err too_large);

/* store_write_script, then n_after more commands as store_eval_then sends
 * them (their replies are checked for errors and freed). */
int store_write_script_then(store *s, int script, const char *id, const args *a, ctxd_err too_large,
                            int n_after, const char **const *after, const int *after_argc);

/* ---- The activity index (store_index.c) ---- */

/* Put a context at the front of its tenant's listing (now_ms), and out of
 * the index of 0.4. A create touches the index before it writes the
 * context, so a crash between the two leaves an index entry without a
 * context, which listing removes; later writes touch it after theirs. */
int store_index_touch(store *s, const char *id, int64_t now_ms);

/* Take a context out of the listing. */
int store_index_forget(store *s, const char *id);

/* An append touched the index at ours_ms and was then refused: put the
 * context back at its last write (the meta's last_updated), unless another
 * write moved it since. */
int store_index_restore(store *s, const char *id, int64_t ours_ms);

/* The commands of a touch (score: now in ms) or a forget (score NULL), to
 * send along with another write (store_eval_then): argvs / argcs. */
typedef struct store_index_update {
    char bucket[STORE_KEY_LEN], legacy[STORE_KEY_LEN];
    const char *set[4], *old[3];
    const char **argvs[2];
    int argcs[2];
    int n; /* commands in argvs */
} store_index_update;
void store_index_cmds(store *s, const char *id, const char *score, store_index_update *u);

/* ---- A turn's append without a script (store_watch.c) ---- */

/* The WATCH a turn's read sends when it takes the lock, on the keys the
 * append writes or decides by, and what the append needs to know besides
 * (the idempotency hash's size). after_tx: the read is a transaction
 * (cluster), and the WATCH comes after its EXEC; then also what proves that
 * nothing changed in between (the queue is still empty, the meta's
 * next_seq and version the same). Else it comes right after the SET that
 * takes the lock, before the reads. */
#define STORE_WATCH_REPLIES 4
typedef struct store_watch_cmds {
    const char *watch[4], *idem[2], *queue[2], *version[4];
    const char **argvs[STORE_WATCH_REPLIES];
    int argcs[STORE_WATCH_REPLIES];
    int n; /* commands in argvs */
    int with_idem, after_tx;
} store_watch_cmds;
void store_watch_cmds_init(store_watch_cmds *w, const char *const *keys, int with_idem,
                           int after_tx);

/* After such a read on the current connection: meta (HGETALL) and tail
 * (LRANGE, or NULL) as read under the lock (token's), read as
 * store_meta_fill and LLEN filled it in, and the replies to the commands of
 * w, in order. Arms the watch when they prove that the WATCH covers what
 * was read; else only notes that a WATCH is set. */
void store_watch_arm(store *s, const char *const *keys, const char *token, const redisReply *meta,
                     const store_context *read, const redisReply *tail, const store_watch_cmds *w,
                     const redisReply *const *replies);

/* The append as one MULTI/EXEC on the watched connection, with the index
 * commands u after it: CTXD_OK when it was stored (and replicated, with
 * CTXD_REDIS_WAIT_REPLICAS), CTXD_ERR with s->err when it may or may not
 * have been (I/O), or STORE_WATCH_SCRIPT when it was not and append.lua
 * must decide (no watch, EXEC refused, a case only the script handles). */
#define STORE_WATCH_SCRIPT 1
int store_watch_append(store *s, const store_append_req *req, const store_index_update *u);

/* ---- A turn's window (store_window.c) ---- */

/* Reads one turn may make of a long window. */
#define STORE_WINDOW_CHUNKS_MAX 24

/* Fill out's messages (and fold, with strategy summarize) for a turn whose
 * lock is held: out's meta is filled, tail holds the newest messages
 * (borrowed), len is the list's length. Older messages are read as needed
 * (the lock keeps the list as it is). With strategy all every message;
 * else the newest whole units whose tokens fit max_context_tokens minus
 * fixed_tokens (the new message), the system prompt and the summary; with
 * summarize also up to fold_max of the oldest messages that left the window
 * but are not summarized yet. CTXD_OK or CTXD_ERR with s->err. */
int store_window(store *s, const ctx_keys *k, redisReply *tail, int64_t len, int64_t fixed_tokens,
                 long fold_max, store_context *out);

/* ---- Replies (store_context.c) ---- */

/* Copy a string reply into b. CTXD_ERR when out of memory. */
int store_blob_copy(store_blob *b, const redisReply *r);
/* Copy an array reply of strings into a new blob array. */
int store_blobs_copy(const redisReply *arr, store_blob **out, size_t *n);

/* Fill c's settings from HGETALL pairs of the meta hash. */
int store_meta_fill(store_context *c, const redisReply *meta);

#endif
