/* turn_idem.c: the idempotency records of turns and appends, written and replayed. */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/util.h"
#include "turn_int.h"

/* A record is "<expires_ms> <fingerprint:016x> <kind> <fields>", where the
 * store reads only the leading expiry:
 *   M <input_tokens> <output_tokens> <cache_creation> <cache_read> <model_len>
 *     <text_len> <content_len> <stop_reason_len> <message id> <model><text>
 *     <content blocks JSON><stop_reason>
 * and, written before replies had their stored id in the record (replayed
 * without it):
 *   B the same without the <message id>
 *   A <appended> <first_seq>
 * and, written by ctxd 0.4 and still replayed (without a stop reason):
 *   R <input_tokens> <output_tokens> <model_len> <text_len> <model><text>
 * Records written by ctxd 0.3.0 carry "<status> <answer JSON>" after the
 * fingerprint instead; they are still replayed until they expire. */

static int64_t expires(int ttl_s) { return util_now_ms() + (int64_t)ttl_s * 1000; }

char *turn_idem_record_reply(int ttl_s, uint64_t fp, const turn_reply *reply, size_t *len) {
    size_t ml = strlen(reply->model), n = reply->text_len + ml + 128;
    if (reply->id[0] || reply->content_json || reply->stop_reason[0]) {
        /* M: the stored id; the blocks (if any) and the stop reason follow
         * the text */
        size_t sl = strlen(reply->stop_reason), cl = reply->content_json_len;
        char *r = malloc(n + cl + sl + 96);
        if (!r) return NULL;
        int head = snprintf(r, n + 96,
                            "%" PRId64 " %016" PRIx64 " M %" PRId64 " %" PRId64 " %" PRId64
                            " %" PRId64 " %zu %zu %zu %zu %s %s",
                            expires(ttl_s), fp, reply->input_tokens, reply->output_tokens,
                            reply->cache_creation_input_tokens, reply->cache_read_input_tokens, ml,
                            reply->text_len, cl, sl, reply->id[0] ? reply->id : "-", reply->model);
        memcpy(r + head, reply->text, reply->text_len);
        if (cl) memcpy(r + head + reply->text_len, reply->content_json, cl);
        memcpy(r + head + reply->text_len + cl, reply->stop_reason, sl);
        *len = (size_t)head + reply->text_len + cl + sl;
        r[*len] = '\0';
        return r;
    }
    char *r = malloc(n);
    if (!r) return NULL;
    int head = snprintf(r, n, "%" PRId64 " %016" PRIx64 " R %" PRId64 " %" PRId64 " %zu %zu %s",
                        expires(ttl_s), fp, reply->input_tokens, reply->output_tokens, ml,
                        reply->text_len, reply->model);
    memcpy(r + head, reply->text, reply->text_len);
    *len = (size_t)head + reply->text_len;
    r[*len] = '\0';
    return r;
}

char *turn_idem_record_append(int ttl_s, uint64_t fp, size_t appended, int64_t first_seq) {
    char *r = malloc(96);
    if (r)
        snprintf(r, 96, "%" PRId64 " %016" PRIx64 " A %zu %" PRId64, expires(ttl_s), fp, appended,
                 first_seq);
    return r;
}

static int set_reply(turn_result *res, const char *model, size_t model_len, const char *text,
                     size_t text_len, int64_t in, int64_t out) {
    turn_reply *r = &res->reply;
    if (!(r->text = malloc(text_len + 1)))
        return ctxd_error_set(&res->error, CTXD_E_NOMEM, "out of memory");
    memcpy(r->text, text, text_len);
    r->text[text_len] = '\0';
    r->text_len = text_len;
    snprintf(r->model, sizeof(r->model), "%.*s", (int)model_len, model);
    r->input_tokens = in;
    r->output_tokens = out;
    r->cache_creation_input_tokens = r->cache_read_input_tokens = -1;
    return CTXD_OK;
}

