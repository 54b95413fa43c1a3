/* store_conn.h: one thread's connections, shared by store_conn.c (connecting), store_route.c
 * (which server a command goes to), store_script.c (scripts and WAIT), and store_turn.c and
 * store_watch.c (a turn's read and append without a script, tied to one connection). */
#ifndef CTXD_STORE_CONN_H
#define CTXD_STORE_CONN_H

#include "store_int.h"

#define PARKED_MAX 16 /* connections to other cluster nodes a thread keeps */

/* How many of the newest messages a watched append knows the heads of
 * (the tail a turn reads with its lock, store_turn.c). */
#define STORE_WATCH_TAIL 32

/* A turn's append without a script (store_watch.c). The turn's read, which
 * took the lock, set WATCH on the context's keys right after it, on one
 * connection, and kept here what the append needs of what it read; while
 * none of those keys changes, a MULTI/EXEC on that connection writes exactly
 * what append.lua would, and EXEC refuses it otherwise. */
typedef struct store_watch {
    const redisContext *c; /* the connection watching (compared only); NULL: none */
    int armed;             /* the fields below describe c's WATCH, and the lock is token's */
    char meta_key[STORE_KEY_LEN];
    char token[80];
    int64_t next_seq, version, keep, ttl_s, len;
    int64_t turn_ms;  /* the meta's turn_ms; -1: none */
    int64_t idem_len; /* HLEN of the idempotency hash; -1: not read */
    /* The newest n_tail messages' heads, oldest first (-1: not read). */
    int n_tail;
    int64_t tail_seq[STORE_WATCH_TAIL];
    unsigned char tail_user[STORE_WATCH_TAIL]; /* starts a unit: a user message, not tool results */
} store_watch;

/* A connection to a cluster node other than the current one. */
typedef struct parked_conn {
    ctxd_hostport node;
    redisContext *c; /* owned; NULL: a free place */
    int watching;    /* a WATCH may be set on c */
    unsigned epoch;
    int64_t last_used_ms;
} parked_conn;

typedef struct store_impl {
    const ctxd_config *cfg; /* borrowed */
    /* The current connection (the one commands go to) and its server. */
    redisContext *c; /* NULL when not connected */
    int watching;    /* a WATCH may be set on c (exchange in store_route.c) */
    unsigned epoch;  /* global_epoch when c was made */
    int64_t last_used_ms;
    ctxd_hostport node; /* redis:// only: the server c is (or will be) connected to */
    int next_seed;      /* the seed to try first while the mode is unknown */
    parked_conn parked[PARKED_MAX];
    int io_failed;    /* the last failure was the connection itself */
    int unreplicated; /* the last failure: written, but too few replicas acknowledged */
    int demoted;      /* the last failure: the master answered READONLY */
    int noscript;     /* the last failure: the server does not know the script */
    char sha[S_COUNT][41];
    char addr[700]; /* host:port, socket path or the Sentinels, for messages */
    /* redis+sentinel://: the master the Sentinels named ("" : ask them),
     * and the Sentinel to ask first (the last that answered). */
    char master_host[256];
    int master_port;
    int next_sentinel;
    unsigned master_gen; /* master_gen when master_host was named */
    store_watch watch;
} store_impl;

/* ---- store_conn.c ---- */

int store_conn_sentinel(const store_impl *im);    /* redis+sentinel:// */
int store_conn_may_cluster(const store_impl *im); /* redis:// over TCP: maybe a cluster */
int store_conn_cluster(const store_impl *im);     /* found to be a Redis Cluster */

/* The URL's i'th seed node (redis://'s one host in the common case). */
ctxd_hostport store_conn_seed(const ctxd_config *cfg, int i);

/* Connect the current connection when it is not (or is stale), to im->node,
 * the socket, or the Sentinels' master. CTXD_OK, or CTXD_ERR with s->err. */
int store_conn_ensure(store *s);

/* One command on the current connection: error replies come back as
 * replies; NULL after an I/O failure (the connection is dropped). */
redisReply *store_conn_raw(store *s, int argc, const char **argv, const size_t *lens);

/* An error reply becomes CTXD_E_REDIS in s (the reply is freed: NULL). */
redisReply *store_conn_check(store *s, redisReply *r);

/* Redis is not there: fail s, count it, and make every thread reconnect. */
void store_conn_unreachable(store *s, const char *detail);

/* Why the current connection failed. */
const char *store_conn_errstr(const store_impl *im);

/* ---- store_route.c ---- */

/* Make the connection to the server holding key current (any server for
 * NULL), connected. CTXD_OK or CTXD_ERR with s->err. */
int store_route(store *s, const char *key);

/* Run n commands pipelined on the server holding key, following a
 * cluster's redirects: CTXD_OK with every reply in rs (caller frees; error
 * replies as they are), or CTXD_ERR with s->err. */
int store_route_run_all(store *s, const char *key, int n, const char **const *argvs,
                        const int *argcs, const size_t *const *lens, redisReply **rs);

/* Likewise, but the last reply only (caller frees), an error reply turned
 * into CTXD_E_REDIS; NULL with s->err. */
redisReply *store_route_run(store *s, const char *key, int n, const char **const *argvs,
                            const int *argcs, const size_t *const *lens);

/* Run n commands pipelined on the current connection as it is: no routing,
 * no redirects followed, a WATCH on it kept for a MULTI among them (every
 * other pipeline with a MULTI or a WATCH ends it first). CTXD_OK with every reply in
 * rs (caller frees), or CTXD_ERR after an I/O failure. */
int store_route_here(store *s, int n, const char **const *argvs, const int *argcs,
                     const size_t *const *lens, redisReply **rs);

/* ---- store_watch.c (the rest in store_int.h) ---- */

/* c is going away: forget a WATCH on it. */
void store_watch_forget(store_impl *im, const redisContext *c);

#endif
