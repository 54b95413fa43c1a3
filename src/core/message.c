/* message.c: encode and decode stored messages with a small purpose-built
 * JSON reader; json-c would build (and free) a tree per message. */
#include "ctxd/message.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/util.h"

int message_encode(buf *b, const message *m) {
    char iso[UTIL_ISO_LEN];
    util_iso8601(m->created_ms, iso);
    /* seq, role and tokens come first, in this order: the store's scripts
     * read them from this prefix without decoding the message (msg_head in
     * lua/context.lua). */
    buf_printf(b, "{\"seq\":%" PRId64 ",\"role\":", m->seq);
    buf_put_json_string(b, m->role, strlen(m->role));
    buf_printf(b, ",\"tokens\":%" PRId64, m->tokens);
    if (m->tool_result) buf_puts(b, ",\"tool_result\":true");
    if (m->id) {
        buf_puts(b, ",\"id\":");
        buf_put_json_string(b, m->id, strlen(m->id));
    }
    buf_puts(b, ",\"content\":");
    if (m->content_json)
        buf_putn(b, m->content, m->content_len);
    else
        buf_put_json_string(b, m->content, m->content_len);
    if (m->metadata) {
        buf_puts(b, ",\"metadata\":");
        buf_putn(b, m->metadata, m->metadata_len);
    }
    buf_printf(b, ",\"created_at\":\"%s\"", iso);
    if (m->model || m->stop_reason || m->input_tokens >= 0 || m->output_tokens >= 0) {
        buf_puts(b, ",\"usage\":{\"input_tokens\":");
        if (m->input_tokens >= 0)
            buf_printf(b, "%" PRId64, m->input_tokens);
        else
            buf_puts(b, "null");
        buf_puts(b, ",\"output_tokens\":");
        if (m->output_tokens >= 0)
            buf_printf(b, "%" PRId64, m->output_tokens);
        else
            buf_puts(b, "null");
        if (m->cache_creation_input_tokens > 0)
            buf_printf(b, ",\"cache_creation_input_tokens\":%" PRId64,
                       m->cache_creation_input_tokens);
        if (m->cache_read_input_tokens > 0)
            buf_printf(b, ",\"cache_read_input_tokens\":%" PRId64, m->cache_read_input_tokens);
        buf_puts(b, "}");
        if (m->model && *m->model) {
            buf_puts(b, ",\"model\":");
            buf_put_json_string(b, m->model, strlen(m->model));
        }
        if (m->stop_reason && *m->stop_reason) {
            buf_puts(b, ",\"stop_reason\":");
            buf_put_json_string(b, m->stop_reason, strlen(m->stop_reason));
        }
    }
    buf_puts(b, "}");
    return b->err ? CTXD_ERR : CTXD_OK;
}

int64_t message_tokens(size_t bytes) {
    return message_system_tokens(bytes) + MESSAGE_TOKEN_OVERHEAD;
}

int64_t message_system_tokens(size_t bytes) { return (int64_t)(bytes / MESSAGE_BYTES_PER_TOKEN); }

typedef struct reader {
    const char *p, *end;
} reader;

static void skip_ws(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

static int hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d > 15) return CTXD_ERR;
        *v = *v << 4 | d;
    }
    return CTXD_OK;
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at r->p (the opening quote), unescaped into out when out is not
 * NULL (never longer than its escaped form). */
static int read_string(reader *r, char *out, size_t *len) {
    size_t n = 0;
    if (r->p >= r->end || *r->p != '"') return CTXD_ERR;
    r->p++;
    while (r->p < r->end && *r->p != '"') {
        char c = *r->p++;
        if (c != '\\') {
            if (out) out[n] = c;
            n++;
            continue;
        }
        if (r->p >= r->end) return CTXD_ERR;
        char e = *r->p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (simple && e) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            if (out) out[n] = map[simple - "\"\\/bfnrt"];
            n++;
            continue;
        }
        unsigned cp, lo;
        if (e != 'u' || r->end - r->p < 4 || hex4(r->p, &cp)) return CTXD_ERR;
        r->p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' || hex4(r->p + 2, &lo) ||
                lo < 0xdc00 || lo > 0xdfff)
                return CTXD_ERR;
            r->p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            return CTXD_ERR;
        }
        char tmp[4];
        size_t k = put_utf8(tmp, cp);
        if (out) memcpy(out + n, tmp, k);
        n += k;
    }
    if (r->p >= r->end) return CTXD_ERR;
    r->p++;
    *len = n;
    return CTXD_OK;
}

/* Skip any value: string, number, literal, or a nested object or array. */
static int skip_value(reader *r) {
    int depth = 0;
    do {
        skip_ws(r);
        if (r->p >= r->end) return CTXD_ERR;
        char c = *r->p;
        size_t dummy;
        if (c == '"') {
            if (read_string(r, NULL, &dummy)) return CTXD_ERR;
        } else if (c == '{' || c == '[') {
            depth++;
            r->p++;
        } else if (c == '}' || c == ']') {
            if (--depth < 0) return CTXD_ERR;
            r->p++;
        } else {
            while (r->p < r->end && !strchr(",}] \n\r\t", *r->p)) r->p++;
        }
        skip_ws(r);
        if (depth > 0 && r->p < r->end && (*r->p == ',' || *r->p == ':')) r->p++;
    } while (depth > 0);
    return CTXD_OK;
}

