/* metrics: process-wide counters and histograms, lock-free, in Prometheus text. */
#ifndef CTXD_METRICS_H
#define CTXD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_ROUTES 32

/* Name route number idx ("GET", "/mcp/context/{id}"). Call before the server
 * starts; the strings must live for the process. */
void metrics_register_route(int idx, const char *method, const char *pattern);

/* One answered HTTP request. route_idx < 0: no route matched. */
void metrics_http_request(int route_idx, int status, int64_t micros);
void metrics_inflight(int delta);
long metrics_inflight_now(void); /* requests being handled now */

/* One model call (all its attempts): provider from ctxd_provider, status the
 * last upstream HTTP status (0: none, e.g. connect failure or echo). */
void metrics_upstream_call(int provider, int status, int ok, int retries, int64_t micros);
void metrics_tokens(int provider, long input, long output);
void metrics_summary_fold(int ok);

void metrics_redis_error(void);
void metrics_redis_reconnect(void);

/* A Redis Cluster answer a command followed. */
typedef enum { METRICS_MOVED, METRICS_ASK, METRICS_RETRY } metrics_redirect;
void metrics_redis_redirect(metrics_redirect kind);

/* A turn that had to wait for a context's lock (waited micros), and one
 * that gave up with 409. */
void metrics_lock_wait(int64_t micros);
void metrics_lock_busy(void);

/* The exposition text (caller frees), or NULL when out of memory. */
char *metrics_render(size_t *len);

#endif
