/* json_strict.c: the strict JSON grammar (RFC 8259), checked without building anything. */
#include "ctxd/json_strict.h"

typedef struct scan {
    const char *s, *p, *end;
    int depth, max_depth;
    json_strict_result bad;
    const char *why;
} scan;

static int fail(scan *sc, json_strict_result r, const char *why) {
    if (!sc->bad) {
        sc->bad = r;
        sc->why = why;
    }
    return CTXD_ERR;
}

static void ws(scan *sc) {
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static int hex4(scan *sc, unsigned *v) {
    *v = 0;
    if (sc->end - sc->p < 4) return fail(sc, JSON_STRICT_SYNTAX, "a short \\u escape");
    for (int i = 0; i < 4; i++, sc->p++) {
        char c = *sc->p;
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d > 15) return fail(sc, JSON_STRICT_SYNTAX, "a bad \\u escape");
        *v = *v << 4 | d;
    }
    return CTXD_OK;
}

static int string(scan *sc) {
    sc->p++; /* the opening quote */
    while (sc->p < sc->end) {
        unsigned char c = (unsigned char)*sc->p;
        if (c == '"') {
            sc->p++;
            return CTXD_OK;
        }
        if (c < 0x20) return fail(sc, JSON_STRICT_SYNTAX, "a raw control byte in a string");
        sc->p++;
        if (c != '\\') continue;
        if (sc->p >= sc->end) break;
        char e = *sc->p++;
        if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
            e == 't')
            continue;
        unsigned cp, lo;
        if (e != 'u') return fail(sc, JSON_STRICT_SYNTAX, "an unknown escape in a string");
        const char *at = sc->p - 2;
        if (hex4(sc, &cp)) return CTXD_ERR;
        if (cp == 0) {
            sc->p = at;
            return fail(sc, JSON_STRICT_SYNTAX, "a \\u0000 (NUL) in a string");
        }
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            sc->p = at;
            return fail(sc, JSON_STRICT_ENCODING, "a lone \\u surrogate escape");
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (sc->end - sc->p < 6 || sc->p[0] != '\\' || sc->p[1] != 'u') {
                sc->p = at;
                return fail(sc, JSON_STRICT_ENCODING, "a lone \\u surrogate escape");
            }
            sc->p += 2;
            if (hex4(sc, &lo)) return CTXD_ERR;
            if (lo < 0xdc00 || lo > 0xdfff) {
                sc->p = at;
                return fail(sc, JSON_STRICT_ENCODING, "a lone \\u surrogate escape");
            }
        }
    }
    return fail(sc, JSON_STRICT_SYNTAX, "a string that does not end");
}

static int digits(scan *sc) {
    const char *start = sc->p;
    while (sc->p < sc->end && *sc->p >= '0' && *sc->p <= '9') sc->p++;
    return sc->p > start ? CTXD_OK : fail(sc, JSON_STRICT_SYNTAX, "a malformed number");
}

static int number(scan *sc) {
    if (*sc->p == '-') sc->p++;
    if (sc->p < sc->end && *sc->p == '0') {
        sc->p++;
    } else if (digits(sc)) {
        return CTXD_ERR;
    }
    if (sc->p < sc->end && *sc->p == '.') {
        sc->p++;
        if (digits(sc)) return CTXD_ERR;
    }
    if (sc->p < sc->end && (*sc->p == 'e' || *sc->p == 'E')) {
        sc->p++;
        if (sc->p < sc->end && (*sc->p == '+' || *sc->p == '-')) sc->p++;
        if (digits(sc)) return CTXD_ERR;
    }
    return CTXD_OK;
}

static int literal(scan *sc, const char *word) {
    for (const char *w = word; *w; w++, sc->p++)
        if (sc->p >= sc->end || *sc->p != *w)
            return fail(sc, JSON_STRICT_SYNTAX, "not a JSON value (NaN and Infinity are not JSON)");
    return CTXD_OK;
}

static int value(scan *sc);

/* An object or array: members until the closing bracket. */
static int container(scan *sc, char close) {
    if (++sc->depth > sc->max_depth) return fail(sc, JSON_STRICT_SYNTAX, "nested too deeply");
    sc->p++;
    ws(sc);
    if (sc->p < sc->end && *sc->p == close) {
        sc->p++;
        sc->depth--;
        return CTXD_OK;
    }
    for (;;) {
        if (close == '}') {
            if (sc->p >= sc->end || *sc->p != '"')
                return fail(sc, JSON_STRICT_SYNTAX, "an object key must be a string");
            if (string(sc)) return CTXD_ERR;
            ws(sc);
            if (sc->p >= sc->end || *sc->p != ':')
                return fail(sc, JSON_STRICT_SYNTAX, "a ':' is missing after a key");
            sc->p++;
        }
        if (value(sc)) return CTXD_ERR;
        ws(sc);
        if (sc->p < sc->end && *sc->p == ',') {
            sc->p++;
            ws(sc);
            continue;
        }
        if (sc->p < sc->end && *sc->p == close) {
            sc->p++;
            sc->depth--;
            return CTXD_OK;
        }
        return fail(sc, JSON_STRICT_SYNTAX, "a ',' or a closing bracket is missing");
    }
}

static int value(scan *sc) {
    ws(sc);
    if (sc->p >= sc->end) return fail(sc, JSON_STRICT_SYNTAX, "unexpected end of input");
    switch (*sc->p) {
    case '{': return container(sc, '}');
    case '[': return container(sc, ']');
    case '"': return string(sc);
    case 't': return literal(sc, "true");
    case 'f': return literal(sc, "false");
    case 'n': return literal(sc, "null");
    default:
        if (*sc->p == '-' || (*sc->p >= '0' && *sc->p <= '9')) return number(sc);
        return fail(sc, JSON_STRICT_SYNTAX, "not a JSON value (NaN and Infinity are not JSON)");
    }
}

json_strict_result json_strict_check(const char *s, size_t len, int max_depth, size_t *at,
                                     const char **why) {
    scan sc = {s, s, s + len, 0, max_depth, JSON_STRICT_OK, NULL};
    if (value(&sc) == CTXD_OK) {
        ws(&sc);
        if (sc.p < sc.end) fail(&sc, JSON_STRICT_SYNTAX, "data after the JSON value");
    }
    *at = (size_t)(sc.p - s);
    *why = sc.why;
    return sc.bad;
}
