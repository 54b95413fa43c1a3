/* test_metrics.c: counters land in the exposition with cumulative buckets. */
#include "../../../src/core/metrics.c"

#include "../test.h"

TEST(test_metrics_render_counts_and_buckets) {
    metrics_register_route(0, "GET", "/healthz");
    metrics_http_request(0, 200, 500);   /* 0.5 ms */
    metrics_http_request(0, 200, 30000); /* 30 ms */
    metrics_http_request(-1, 404, 100);
    metrics_upstream_call(CTXD_PROVIDER_ANTHROPIC, 529, 0, 2, 1000000);
    metrics_tokens(CTXD_PROVIDER_ECHO, 10, 5);
    size_t len;
    char *t = metrics_render(&len);
    CHECK(t && len == strlen(t));
    CHECK(strstr(t,
                 "ctxd_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2\n"));
    CHECK(
        strstr(t, "ctxd_http_requests_total{method=\"\",route=\"unmatched\",status=\"404\"} 1\n"));
    CHECK(strstr(t, "ctxd_http_request_duration_seconds_bucket{method=\"GET\",route=\"/"
                    "healthz\",le=\"0.001\"} 1\n"));
    CHECK(strstr(t, "ctxd_http_request_duration_seconds_bucket{method=\"GET\",route=\"/"
                    "healthz\",le=\"0.05\"} 2\n"));
    CHECK(strstr(t, "ctxd_http_request_duration_seconds_bucket{method=\"GET\",route=\"/"
                    "healthz\",le=\"+Inf\"} 2\n"));
    CHECK(strstr(
        t,
        "ctxd_upstream_calls_total{provider=\"anthropic\",status=\"529\",outcome=\"error\"} 1\n"));
    CHECK(strstr(t, "ctxd_upstream_retries_total{provider=\"anthropic\"} 2\n"));
    CHECK(strstr(t, "ctxd_tokens_total{provider=\"echo\",direction=\"input\"} 10\n"));
    CHECK(strstr(t, "ctxd_lock_wait_seconds_count 0\n"));
    free(t);
}

TEST_MAIN(T(test_metrics_render_counts_and_buckets))
