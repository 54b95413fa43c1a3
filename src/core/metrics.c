/* metrics.c: relaxed atomic counters; rendering reads them without locks. */
#include "ctxd/metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/buf.h"
#include "ctxd/config.h"
#include "ctxd/util.h"
#include "ctxd/version.h"

typedef atomic_ullong counter;

static const int statuses[] = {200, 201, 204, 400, 404, 405, 409, 413,
                               415, 422, 429, 500, 502, 503, 504};
#define N_STATUS (sizeof(statuses) / sizeof(statuses[0]) + 1) /* + other */

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                 1,     2.5,    5,     10,   30,    60,   120, 300};
#define N_BUCKETS (sizeof(buckets) / sizeof(buckets[0]))

typedef struct histogram {
    counter le[N_BUCKETS]; /* per bucket, made cumulative when rendered */
    counter count;
    counter sum_us;
} histogram;

#define N_PROVIDERS 3
#define UPSTREAM_STATUSES 8
static const int upstream_statuses[UPSTREAM_STATUSES] = {0, 200, 400, 401, 429, 500, 503, 529};

static struct {
    const char *method[METRICS_MAX_ROUTES + 1], *pattern[METRICS_MAX_ROUTES + 1];
    counter requests[METRICS_MAX_ROUTES + 1][N_STATUS];
    histogram latency[METRICS_MAX_ROUTES + 1];
    atomic_llong inflight;
    counter upstream[N_PROVIDERS][UPSTREAM_STATUSES + 1][2]; /* [status][ok] */
    histogram upstream_latency[N_PROVIDERS];
    counter upstream_retries[N_PROVIDERS];
    counter tokens[N_PROVIDERS][2];
    counter folds[2];
    counter redis_errors, redis_reconnects;
    counter redis_redirects[3]; /* MOVED, ASK, TRYAGAIN or CLUSTERDOWN */
    counter lock_busy;
    histogram lock_wait;
} m;

static int64_t started_ms; /* set while routes are registered, before threads */

void metrics_register_route(int idx, const char *method, const char *pattern) {
    if (idx < 0 || idx >= METRICS_MAX_ROUTES) return;
    m.method[idx] = method;
    m.pattern[idx] = pattern;
    if (!started_ms) started_ms = util_now_ms();
}

static void inc(counter *c, unsigned long long n) {
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static unsigned long long get(counter *c) { return atomic_load_explicit(c, memory_order_relaxed); }

static void observe(histogram *h, int64_t micros) {
    double s = (double)micros / 1e6;
    size_t i = 0;
    while (i < N_BUCKETS && s > buckets[i]) i++;
    if (i < N_BUCKETS) inc(&h->le[i], 1);
    inc(&h->count, 1);
    inc(&h->sum_us, micros > 0 ? (unsigned long long)micros : 0);
}

static size_t status_slot(int status) {
    for (size_t i = 0; i + 1 < N_STATUS; i++)
        if (statuses[i] == status) return i;
    return N_STATUS - 1;
}

void metrics_http_request(int route_idx, int status, int64_t micros) {
    int r = route_idx < 0 || route_idx >= METRICS_MAX_ROUTES ? METRICS_MAX_ROUTES : route_idx;
    inc(&m.requests[r][status_slot(status)], 1);
    observe(&m.latency[r], micros);
}

void metrics_inflight(int delta) {
    atomic_fetch_add_explicit(&m.inflight, delta, memory_order_relaxed);
}

long metrics_inflight_now(void) {
    return (long)atomic_load_explicit(&m.inflight, memory_order_relaxed);
}

static int provider_slot(int p) { return p >= 0 && p < N_PROVIDERS ? p : 0; }

void metrics_upstream_call(int provider, int status, int ok, int retries, int64_t micros) {
    int p = provider_slot(provider), s = UPSTREAM_STATUSES; /* other */
    for (int i = 0; i < UPSTREAM_STATUSES; i++)
        if (upstream_statuses[i] == status) s = i;
    inc(&m.upstream[p][s][ok ? 1 : 0], 1);
    observe(&m.upstream_latency[p], micros);
    if (retries > 0) inc(&m.upstream_retries[p], (unsigned long long)retries);
}

void metrics_tokens(int provider, long input, long output) {
    int p = provider_slot(provider);
    if (input > 0) inc(&m.tokens[p][0], (unsigned long long)input);
    if (output > 0) inc(&m.tokens[p][1], (unsigned long long)output);
}

void metrics_summary_fold(int ok) { inc(&m.folds[ok ? 1 : 0], 1); }
void metrics_redis_error(void) { inc(&m.redis_errors, 1); }
void metrics_redis_reconnect(void) { inc(&m.redis_reconnects, 1); }

void metrics_redis_redirect(metrics_redirect kind) {
    if ((unsigned)kind < 3) inc(&m.redis_redirects[kind], 1);
}
void metrics_lock_busy(void) { inc(&m.lock_busy, 1); }

void metrics_lock_wait(int64_t micros) { observe(&m.lock_wait, micros); }

static void put_histogram(buf *b, const char *name, const char *labels, histogram *h) {
    unsigned long long cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += get(&h->le[i]);
        buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, buckets[i], cum);
    }
    buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, get(&h->count));
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    buf_printf(b, "%s_sum%s%s%s %.6f\n", name, open, labels, close, (double)get(&h->sum_us) / 1e6);
    buf_printf(b, "%s_count%s%s%s %llu\n", name, open, labels, close, get(&h->count));
}

