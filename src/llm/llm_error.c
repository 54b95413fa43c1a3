/* llm_error.c: upstream error text: error bodies read in any shape, with the API key scrubbed. */
#include <stdlib.h>
#include <string.h>

#include "llm_http.h"

/* Cut a UTF-8 sequence left incomplete at the end of s (by a truncation). */
static void utf8_trim(char *s) {
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i == 0 || (unsigned char)s[i - 1] < 0xC0) return; /* ASCII or stray */
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    if (n - (i - 1) < need) s[i - 1] = '\0';
}

/* Copy s into out, control characters as spaces, runs of space collapsed. */
static void copy_text(char *out, size_t cap, const char *s, size_t len) {
    size_t w = 0;
    if (!cap) return;
    for (size_t i = 0; i < len && w + 1 < cap; i++) {
        char c = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
        if (c == ' ' && (w == 0 || out[w - 1] == ' ')) continue;
        out[w++] = c;
    }
    while (w && out[w - 1] == ' ') w--;
    out[w] = '\0';
    utf8_trim(out);
}

/* Replace every secret in s (size cap) with a mark, cutting what no longer fits. */
static void redact(char *s, size_t cap, const char *secret) {
    static const char mark[] = "[redacted]";
    size_t sl = secret ? strlen(secret) : 0;
    if (!sl || !s) return;
    char *p = s;
    while ((p = strstr(p, secret)) != NULL) {
        size_t tail = strlen(p + sl);
        size_t ml = sizeof(mark) - 1;
        size_t room = cap - (size_t)(p - s) - 1; /* bytes from p to the end */
        if (ml > room) ml = room;
        if (ml + tail > room) tail = room - ml;
        memmove(p + ml, p + sl, tail);
        memcpy(p, mark, ml);
        p[ml + tail] = '\0';
        p += ml; /* the mark itself is never searched again */
    }
}

void llm_http_scrub(char *s, size_t cap, const char *secret) {
    redact(s, cap, secret);
    if (s) utf8_trim(s);
}

void llm_http_copy_scrubbed(char *out, size_t cap, const char *s, size_t len, const char *secret) {
    if (!secret || !*secret) {
        copy_text(out, cap, s, len);
        return;
    }
    size_t room = len * 2 + 32; /* "[redacted]" may be longer than the key */
    char *tmp = malloc(room);
    if (!tmp) {
        if (cap) out[0] = '\0';
        return;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    redact(tmp, room, secret);
    copy_text(out, cap, tmp, strlen(tmp));
    free(tmp);
}

/* A type or code field: a string, or a number written out. */
static void copy_code(char *out, size_t cap, json_object *v, const char *secret) {
    if (!v || json_object_is_type(v, json_type_null)) return;
    const char *s = json_object_is_type(v, json_type_string)
                        ? json_object_get_string(v)
                        : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    if (s) llm_http_copy_scrubbed(out, cap, s, strlen(s), secret);
}

void llm_http_error_info(const char *body, size_t len, const char *secret, char *type,
                         size_t typelen, char *msg, size_t msglen) {
    if (typelen) type[0] = '\0';
    if (msglen) msg[0] = '\0';
    if (!body || !len) return;
    json_object *o = llm_json_parse(body, len);
    if (!o || !json_object_is_type(o, json_type_object)) {
        if (!o) llm_http_copy_scrubbed(msg, msglen, body, len, secret);
        json_object_put(o);
        return;
    }
    json_object *e = NULL, *v = NULL;
    const char *m = NULL;
    if (json_object_object_get_ex(o, "error", &e) && json_object_is_type(e, json_type_object)) {
        if (json_object_object_get_ex(e, "type", &v) && !json_object_is_type(v, json_type_null))
            copy_code(type, typelen, v, secret);
        else if (json_object_object_get_ex(e, "code", &v))
            copy_code(type, typelen, v, secret);
        m = llm_json_str(e, "message");
    } else if (e && json_object_is_type(e, json_type_string)) {
        m = json_object_get_string(e);
    } else if (json_object_object_get_ex(o, "detail", &v)) {
        m = json_object_is_type(v, json_type_string)
                ? json_object_get_string(v)
                : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    } else {
        m = llm_json_str(o, "message");
    }
    if (m) llm_http_copy_scrubbed(msg, msglen, m, strlen(m), secret);
    json_object_put(o);
}
