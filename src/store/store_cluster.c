/* store_cluster.c: Redis Cluster's slot map, process-wide: key to slot, slot to master, redirects. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/log.h"
#include "store_int.h"

#define NO_NODE 0xff
#define REFRESH_EVERY_MS 100 /* at most this often per process while the map is stale */

/* The masters and which slot each serves, shared by every thread; replaced
 * whole by a refresh, changed one slot at a time by a MOVED. */
static struct {
    pthread_rwlock_t lock;
    ctxd_hostport nodes[STORE_CLUSTER_NODES_MAX];
    int n;
    uint8_t slot[STORE_CLUSTER_SLOTS]; /* index into nodes, NO_NODE: no master known */
} map = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static atomic_int mode = STORE_MODE_UNKNOWN;
static atomic_int standalone_seed; /* which seed answered as a plain server */
static atomic_int stale = 1;       /* the map needs loading again */
static atomic_int_least64_t next_refresh_ms;

/* CRC16-CCITT (XModem), the checksum Redis Cluster hashes keys with. */
static uint16_t crc16(const char *buf, size_t len) {
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned store_cluster_slot(const char *key, size_t len) {
    /* Only what is between the first '{' and the next '}' is hashed, when
     * that is not empty. */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    return crc16(key, len) & (STORE_CLUSTER_SLOTS - 1);
}

int store_cluster_mode(void) { return atomic_load(&mode); }

int store_cluster_standalone_seed(void) { return atomic_load(&standalone_seed); }

void store_cluster_set_standalone(int seed) {
    atomic_store(&standalone_seed, seed);
    int was = STORE_MODE_UNKNOWN;
    atomic_compare_exchange_strong(&mode, &was, STORE_MODE_STANDALONE);
}

/* nodes' index of host:port, added when new; NO_NODE when full. Called with
 * the write lock held. */
static int node_index(const char *host, int port) {
    for (int i = 0; i < map.n; i++)
        if (map.nodes[i].port == port && !strcmp(map.nodes[i].host, host)) return i;
    if (map.n == STORE_CLUSTER_NODES_MAX || strlen(host) >= sizeof(map.nodes[0].host))
        return NO_NODE;
    snprintf(map.nodes[map.n].host, sizeof(map.nodes[0].host), "%s", host);
    map.nodes[map.n].port = port;
    return map.n++;
}

int store_cluster_load(const redisReply *r, const char *asked_host) {
    if (!r || r->type != REDIS_REPLY_ARRAY) return CTXD_ERR;
    int covered = 0;
    pthread_rwlock_wrlock(&map.lock);
    map.n = 0;
    memset(map.slot, NO_NODE, sizeof(map.slot));
    /* Each entry: start, end, master [host, port, id, ...], replicas... */
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            continue;
        const redisReply *m = e->element[2];
        if (m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        /* An empty host (or "?") means the node we asked. */
        const char *host =
            m->element[0]->len && strcmp(m->element[0]->str, "?") ? m->element[0]->str : asked_host;
        int idx = node_index(host, (int)m->element[1]->integer);
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (idx == NO_NODE || lo < 0 || hi >= STORE_CLUSTER_SLOTS || lo > hi) continue;
        memset(map.slot + lo, idx, (size_t)(hi - lo + 1));
        covered += (int)(hi - lo + 1);
    }
    pthread_rwlock_unlock(&map.lock);
    atomic_store(&stale, covered != STORE_CLUSTER_SLOTS);
    int was = STORE_MODE_UNKNOWN;
    if (atomic_compare_exchange_strong(&mode, &was, STORE_MODE_CLUSTER))
        log_msg(LOG_INFO, "redis cluster mode: %d masters serve %d of %d slots", map.n, covered,
                STORE_CLUSTER_SLOTS);
    return CTXD_OK;
}

int store_cluster_node(unsigned slot, ctxd_hostport *out) {
    int rc = CTXD_ERR;
    pthread_rwlock_rdlock(&map.lock);
    uint8_t idx = map.slot[slot & (STORE_CLUSTER_SLOTS - 1)];
    if (idx != NO_NODE) {
        *out = map.nodes[idx];
        rc = CTXD_OK;
    }
    pthread_rwlock_unlock(&map.lock);
    return rc;
}

int store_cluster_nodes(ctxd_hostport *out, int max) {
    pthread_rwlock_rdlock(&map.lock);
    int n = map.n < max ? map.n : max;
    memcpy(out, map.nodes, sizeof(*out) * (size_t)n);
    pthread_rwlock_unlock(&map.lock);
    return n;
}

void store_cluster_moved(unsigned slot, const char *host, int port) {
    pthread_rwlock_wrlock(&map.lock);
    int idx = node_index(host, port);
    if (idx != NO_NODE) map.slot[slot & (STORE_CLUSTER_SLOTS - 1)] = (uint8_t)idx;
    pthread_rwlock_unlock(&map.lock);
    store_cluster_stale(); /* one slot moved: likely more did */
}

void store_cluster_stale(void) { atomic_store(&stale, 1); }

int store_cluster_refresh_due(void) {
    if (!atomic_load(&stale)) return 0;
    int64_t now = util_mono_ms(), next = atomic_load(&next_refresh_ms);
    /* One thread at a time claims the next refresh. */
    return now >= next &&
           atomic_compare_exchange_strong(&next_refresh_ms, &next, now + REFRESH_EVERY_MS);
}

int store_cluster_redirect(const char *err, unsigned *slot, ctxd_hostport *to) {
    int kind = !strncmp(err, "MOVED ", 6) ? STORE_REDIRECT_MOVED
               : !strncmp(err, "ASK ", 4) ? STORE_REDIRECT_ASK
               : !strncmp(err, "TRYAGAIN", 8) || !strncmp(err, "CLUSTERDOWN", 11)
                   ? STORE_REDIRECT_RETRY
                   : STORE_REDIRECT_NONE;
    if (kind != STORE_REDIRECT_MOVED && kind != STORE_REDIRECT_ASK) return kind;
    /* "MOVED 3999 127.0.0.1:6381" (the host may be empty: the same node's). */
    const char *p = strchr(err, ' ') + 1;
    char *end;
    unsigned long s = strtoul(p, &end, 10);
    const char *colon = strrchr(end, ':');
    if (end == p || *end != ' ' || !colon || s >= STORE_CLUSTER_SLOTS) return STORE_REDIRECT_NONE;
    size_t hl = (size_t)(colon - (end + 1));
    if (hl >= sizeof(to->host)) return STORE_REDIRECT_NONE;
    memcpy(to->host, end + 1, hl);
    to->host[hl] = '\0';
    to->port = atoi(colon + 1);
    if (to->port <= 0 || to->port > 65535) return STORE_REDIRECT_NONE;
    *slot = (unsigned)s;
    return kind;
}
