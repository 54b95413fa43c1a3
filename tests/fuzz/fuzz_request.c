/* fuzz_request.c: the request path fuzzed: head parser, chunked decoder, strict JSON check.
 *
 * One input is read the way the front door reads a connection: heads parsed
 * by http_parse_head, each followed by its body (Content-Length bytes, or a
 * chunked body fed to http_chunked_feed whole and again in pieces), up to a
 * few pipelined requests; every body (or the whole input when no head
 * parses) goes through json_strict_check, and what it accepts json-c must
 * parse too. Invariants that fail abort, so the sanitizers and the checks
 * both make a run fail.
 *
 * ctest runs it without libFuzzer: main() below mutates the seeds in
 * tests/fuzz/corpus/ with a seeded random mutator (byte flips, inserts,
 * deletions, splices, repeated slices, HTTP and JSON tokens) and keeps
 * mutants that reach a new outcome as further seeds:
 *   fuzz_request <corpus_dir> [iterations] [seed] [seconds]
 *   fuzz_request <file>           (replay one input, e.g. a saved failure)
 * A failing input is written to fuzz_request-failure.bin in the working
 * directory.
 *
 * With libFuzzer (coverage-guided; Debian: apt-get install clang libclang-rt-14-dev),
 * from the repository root:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DCTXD_LIBFUZZER -Iinclude \
 *     tests/fuzz/fuzz_request.c src/http/http_parse.c src/core/json_strict.c src/core/util.c \
 *     $(pkg-config --cflags --libs json-c) -o /tmp/fuzz_request
 *   mkdir -p /tmp/fuzz-corpus && /tmp/fuzz_request -max_total_time=60 -max_len=4096 \
 *     /tmp/fuzz-corpus tests/fuzz/corpus
 * (new inputs go to the first folder; the seeds stay as they are). */
#include <dirent.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../../src/http/http_parse.h"
#include "ctxd/json_strict.h"
#include "ctxd/util.h"

#define FUZZ_MAX_HEAD 2048  /* small, so the size limit is reached often */
#define FUZZ_MAX_BODY 1024  /* the chunked decoder's limit */
#define FUZZ_SMALL_BODY 8   /* and a limit that bodies pass often */
#define FUZZ_JSON_DEPTH 16  /* small, so the depth limit is reached too */
#define FUZZ_MAX_REQUESTS 4 /* pipelined requests read from one input */
#define FUZZ_MAX_INPUT 8192 /* mutants are cut to this size */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- Invariants ---- */

static const uint8_t *current_data;
static size_t current_size;

static void fuzz_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "fuzz_request: invariant failed at %s:%d: %s\n", file, line, what);
#ifndef CTXD_LIBFUZZER
    FILE *f = fopen("fuzz_request-failure.bin", "wb");
    if (f) {
        fwrite(current_data, 1, current_size, f);
        fclose(f);
        fprintf(stderr, "fuzz_request: the input (%zu bytes) is in fuzz_request-failure.bin\n",
                current_size);
    }
#endif
    abort();
}

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) fuzz_fail(__FILE__, __LINE__, #cond);                                         \
    } while (0)

/* A string the parser returned lies in buf[0..len) and ends there. */
static void require_inside(const char *s, const char *buf, size_t len) {
    REQUIRE(s >= buf && s < buf + len);
    REQUIRE(memchr(s, '\0', len - (size_t)(s - buf)) != NULL);
}

/* The outcome counts the summary prints; also a fingerprint of each input's
 * path through the code, which the mutator uses to keep new seeds. */
static struct {
    unsigned long head[3], chunked[4], json[3], jsonc_checked, requests, small_too_large;
} seen;
static uint64_t trail;

static void note(uint64_t v) { trail = (trail ^ v) * 1099511628211ULL; }
static void note_str(const char *s) {
    while (s && *s) note((unsigned char)*s++);
    note(0x2f);
}

/* ---- JSON ---- */