static int read_int(reader *r, int64_t *v) {
    int neg = 0;
    int64_t n = 0;
    if (r->p < r->end && *r->p == '-') neg = 1, r->p++;
    const char *start = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') n = n * 10 + (*r->p++ - '0');
    if (r->p == start) return CTXD_ERR;
    *v = neg ? -n : n;
    return CTXD_OK;
}

int message_decode(const char *json, size_t len, char *arena, size_t *used, message *out) {
    reader r = {json, json + len};
    memset(out, 0, sizeof(*out));
    out->seq = out->tokens = out->input_tokens = out->output_tokens = -1;
    skip_ws(&r);
    if (r.p >= r.end || *r.p++ != '{') return CTXD_ERR;
    for (;;) {
        skip_ws(&r);
        if (r.p < r.end && *r.p == '}') break;
        size_t klen;
        const char *key = r.p + 1;
        if (read_string(&r, NULL, &klen)) return CTXD_ERR;
        skip_ws(&r);
        if (r.p >= r.end || *r.p++ != ':') return CTXD_ERR;
        skip_ws(&r);
        int is_role = klen == 4 && !memcmp(key, "role", 4);
        int is_content = klen == 7 && !memcmp(key, "content", 7);
        if (is_content && r.p < r.end && *r.p == '[') {
            /* Content blocks: kept as JSON text. */
            const char *start = r.p;
            if (skip_value(&r)) return CTXD_ERR;
            char *dst = arena + *used;
            size_t n = (size_t)(r.p - start);
            while (n && strchr(" \n\r\t", start[n - 1])) n--;
            memcpy(dst, start, n);
            dst[n] = '\0';
            *used += n + 1;
            out->content = dst, out->content_len = n, out->content_json = 1;
        } else if (is_role || is_content) {
            char *dst = arena + *used;
            size_t n;
            if (read_string(&r, dst, &n)) return CTXD_ERR;
            dst[n] = '\0';
            *used += n + 1;
            if (is_role)
                out->role = dst;
            else
                out->content = dst, out->content_len = n;
        } else if ((klen == 3 && !memcmp(key, "seq", 3)) ||
                   (klen == 6 && !memcmp(key, "tokens", 6))) {
            if (read_int(&r, key[0] == 's' ? &out->seq : &out->tokens)) return CTXD_ERR;
        } else if (skip_value(&r)) {
            return CTXD_ERR;
        }
        skip_ws(&r);
        if (r.p < r.end && *r.p == ',')
            r.p++;
        else if (r.p < r.end && *r.p == '}')
            break;
        else
            return CTXD_ERR;
    }
    return out->role && out->content ? CTXD_OK : CTXD_ERR;
}

/* Digits at *p into *v; advances *p. 0 when there are none. */
static int head_int(const char **p, const char *end, int64_t *v) {
    const char *q = *p;
    int64_t n = 0;
    while (q < end && *q >= '0' && *q <= '9' && q - *p < 18) n = n * 10 + (*q++ - '0');
    if (q == *p) return 0;
    *v = n;
    *p = q;
    return 1;
}

static int head_skip(const char **p, const char *end, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n)) return 0;
    *p += n;
    return 1;
}

int message_head(const char *raw, size_t len, char role[16], int64_t *tokens, int64_t *seq) {
    const char *p = raw, *end = raw + len;
    role[0] = '\0';
    *tokens = *seq = -1;
    /* The prefix message_encode writes: {"seq":N,"role":"R","tokens":T, */
    if (head_skip(&p, end, "{\"seq\":") && head_int(&p, end, seq) &&
        head_skip(&p, end, ",\"role\":\"")) {
        const char *r = p;
        while (p < end && *p != '"' && p - r < 15) p++;
        size_t rl = (size_t)(p - r);
        if (head_skip(&p, end, "\",\"tokens\":") && head_int(&p, end, tokens) &&
            head_skip(&p, end, ",")) {
            memcpy(role, r, rl);
            role[rl] = '\0';
            /* A user message of tool results starts no unit. */
            if (head_skip(&p, end, "\"tool_result\":true,")) snprintf(role, 16, "tool_result");
            return CTXD_OK;
        }
    }
    /* Another field order (ctxd 0.4 and before): decode. */
    *tokens = *seq = -1;
    char *arena = malloc(len + 1);
    size_t used = 0;
    message m;
    if (!arena) return CTXD_ERR;
    if (message_decode(raw, len, arena, &used, &m) == CTXD_OK) {
        snprintf(role, 16, "%s", m.role ? m.role : "");
        *tokens = m.tokens;
        *seq = m.seq;
    }
    free(arena);
    return CTXD_OK;
}
