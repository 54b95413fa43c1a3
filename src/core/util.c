/* util.c: ids, clocks, UTF-8 validation and hashing. */
#include "ctxd/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* Each thread draws random bytes from its own pool, refilled by one
 * getrandom(2) call: a turn takes four ids, and a syscall each cost more
 * than the rest of making them. Bytes handed out are wiped from the pool. */
#define POOL_BYTES 256
static _Thread_local unsigned char pool[POOL_BYTES];
static _Thread_local size_t pool_left;

static int getrandom_all(unsigned char *p, size_t len) {
    while (len) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return CTXD_ERR;
        }
        p += n;
        len -= (size_t)n;
    }
    return CTXD_OK;
}

static int fill_random(void *buf, size_t len) {
    if (len > POOL_BYTES / 4) return getrandom_all(buf, len);
    if (pool_left < len) {
        if (getrandom_all(pool, POOL_BYTES)) return CTXD_ERR;
        pool_left = POOL_BYTES;
    }
    unsigned char *from = pool + (POOL_BYTES - pool_left);
    memcpy(buf, from, len);
    memset(from, 0, len);
    pool_left -= len;
    return CTXD_OK;
}

int util_uuid4(char out[UTIL_UUID_LEN + 1]) {
    unsigned char b[16];
    if (fill_random(b, sizeof(b))) return CTXD_ERR;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, UTIL_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return CTXD_OK;
}

int util_token(char out[33]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    if (fill_random(b, sizeof(b))) return CTXD_ERR;
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
    return CTXD_OK;
}

int util_token62(char *out, size_t n) {
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char b[16];
    size_t have = 0, used = 0;
    while (used < n) {
        if (have == 0) {
            if (fill_random(b, sizeof(b))) return CTXD_ERR;
            have = sizeof(b);
        }
        unsigned char v = b[--have];
        if (v < 248) out[used++] = digits[v % 62]; /* 248 = 4 * 62: no bias */
    }
    out[n] = '\0';
    return CTXD_OK;
}

unsigned util_rand(unsigned n) {
    unsigned v = 0;
    if (n == 0) return 0;
    if (fill_random(&v, sizeof(v))) v = (unsigned)util_mono_ms();
    return v % n;
}

int util_is_context_id(const char *s) {
    if (!s || strlen(s) != UTIL_UUID_LEN) return 0;
    for (int i = 0; i < UTIL_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

int util_is_idem_key(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > UTIL_IDEM_KEY_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e) return 0;
    return 1;
}

int64_t util_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void util_iso8601(int64_t ms, char out[UTIL_ISO_LEN]) {
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[24];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, UTIL_ISO_LEN, "%s.%03dZ", base, (int)(ms % 1000));
}

int util_utf8_valid(const char *buf, size_t len) {
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            min = 0x80;
            c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            min = 0x800;
            c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return 0;
        }
        if (i + n >= len) return 0; /* truncated sequence */
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
        i += n + 1;
    }
    return 1;
}

uint64_t util_fnv1a(uint64_t seed, const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint64_t h = seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void util_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}
