/* buf.c: growable buffers for building answers without extra copies. */
#include "ctxd/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(buf *b) { memset(b, 0, sizeof(*b)); }

void buf_free(buf *b) {
    if (!b) return;
    free(b->data);
    memset(b, 0, sizeof(*b));
}

static int reserve(buf *b, size_t more) {
    if (b->err) return CTXD_ERR;
    if (b->len + more + 1 <= b->cap) return CTXD_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->err = 1;
        return CTXD_ERR;
    }
    b->data = d;
    b->cap = cap;
    return CTXD_OK;
}

int buf_putn(buf *b, const char *s, size_t n) {
    if (reserve(b, n)) return CTXD_ERR;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return CTXD_OK;
}

int buf_puts(buf *b, const char *s) { return buf_putn(b, s, strlen(s)); }

int buf_printf(buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n)) return CTXD_ERR;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return CTXD_OK;
}

int buf_put_json_string(buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (reserve(b, n + 2)) return CTXD_ERR;
    b->data[b->len++] = '"';
    size_t run = 0; /* bytes copied verbatim since the last escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20) {
            u[0] = '\\';
            u[1] = 'u';
            u[2] = '0';
            u[3] = '0';
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            u[6] = '\0';
            esc = u;
        }
        if (!esc) {
            run++;
            continue;
        }
        if (buf_putn(b, s + i - run, run) || buf_puts(b, esc)) return CTXD_ERR;
        run = 0;
    }
    if (buf_putn(b, s + n - run, run) || buf_putn(b, "\"", 1)) return CTXD_ERR;
    return CTXD_OK;
}

char *buf_take(buf *b, size_t *len) {
    if (b->err) {
        buf_free(b);
        return NULL;
    }
    if (!b->data && reserve(b, 0)) return NULL;
    if (b->len == 0) b->data[0] = '\0';
    char *d = b->data;
    if (len) *len = b->len;
    memset(b, 0, sizeof(*b));
    return d;
}