/* What json_strict_check accepts, json-c (as the server sets it up, one
 * level deeper: json-c counts depth from 0) must parse. */
static void check_json(const char *body, size_t len) {
    size_t at = (size_t)-1;
    const char *why = NULL;
    json_strict_result r = json_strict_check(body, len, FUZZ_JSON_DEPTH, &at, &why);
    REQUIRE(r == JSON_STRICT_OK || r == JSON_STRICT_SYNTAX || r == JSON_STRICT_ENCODING);
    REQUIRE(at <= len);
    seen.json[r]++;
    note(100 + (uint64_t)r);
    note_str(why);
    if (r != JSON_STRICT_OK) {
        REQUIRE(why != NULL && why[0] != '\0');
        return;
    }
    REQUIRE(why == NULL);
    REQUIRE(at == len);
    /* json-c needs an end-of-input byte to end a top-level number. A strict
     * document holds no NUL, so the NUL ends it. */
    char *z = malloc(len + 1);
    REQUIRE(z != NULL);
    memcpy(z, body, len);
    z[len] = '\0';
    int utf8 = util_utf8_valid(body, len);
    json_tokener *tok = json_tokener_new_ex(FUZZ_JSON_DEPTH + 1);
    REQUIRE(tok != NULL);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | (utf8 ? JSON_TOKENER_VALIDATE_UTF8 : 0));
    json_object *o = json_tokener_parse_ex(tok, z, (int)len + 1);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (e != json_tokener_success)
        fprintf(stderr, "fuzz_request: json-c refused what json_strict accepted: %s\n",
                json_tokener_error_desc(e));
    REQUIRE(e == json_tokener_success);
    json_object_put(o);
    json_tokener_free(tok);
    free(z);
    seen.jsonc_checked++;
}

/* ---- Chunked bodies ---- */

typedef struct {
    int rc;
    size_t used; /* input taken, all calls together */
    char *out;   /* exactly max bytes: ASan sees a write past max */
    size_t out_len;
} decoded;

/* Feed in[0..len) cut at the given offsets (ascending, <= len), at most
 * max bytes of data. */
static decoded decode(const char *in, size_t len, const size_t *cuts, size_t n_cuts, size_t max) {
    decoded d = {HTTP_PARSE_INCOMPLETE, 0, malloc(max), 0};
    REQUIRE(d.out != NULL);
    http_chunked c;
    memset(&c, 0, sizeof(c));
    size_t at = 0;
    for (size_t i = 0; i <= n_cuts && d.rc == HTTP_PARSE_INCOMPLETE; i++) {
        size_t stop = i < n_cuts ? cuts[i] : len, used = (size_t)-1, before = d.out_len;
        REQUIRE(stop >= at && stop <= len);
        /* Each piece in a buffer of its own size: no peeking at the next. */
        char *piece = malloc(stop - at ? stop - at : 1);
        REQUIRE(piece != NULL);
        memcpy(piece, in + at, stop - at);
        d.rc = http_chunked_feed(&c, piece, stop - at, &used, d.out, &d.out_len, max);
        free(piece);
        REQUIRE(d.rc == HTTP_PARSE_DONE || d.rc == HTTP_PARSE_INCOMPLETE ||
                d.rc == HTTP_PARSE_ERROR || d.rc == HTTP_CHUNKED_TOO_LARGE);
        REQUIRE(used <= stop - at);
        REQUIRE(d.out_len >= before && d.out_len <= max);
        REQUIRE(d.out_len - before <= used); /* data is never longer than its framing */
        if (d.rc == HTTP_PARSE_INCOMPLETE) REQUIRE(used == stop - at);
        if (d.rc == HTTP_PARSE_ERROR)
            REQUIRE(c.error[0] != '\0' && memchr(c.error, '\0', sizeof(c.error)));
        if (d.rc == HTTP_PARSE_DONE) REQUIRE(used > 0 && in[at + used - 1] == '\n');
        d.used += used;
        at = stop;
    }
    /* Once done, it stays done and takes nothing more. */
    if (d.rc == HTTP_PARSE_DONE && d.used < len) {
        size_t used = (size_t)-1, before = d.out_len;
        REQUIRE(http_chunked_feed(&c, in + d.used, len - d.used, &used, d.out, &d.out_len, max) ==
                HTTP_PARSE_DONE);
        REQUIRE(used == 0 && d.out_len == before);
    }
    return d;
}