static int64_t usage_field(json_object *usage, const char *name) {
    json_object *v;
    if (!json_object_object_get_ex(usage, name, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    return json_object_get_int64(v);
}

/* A 0.3.0 record: the answer JSON a turn (200) or append (201) sent. */
static int replay_legacy(const char *json, int status, turn_result *res) {
    json_object *o = json_tokener_parse(json), *v, *usage = NULL;
    int rc = CTXD_ERR;
    if (!o) return ctxd_error_set(&res->error, CTXD_E_REDIS, "corrupt idempotency record");
    if (status == 201) {
        res->appended = json_object_object_get_ex(o, "appended", &v) ? json_object_get_int(v) : 0;
        res->first_seq =
            json_object_object_get_ex(o, "first_seq", &v) ? json_object_get_int64(v) : 0;
        rc = CTXD_OK;
    } else if (json_object_object_get_ex(o, "ai_response", &v)) {
        json_object *m = NULL;
        json_object_object_get_ex(o, "usage", &usage);
        json_object_object_get_ex(o, "model", &m);
        const char *model = m ? json_object_get_string(m) : "";
        rc = set_reply(res, model, strlen(model), json_object_get_string(v),
                       (size_t)json_object_get_string_len(v), usage_field(usage, "input_tokens"),
                       usage_field(usage, "output_tokens"));
    } else {
        ctxd_error_set(&res->error, CTXD_E_REDIS, "corrupt idempotency record");
    }
    json_object_put(o);
    return rc;
}

static int reused(turn_result *res, const char *key) {
    return ctxd_error_set(&res->error, CTXD_E_IDEM_KEY_REUSED,
                          "Idempotency-Key '%s' was already used with a different "
                          "request; use a new key for a new request",
                          key);
}

int turn_idem_replay(const store_blob *rec, int append, uint64_t fp, const char *key,
                     turn_result *res) {
    const char *record = rec->data, *end = rec->data + rec->len;
    unsigned long long rfp = 0;
    char kind = 0;
    int off = 0;
    long long expiry; /* the store checked it */
    if (sscanf(record, "%lld %16llx %c%n", &expiry, &rfp, &kind, &off) < 3 || !off)
        return ctxd_error_set(&res->error, CTXD_E_REDIS, "corrupt idempotency record");
    if (rfp != fp) return reused(res, key);
    const char *p = record + off;
    int rc = CTXD_ERR;
    long long in, out, a, b;
    size_t ml, tl;
    int n = 0;
    /* The model follows the lengths after exactly one space, then the text. */
    int status = 0;
    size_t cl, sl;
    long long cc, cr;
    char id[40] = "";
    int m = kind == 'M', idn = 0;
    if ((kind == 'B' || m) && !append &&
        sscanf(p, " %lld %lld %lld %lld %zu %zu %zu %zu%n", &in, &out, &cc, &cr, &ml, &tl, &cl, &sl,
               &n) == 8 &&
        (!m || (sscanf(p + n, " %39s%n", id, &idn) == 1 && (n += idn))) && p[n] == ' ' &&
        (size_t)(end - (p + n + 1)) == ml + tl + cl + sl) {
        p += n + 1;
        if (strcmp(id, "-")) snprintf(res->reply.id, sizeof(res->reply.id), "%s", id);
        rc = set_reply(res, p, ml, p + ml, tl, in, out);
        turn_reply *r = &res->reply;
        if (rc == CTXD_OK && cl && !(r->content_json = malloc(cl + 1)))
            rc = ctxd_error_set(&res->error, CTXD_E_NOMEM, "out of memory");
        if (rc == CTXD_OK) {
            if (cl) {
                memcpy(r->content_json, p + ml + tl, cl);
                r->content_json[cl] = '\0';
                r->content_json_len = cl;
            }
            snprintf(r->stop_reason, sizeof(r->stop_reason), "%.*s", (int)sl, p + ml + tl + cl);
            r->cache_creation_input_tokens = cc;
            r->cache_read_input_tokens = cr;
        }
    } else if (kind == 'B' || kind == 'M') {
        if (append) return reused(res, key);
        rc = ctxd_error_set(&res->error, CTXD_E_REDIS, "corrupt idempotency record");
    } else if (kind == 'R' || kind == 'A') {
        if (kind != (append ? 'A' : 'R')) return reused(res, key); /* a turn's key on an append */
        if (kind == 'R' && sscanf(p, " %lld %lld %zu %zu%n", &in, &out, &ml, &tl, &n) == 4 &&
            p[n] == ' ' && (size_t)(end - (p + n + 1)) == ml + tl) {
            p += n + 1;
            rc = set_reply(res, p, ml, p + ml, tl, in, out);
        } else if (kind == 'A' && sscanf(p, " %lld %lld", &a, &b) == 2) {
            res->appended = (size_t)a;
            res->first_seq = b;
            rc = CTXD_OK;
        } else {
            rc = ctxd_error_set(&res->error, CTXD_E_REDIS, "corrupt idempotency record");
        }
    } else if (sscanf(record, "%lld %16llx %d %n", &expiry, &rfp, &status, &n) == 3 && n &&
               record[n] == '{') {
        if ((status == 201) != append) return reused(res, key);
        rc = replay_legacy(record + n, status, res);
    } else {
        rc = ctxd_error_set(&res->error, CTXD_E_REDIS, "corrupt idempotency record");
    }
    res->replayed = rc == CTXD_OK;
    return rc;
}
