/* llm_retry.c: what a failed upstream status means, and when and after how long to try again. */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include <curl/curl.h>

#include "llm_http.h"

int llm_http_should_retry(int status, int should_retry) {
    if (should_retry == 1) return 1;
    if (should_retry == 0) return 0;
    return status == 408 || status == 409 || status == 429 || status >= 500;
}

/* A header value as a number: the whole value, surrounding spaces allowed. */
static int header_number(const char *s, double *out) {
    if (!s || !*s) return 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v)) return 0;
    while (*end == ' ' || *end == '\t') end++;
    if (*end) return 0;
    *out = v;
    return 1;
}

long llm_http_header_ms(const char *retry_after_ms, const char *retry_after, long now) {
    double v;
    if (header_number(retry_after_ms, &v) && v > 0) return v > 1e9 ? 1000000000L : (long)ceil(v);
    if (header_number(retry_after, &v))
        return v <= 0 ? -1 : v > 1e6 ? 1000000000L : (long)ceil(v * 1000);
    if (retry_after && *retry_after) {
        time_t t = curl_getdate(retry_after, NULL);
        if (t != (time_t)-1 && (long)t > now)
            return (long)t - now > 1000000 ? 1000000000L : ((long)t - now) * 1000;
    }
    return -1;
}

long llm_http_retry_wait_ms(const char *retry_after_ms, const char *retry_after, long now,
                            int retry, double rnd, long cap_ms) {
    long ms = llm_http_header_ms(retry_after_ms, retry_after, now);
    if (ms > 0 && ms <= cap_ms) return ms;
    double base = LLM_HTTP_BACKOFF_BASE_MS;
    for (int i = 0; i < retry && base < LLM_HTTP_BACKOFF_MAX_MS; i++) base *= 2;
    if (base > LLM_HTTP_BACKOFF_MAX_MS) base = LLM_HTTP_BACKOFF_MAX_MS;
    long wait = (long)(base * (1.0 - rnd * 0.25));
    return wait < cap_ms ? wait : cap_ms;
}

llm_err llm_http_status_err(int status) {
    if (status == 401 || status == 403) return LLM_ERR_AUTH;
    if (status == 429) return LLM_ERR_RATE;
    if (status == 503 || status == 529) return LLM_ERR_OVERLOADED;
    if (status == 408) return LLM_ERR_TIMEOUT;
    if (status >= 500) return LLM_ERR_UPSTREAM;
    if (status >= 400) return LLM_ERR_BAD_REQUEST;
    return LLM_ERR_UPSTREAM;
}