/* Decode a chunked body whole, then in pieces cut where the input's own
 * bytes say; both must agree. Returns the bytes the body took, or 0 when
 * it did not end. */
static size_t check_chunked(const char *in, size_t len) {
    decoded whole = decode(in, len, NULL, 0, FUZZ_MAX_BODY);
    seen.chunked[whole.rc + 2]++;
    note(200 + (uint64_t)(whole.rc + 2));
    size_t cuts[6], n_cuts = 0;
    uint64_t h = 1469598103934665603ULL ^ len;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)in[i]) * 1099511628211ULL;
    for (size_t i = 0; i < 6 && len; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        cuts[n_cuts++] = (size_t)(h >> 33) % (len + 1);
    }
    for (size_t i = 1; i < n_cuts; i++) /* ascending */
        for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    decoded pieces = decode(in, len, cuts, n_cuts, FUZZ_MAX_BODY);
    REQUIRE(pieces.rc == whole.rc);
    /* A smaller limit: refused exactly when the data passes it. */
    decoded small = decode(in, len, NULL, 0, FUZZ_SMALL_BODY);
    if (whole.rc == HTTP_CHUNKED_TOO_LARGE || whole.out_len > FUZZ_SMALL_BODY) {
        REQUIRE(small.rc == HTTP_CHUNKED_TOO_LARGE);
        seen.small_too_large++;
    } else
        REQUIRE(small.rc == whole.rc && small.used == whole.used);
    free(small.out);
    if (whole.rc != HTTP_CHUNKED_TOO_LARGE) REQUIRE(pieces.used == whole.used);
    if (whole.rc == HTTP_PARSE_DONE || whole.rc == HTTP_PARSE_INCOMPLETE) {
        REQUIRE(pieces.out_len == whole.out_len);
        REQUIRE(memcmp(pieces.out, whole.out, whole.out_len) == 0);
    }
    size_t took = 0;
    if (whole.rc == HTTP_PARSE_DONE) {
        check_json(whole.out, whole.out_len);
        took = whole.used;
    }
    free(whole.out);
    free(pieces.out);
    return took;
}

/* ---- Heads ---- */

/* h from buf[0..len), a copy of data that the parser cut in place. */
static void check_head(const http_head *h, const char *buf, size_t len, const uint8_t *data) {
    REQUIRE(h->head_len > 0 && h->head_len <= len && h->head_len <= FUZZ_MAX_HEAD);
    REQUIRE(data[h->head_len - 1] == '\n');
    size_t n = h->head_len;
    require_inside(h->method, buf, n);
    require_inside(h->target, buf, n);
    require_inside(h->path, buf, n);
    REQUIRE(h->path == h->target && h->path[0] == '/');
    if (h->query) {
        require_inside(h->query, buf, n);
        REQUIRE(h->query == h->path + strlen(h->path) + 1);
    }
    REQUIRE(!strchr(h->target, '#') && !strchr(h->target, ' '));
    REQUIRE(h->minor == 0 || h->minor == 1);
    REQUIRE(h->n_headers <= HTTP_MAX_HEADERS);
    for (size_t i = 0; i < h->n_headers; i++) {
        require_inside(h->headers[i].name, buf, n);
        require_inside(h->headers[i].value, buf, n);
        REQUIRE(h->headers[i].name[0] != '\0');
        for (const char *v = h->headers[i].value; *v; v++)
            REQUIRE(*v == '\t' || ((unsigned char)*v >= 0x20 && *v != 0x7f));
    }
    if (h->host) require_inside(h->host, buf, n);
    if (h->minor == 1) REQUIRE(h->host != NULL);
    REQUIRE(h->content_length >= -1 && h->content_length < 1000000000000000LL);
    REQUIRE(!(h->chunked && h->content_length >= 0));
    REQUIRE(!(h->chunked && h->minor == 0));
    REQUIRE(h->chunked == 0 || h->chunked == 1);
    REQUIRE(h->keep_alive == 0 || h->keep_alive == 1);
    REQUIRE(h->expect_continue == 0 || h->expect_continue == 1);
}

