/* util: ids, clocks, UTF-8 and hashing helpers with no outside dependencies. */
#ifndef CTXD_UTIL_H
#define CTXD_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/common.h"

#define UTIL_UUID_LEN 36
#define UTIL_ISO_LEN 32
#define UTIL_IDEM_KEY_MAX 255

/* Write a random version-4 UUID (lowercase, 36 chars + NUL) into out[37].
 * Returns CTXD_OK, or CTXD_ERR if the kernel gave no randomness. */
int util_uuid4(char out[UTIL_UUID_LEN + 1]);

/* 1 if s is a canonical lowercase version-4 UUID, else 0. */
int util_is_context_id(const char *s);

/* 1 if s is an acceptable Idempotency-Key: 1..255 printable ASCII, no
 * spaces. */
int util_is_idem_key(const char *s);

/* Milliseconds since the epoch (wall clock) and since an arbitrary point
 * (monotonic). */
int64_t util_now_ms(void);
int64_t util_mono_ms(void);
int64_t util_mono_us(void);

/* Format ms-since-epoch as ISO-8601 UTC, e.g. 2026-11-25T09:00:00.123Z. */
void util_iso8601(int64_t ms, char out[UTIL_ISO_LEN]);

/* 1 if buf[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
int util_utf8_valid(const char *buf, size_t len);

/* 64-bit FNV-1a over buf, chainable through seed (start with
 * UTIL_FNV_SEED). */
#define UTIL_FNV_SEED 14695981039346656037ULL
uint64_t util_fnv1a(uint64_t seed, const void *buf, size_t len);

/* Random token (hex, 32 chars + NUL) for lock ownership. */
int util_token(char out[33]);

/* n random letters and digits (base 62, about 5.95 bits each) and a NUL
 * into out[n + 1]. */
int util_token62(char *out, size_t n);

/* Sleep for ms milliseconds. */
void util_sleep_ms(int ms);

/* A random integer in [0, n). Not for secrets. */
unsigned util_rand(unsigned n);

#endif
