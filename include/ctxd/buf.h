/* buf: a growable byte buffer with JSON string escaping. */
#ifndef CTXD_BUF_H
#define CTXD_BUF_H

#include <stddef.h>

#include "ctxd/common.h"

typedef struct buf {
    char *data; /* owned, always NUL-terminated once anything was added */
    size_t len, cap;
    int err; /* set once an allocation failed; later appends do nothing */
} buf;

void buf_init(buf *b);
void buf_free(buf *b); /* accepts a zeroed buf */

/* Appends; on out of memory they set b->err and return CTXD_ERR. */
int buf_putn(buf *b, const char *s, size_t n);
int buf_puts(buf *b, const char *s);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append s[0..n) as a quoted JSON string (s must be valid UTF-8). */
int buf_put_json_string(buf *b, const char *s, size_t n);

/* Hand over the data (caller frees); b is left empty. */
char *buf_take(buf *b, size_t *len);

#endif