static void route_labels(char *out, size_t len, int r) {
    if (r == METRICS_MAX_ROUTES || !m.pattern[r])
        snprintf(out, len, "method=\"\",route=\"unmatched\"");
    else
        snprintf(out, len, "method=\"%s\",route=\"%s\"", m.method[r], m.pattern[r]);
}

static void render_http(buf *b) {
    char labels[160];
    buf_puts(b, "# HELP ctxd_http_requests_total HTTP requests answered, by route and status.\n"
                "# TYPE ctxd_http_requests_total counter\n");
    for (int r = 0; r <= METRICS_MAX_ROUTES; r++) {
        if (r < METRICS_MAX_ROUTES && !m.pattern[r]) continue;
        route_labels(labels, sizeof(labels), r);
        for (size_t s = 0; s < N_STATUS; s++) {
            unsigned long long v = get(&m.requests[r][s]);
            if (!v) continue;
            if (s + 1 < N_STATUS)
                buf_printf(b, "ctxd_http_requests_total{%s,status=\"%d\"} %llu\n", labels,
                           statuses[s], v);
            else
                buf_printf(b, "ctxd_http_requests_total{%s,status=\"other\"} %llu\n", labels, v);
        }
    }
    buf_puts(b, "# HELP ctxd_http_request_duration_seconds Time to answer, by route.\n"
                "# TYPE ctxd_http_request_duration_seconds histogram\n");
    for (int r = 0; r <= METRICS_MAX_ROUTES; r++) {
        if (r < METRICS_MAX_ROUTES && !m.pattern[r]) continue;
        route_labels(labels, sizeof(labels), r);
        put_histogram(b, "ctxd_http_request_duration_seconds", labels, &m.latency[r]);
    }
    buf_printf(b,
               "# HELP ctxd_http_requests_in_flight Requests being handled now.\n"
               "# TYPE ctxd_http_requests_in_flight gauge\n"
               "ctxd_http_requests_in_flight %lld\n",
               (long long)atomic_load_explicit(&m.inflight, memory_order_relaxed));
}

