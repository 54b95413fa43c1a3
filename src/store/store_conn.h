/* store_conn.h: one thread's connections, shared by store_conn.c (connecting), store_route.c
 * (which server a command goes to) and store_script.c (scripts and WAIT). */
#ifndef CTXD_STORE_CONN_H
#define CTXD_STORE_CONN_H

#include "store_int.h"

#define PARKED_MAX 16 /* connections to other cluster nodes a thread keeps */

/* A connection to a cluster node other than the current one. */
typedef struct parked_conn {
    ctxd_hostport node;
    redisContext *c; /* owned; NULL: a free place */
    unsigned epoch;
    int64_t last_used_ms;
} parked_conn;

typedef struct store_impl {
    const ctxd_config *cfg; /* borrowed */
    /* The current connection (the one commands go to) and its server. */
    redisContext *c; /* NULL when not connected */
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

/* Commands one pipeline may hold. */
#define STORE_BATCH_MAX 8

/* Run n commands pipelined on the server holding key, following a
 * cluster's redirects: CTXD_OK with every reply in rs (caller frees; error
 * replies as they are), or CTXD_ERR with s->err. */
int store_route_run_all(store *s, const char *key, int n, const char **const *argvs,
                        const int *argcs, const size_t *const *lens, redisReply **rs);

/* Likewise, but the last reply only (caller frees), an error reply turned
 * into CTXD_E_REDIS; NULL with s->err. */
redisReply *store_route_run(store *s, const char *key, int n, const char **const *argvs,
                            const int *argcs, const size_t *const *lens);

#endif