/* Parse the head at data[0..len) from a copy of exactly len bytes. */
static int parse_copy(const uint8_t *data, size_t len, http_head *h) {
    char *copy = malloc(len ? len : 1);
    REQUIRE(copy != NULL);
    memcpy(copy, data, len);
    int rc = http_parse_head(copy, len, FUZZ_MAX_HEAD, h);
    free(copy);
    return rc;
}

/* One request at data[0..size) (buf is its writable copy). Returns the
 * bytes it took, or 0 when no complete request is there. */
static size_t one_request(const uint8_t *data, char *buf, size_t size) {
    http_head h;
    int rc = http_parse_head(buf, size, FUZZ_MAX_HEAD, &h);
    REQUIRE(rc == HTTP_PARSE_DONE || rc == HTTP_PARSE_INCOMPLETE || rc == HTTP_PARSE_ERROR);
    seen.head[rc + 1]++;
    note(300 + (uint64_t)(rc + 1));
    if (rc == HTTP_PARSE_ERROR) {
        REQUIRE(h.error[0] != '\0' && memchr(h.error, '\0', sizeof(h.error)));
        note_str(h.error);
        return 0;
    }
    if (rc == HTTP_PARSE_INCOMPLETE) {
        /* Nothing is cut until the head is whole: the next read parses again. */
        REQUIRE(size <= FUZZ_MAX_HEAD);
        REQUIRE(size == 0 || memcmp(buf, data, size) == 0);
        return 0;
    }
    check_head(&h, buf, size, data);
    note(400 + (uint64_t)(h.minor * 8 + h.chunked * 4 + h.keep_alive * 2 + h.expect_continue));
    note(h.n_headers);
    /* Every shorter read of this head waits for more; the head alone is whole. */
    http_head again;
    REQUIRE(parse_copy(data, h.head_len - 1, &again) == HTTP_PARSE_INCOMPLETE);
    REQUIRE(parse_copy(data, h.head_len / 2, &again) == HTTP_PARSE_INCOMPLETE);
    REQUIRE(parse_copy(data, h.head_len, &again) == HTTP_PARSE_DONE);
    REQUIRE(again.head_len == h.head_len && again.n_headers == h.n_headers &&
            again.content_length == h.content_length && again.chunked == h.chunked &&
            again.keep_alive == h.keep_alive && again.minor == h.minor);
    seen.requests++;
    const char *body = buf + h.head_len;
    size_t left = size - h.head_len;
    if (h.chunked) {
        size_t took = check_chunked(body, left);
        return took ? h.head_len + took : 0;
    }
    size_t cl = h.content_length > 0 ? (size_t)h.content_length : 0;
    if (cl > left) {
        check_json(body, left); /* a short body is still checked for overreads */
        return 0;
    }
    if (cl) check_json(body, cl);
    return h.head_len + cl;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    current_data = data;
    current_size = size;
    trail = 14695981039346656037ULL;
    /* Exactly size bytes, so ASan catches a read past the end. */
    char *buf = malloc(size ? size : 1);
    REQUIRE(buf != NULL);
    if (size) memcpy(buf, data, size);
    size_t off = 0;
    for (int i = 0; i < FUZZ_MAX_REQUESTS && off < size; i++) {
        size_t took = one_request(data + off, buf + off, size - off);
        if (!took) break;
        REQUIRE(took <= size - off);
        off += took;
    }
    if (!off) { /* no request: the input as a body of either kind */
        check_chunked((const char *)data, size);
        check_json((const char *)data, size);
    }
    free(buf);
    return 0;
}