static void render_upstream(buf *b) {
    char labels[96];
    buf_puts(b, "# HELP ctxd_upstream_calls_total Model calls (all attempts of one), by "
                "provider, last upstream status and outcome.\n"
                "# TYPE ctxd_upstream_calls_total counter\n");
    for (int p = 0; p < N_PROVIDERS; p++)
        for (int s = 0; s <= UPSTREAM_STATUSES; s++)
            for (int ok = 0; ok < 2; ok++) {
                unsigned long long v = get(&m.upstream[p][s][ok]);
                if (!v) continue;
                char st[16];
                if (s == UPSTREAM_STATUSES)
                    snprintf(st, sizeof(st), "other");
                else if (!upstream_statuses[s])
                    snprintf(st, sizeof(st), "none");
                else
                    snprintf(st, sizeof(st), "%d", upstream_statuses[s]);
                buf_printf(b,
                           "ctxd_upstream_calls_total{provider=\"%s\",status=\"%s\","
                           "outcome=\"%s\"} %llu\n",
                           config_provider_name((ctxd_provider)p), st, ok ? "ok" : "error", v);
            }
    buf_puts(b, "# HELP ctxd_upstream_call_duration_seconds Model call time, retries included.\n"
                "# TYPE ctxd_upstream_call_duration_seconds histogram\n");
    for (int p = 0; p < N_PROVIDERS; p++) {
        if (!get(&m.upstream_latency[p].count)) continue;
        snprintf(labels, sizeof(labels), "provider=\"%s\"", config_provider_name((ctxd_provider)p));
        put_histogram(b, "ctxd_upstream_call_duration_seconds", labels, &m.upstream_latency[p]);
    }
    buf_puts(b, "# HELP ctxd_upstream_retries_total Retried model API attempts.\n"
                "# TYPE ctxd_upstream_retries_total counter\n");
    buf_puts(b, "# HELP ctxd_tokens_total Tokens as the upstream counted them; input is the whole "
                "prompt, cached parts included.\n"
                "# TYPE ctxd_tokens_total counter\n");
    for (int p = 0; p < N_PROVIDERS; p++) {
        const char *name = config_provider_name((ctxd_provider)p);
        buf_printf(b, "ctxd_upstream_retries_total{provider=\"%s\"} %llu\n", name,
                   get(&m.upstream_retries[p]));
        buf_printf(b, "ctxd_tokens_total{provider=\"%s\",direction=\"input\"} %llu\n", name,
                   get(&m.tokens[p][0]));
        buf_printf(b, "ctxd_tokens_total{provider=\"%s\",direction=\"output\"} %llu\n", name,
                   get(&m.tokens[p][1]));
    }
}

char *metrics_render(size_t *len) {
    buf b;
    buf_init(&b);
    buf_printf(&b,
               "# HELP ctxd_build_info Version of this ctxd.\n"
               "# TYPE ctxd_build_info gauge\n"
               "ctxd_build_info{version=\"%s\"} 1\n"
               "# HELP ctxd_start_time_seconds When this process started.\n"
               "# TYPE ctxd_start_time_seconds gauge\n"
               "ctxd_start_time_seconds %.3f\n",
               CTXD_VERSION, (double)started_ms / 1000.0);
    render_http(&b);
    render_upstream(&b);
    buf_printf(&b,
               "# HELP ctxd_summary_folds_total Summary folds, by outcome.\n"
               "# TYPE ctxd_summary_folds_total counter\n"
               "ctxd_summary_folds_total{outcome=\"ok\"} %llu\n"
               "ctxd_summary_folds_total{outcome=\"error\"} %llu\n"
               "# HELP ctxd_redis_errors_total Redis commands that failed.\n"
               "# TYPE ctxd_redis_errors_total counter\n"
               "ctxd_redis_errors_total %llu\n"
               "# HELP ctxd_redis_reconnects_total New Redis connections made.\n"
               "# TYPE ctxd_redis_reconnects_total counter\n"
               "ctxd_redis_reconnects_total %llu\n"
               "# HELP ctxd_redis_cluster_redirects_total Redis Cluster answers that sent a "
               "command elsewhere (moved, ask) or asked to send it again (retry: TRYAGAIN, "
               "CLUSTERDOWN).\n"
               "# TYPE ctxd_redis_cluster_redirects_total counter\n"
               "ctxd_redis_cluster_redirects_total{kind=\"moved\"} %llu\n"
               "ctxd_redis_cluster_redirects_total{kind=\"ask\"} %llu\n"
               "ctxd_redis_cluster_redirects_total{kind=\"retry\"} %llu\n"
               "# HELP ctxd_lock_busy_total Turns answered 409 because the context stayed busy.\n"
               "# TYPE ctxd_lock_busy_total counter\n"
               "ctxd_lock_busy_total %llu\n"
               "# HELP ctxd_lock_wait_seconds Time turns waited for a busy context's lock.\n"
               "# TYPE ctxd_lock_wait_seconds histogram\n",
               get(&m.folds[1]), get(&m.folds[0]), get(&m.redis_errors), get(&m.redis_reconnects),
               get(&m.redis_redirects[0]), get(&m.redis_redirects[1]), get(&m.redis_redirects[2]),
               get(&m.lock_busy));
    put_histogram(&b, "ctxd_lock_wait_seconds", "", &m.lock_wait);
    return buf_take(&b, len);
}