#ifndef CTXD_LIBFUZZER
/* ---- The stand-alone mutator ---- */

typedef struct {
    uint8_t *data;
    size_t len;
} input;

typedef struct {
    input *v;
    size_t n, cap;
} pool;

static uint64_t rng_state;

static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static void pool_add(pool *p, const uint8_t *data, size_t len) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->v = realloc(p->v, p->cap * sizeof(*p->v));
        REQUIRE(p->v != NULL);
    }
    p->v[p->n].data = malloc(len ? len : 1);
    REQUIRE(p->v[p->n].data != NULL);
    if (len) memcpy(p->v[p->n].data, data, len);
    p->v[p->n++].len = len;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_file(const char *path, pool *p) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    uint8_t tmp[FUZZ_MAX_INPUT];
    size_t n = fread(tmp, 1, sizeof(tmp), f);
    fclose(f);
    pool_add(p, tmp, n);
    return 0;
}

/* Every regular file of dir, in name order (so a seed means one run). */
static int load_corpus(const char *dir, pool *p) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        names = realloc(names, (n + 1) * sizeof(*names));
        REQUIRE(names != NULL);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), by_name);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) read_file(path, p);
        free(names[i]);
    }
    free(names);
    return 0;
}

/* Tokens of the grammars fuzzed; sizeof keeps the NUL one whole. */
#define TOK(s)                                                                                     \
    { s, sizeof(s) - 1 }
static const struct {
    const char *s;
    size_t n;
} tokens[] = {
    TOK("\r\n"),
    TOK("\n"),
    TOK("\r"),
    TOK("\r\n\r\n"),
    TOK("\n\n"),
    TOK(" "),
    TOK("\t"),
    TOK(":"),
    TOK(": "),
    TOK(","),
    TOK(", "),
    TOK(";"),
    TOK("="),
    TOK("?"),
    TOK("#"),
    TOK("/"),
    TOK("%00"),
    TOK("%2e"),
    TOK("\""),
    TOK("\\"),
    TOK("GET "),
    TOK("POST "),
    TOK("OPTIONS "),
    TOK("* "),
    TOK("http://x/y "),
    TOK(" HTTP/1.1"),
    TOK(" HTTP/1.0"),
    TOK(" HTTP/1.2"),
    TOK(" HTTP/2.0"),
    TOK("Host: a\r\n"),
    TOK("Host: "),
    TOK("Content-Length: "),
    TOK("Content-Length: 5, 5\r\n"),
    TOK("Transfer-Encoding: "),
    TOK("chunked"),
    TOK("Transfer-Encoding: chunked\r\n"),
    TOK("gzip, chunked"),
    TOK("identity"),
    TOK("Connection: "),
    TOK("close"),
    TOK("keep-alive"),
    TOK("Expect: 100-continue\r\n"),
    TOK(" \r\n"),
    TOK("\r\n "),
    TOK("0\r\n\r\n"),
    TOK("0\r\n"),
    TOK("5\r\nhello\r\n"),
    TOK("ffffffffffffffff"),
    TOK("fffffffffffffff"),
    TOK("999999999999999"),
    TOK("1000000000000000"),
    TOK("18446744073709551616"),
    TOK("-1"),
    TOK("0x10"),
    TOK(";ext=\"a;b\""),
    TOK("X-Trailer: 1\r\n"),
    TOK("\\u0000"),
    TOK("\\ud800"),
    TOK("\\udc00"),
    TOK("\\ud83d\\ude00"),
    TOK("\\uD800\\uDC00"),
    TOK("\\u00e9"),
    TOK("\\n"),
    TOK("\\x"),
    TOK("NaN"),
    TOK("Infinity"),
    TOK("-Infinity"),
    TOK("nan"),
    TOK("1e999"),
    TOK("-0"),
    TOK("01"),
    TOK("1."),
    TOK(".5"),
    TOK("1e+"),
    TOK("true"),
    TOK("false"),
    TOK("null"),
    TOK("["),
    TOK("]"),
    TOK("{"),
    TOK("}"),
    TOK("{\"a\":"),
    TOK("[[[[[[[["),
    TOK("]]]]]]]]"),
    TOK("\"k\":"),
    TOK("''"),
    TOK("\x00"),
    TOK("\x01"),
    TOK("\x7f"),
    TOK("\xff"),
    TOK("\xc3\xa9"),
    TOK("\xed\xa0\x80"),
    TOK("\xf0\x9f\x98\x80"),
};
#define N_TOKENS (sizeof(tokens) / sizeof(tokens[0]))

/* Insert n bytes of src at pos of buf (room for FUZZ_MAX_INPUT). */
static size_t insert(uint8_t *buf, size_t len, size_t pos, const void *src, size_t n) {
    if (len + n > FUZZ_MAX_INPUT) n = FUZZ_MAX_INPUT - len;
    memmove(buf + pos + n, buf + pos, len - pos);
    memcpy(buf + pos, src, n);
    return len + n;
}

static size_t mutate_once(uint8_t *buf, size_t len, const pool *seeds) {
    static const uint8_t bytes[] = {0,   '\r', '\n', ' ', '\t', ':',  ',',  ';',  '"', '\\', '0',
                                    '9', 'f',  'x',  '?', '#',  0x7f, 0x80, 0xff, '{', '['};
    size_t pos = below(len + 1);
    switch (below(11)) {
    case 0: /* flip a bit */
        if (len) buf[below(len)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* set a byte */
        if (len) buf[below(len)] = below(2) ? bytes[below(sizeof(bytes))] : (uint8_t)below(256);
        break;
    case 2: { /* insert random bytes */
        uint8_t r[4];
        size_t n = 1 + below(4);
        for (size_t i = 0; i < n; i++) r[i] = (uint8_t)below(256);
        len = insert(buf, len, pos, r, n);
        break;
    }
    case 3: { /* delete a range */
        if (!len) break;
        size_t at = below(len), n = 1 + below(len - at < 16 ? len - at : 16);
        memmove(buf + at, buf + at + n, len - at - n);
        len -= n;
        break;
    }
    case 4:
    case 5: { /* insert a token */
        size_t t = below(N_TOKENS);
        len = insert(buf, len, pos, tokens[t].s, tokens[t].n);
        break;
    }
    case 6: { /* overwrite with a token */
        size_t t = below(N_TOKENS), n = tokens[t].n;
        if (pos + n > len) break;
        memcpy(buf + pos, tokens[t].s, n);
        break;
    }
    case 7: { /* splice: this input's start, another's end */
        const input *o = &seeds->v[below(seeds->n)];
        size_t from = below(o->len + 1), n = o->len - from;
        if (pos + n > FUZZ_MAX_INPUT) n = FUZZ_MAX_INPUT - pos;
        memcpy(buf + pos, o->data + from, n);
        len = pos + n;
        break;
    }
    case 8: { /* insert a slice of another input */
        const input *o = &seeds->v[below(seeds->n)];
        size_t from = below(o->len + 1), n = below(o->len - from + 1);
        len = insert(buf, len, pos, o->data + from, n);
        break;
    }
    case 9: { /* repeat a slice of this input */
        if (!len) break;
        size_t at = below(len), n = 1 + below(len - at < 64 ? len - at : 64);
        uint8_t slice[64];
        memcpy(slice, buf + at, n);
        for (size_t k = 1 + below(8); k > 0; k--) len = insert(buf, len, at, slice, n);
        break;
    }
    default: /* cut the end off */ len = pos; break;
    }
    return len;
}

static uint64_t seen_trails[1 << 16];

/* 1 the first time an outcome fingerprint comes up. */
static int new_trail(uint64_t t) {
    if (!t) t = 1;
    size_t i = (size_t)(t & ((1 << 16) - 1));
    for (size_t k = 0; k < 64; k++, i = (i + 1) & ((1 << 16) - 1)) {
        if (seen_trails[i] == t) return 0;
        if (!seen_trails[i]) {
            seen_trails[i] = t;
            return 1;
        }
    }
    return 0; /* table crowded here: call it seen */
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <corpus_dir> [iterations] [seed] [seconds] | %s <file>\n",
                argv[0], argv[0]);
        return 2;
    }
    struct stat st;
    if (stat(argv[1], &st) == 0 && S_ISREG(st.st_mode)) {
        pool one = {0};
        if (read_file(argv[1], &one)) return 2;
        LLVMFuzzerTestOneInput(one.v[0].data, one.v[0].len);
        printf("fuzz_request: %s (%zu bytes) passed\n", argv[1], one.v[0].len);
        return 0;
    }
    unsigned long iterations = argc > 2 ? strtoul(argv[2], NULL, 10) : 200000;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    double seconds = argc > 4 ? strtod(argv[4], NULL) : 0;
    pool seeds = {0};
    if (load_corpus(argv[1], &seeds) || !seeds.n) {
        fprintf(stderr, "fuzz_request: no seed files in %s\n", argv[1]);
        return 2;
    }
    size_t n_corpus = seeds.n;
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    double start = now_s();
    /* The seeds as they are first: they are the regression set. */
    for (size_t i = 0; i < n_corpus; i++) {
        LLVMFuzzerTestOneInput(seeds.v[i].data, seeds.v[i].len);
        new_trail(trail);
    }
    static uint8_t buf[FUZZ_MAX_INPUT];
    unsigned long it, kept = 0;
    for (it = 0; it < iterations; it++) {
        if (seconds > 0 && (it & 255) == 0 && now_s() - start > seconds) break;
        /* Half the time a seed of the corpus, so new ones do not crowd them out. */
        const input *base = &seeds.v[below(below(2) ? n_corpus : seeds.n)];
        size_t len = base->len;
        memcpy(buf, base->data, len);
        for (size_t k = 1 + below(4); k > 0; k--) len = mutate_once(buf, len, &seeds);
        LLVMFuzzerTestOneInput(buf, len);
        if (!new_trail(trail)) continue;
        if (seeds.n < 4096) {
            pool_add(&seeds, buf, len);
        } else { /* full: a new outcome takes the place of an older mutant */
            input *old = &seeds.v[n_corpus + below(seeds.n - n_corpus)];
            free(old->data);
            old->data = malloc(len ? len : 1);
            REQUIRE(old->data != NULL);
            if (len) memcpy(old->data, buf, len);
            old->len = len;
        }
        kept++;
    }
    double took = now_s() - start;
    printf("fuzz_request: %lu mutants + %zu seeds in %.1f s (seed %llu); %lu reached a new "
           "outcome\n",
           it, n_corpus, took, (unsigned long long)seed, kept);
    printf("  heads: %lu done, %lu incomplete, %lu refused; %lu requests read\n", seen.head[2],
           seen.head[1], seen.head[0], seen.requests);
    printf("  chunked: %lu done, %lu incomplete, %lu malformed, %lu too large; %lu over %d bytes\n",
           seen.chunked[3], seen.chunked[2], seen.chunked[1], seen.chunked[0], seen.small_too_large,
           FUZZ_SMALL_BODY);
    printf("  json: %lu ok (%lu also parsed by json-c), %lu syntax, %lu encoding\n",
           seen.json[JSON_STRICT_OK], seen.jsonc_checked, seen.json[JSON_STRICT_SYNTAX],
           seen.json[JSON_STRICT_ENCODING]);
    for (size_t i = 0; i < seeds.n; i++) free(seeds.v[i].data);
    free(seeds.v);
    return 0;
}
#endif
