/* routes_context.c: the /mcp/context routes (create, read, turn, append, state, delete). */
#include <civetweb.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctxd/buf.h"
#include "ctxd/http.h"
#include "ctxd/log.h"
#include "ctxd/store.h"
#include "ctxd/turn.h"
#include "ctxd/util.h"

#define MAX_STATE_KEY 256
#define MAX_MODEL_LEN 127
#define MAX_TTL_SECONDS (10LL * 365 * 86400)
#define MAX_APPEND 1000

static const char *const replayed_headers[] = {"Idempotent-Replayed", "true", NULL};

/* ---- Validation helpers: each sends the 4xx itself and stores the status. ---- */

static int id_or_respond(const http_req *req, int *status) {
    if (util_is_context_id(req->id)) return CTXD_OK;
    *status = http_send_error(req, 404, "context_not_found", 0,
                              "Context not found: '%s' is not a context id "
                              "(ids look like 1b4e28ba-2fa1-4d2e-8c8f-6d1e3f0c9a27)",
                              req->id);
    return CTXD_ERR;
}

/* Reject fields other than allowed (NULL-terminated): typos fail loudly. */
static int only_fields_or_respond(const http_req *req, json_object *obj,
                                  const char *const *allowed, int *status) {
    json_object_object_foreach(obj, key, val) {
        CTXD_UNUSED(val);
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            if (!strcmp(key, allowed[i])) ok = 1;
        if (!ok) {
            buf names;
            buf_init(&names);
            for (size_t i = 0; allowed[i]; i++)
                buf_printf(&names, "%s%s", i ? ", " : "", allowed[i]);
            *status = http_send_error(req, 400, "unknown_field", 0,
                                      "Unknown field '%s'; allowed fields: %s", key,
                                      names.data ? names.data : "none");
            buf_free(&names);
            return CTXD_ERR;
        }
    }
    return CTXD_OK;
}

/* An optional string field; *out NULL when absent or null. */
static int string_field_or_respond(const http_req *req, json_object *obj,
                                   const char *name, size_t max, const char **out,
                                   size_t *len, int *status) {
    json_object *v;
    *out = NULL;
    if (len) *len = 0;
    if (!obj || !json_object_object_get_ex(obj, name, &v) || !v) return CTXD_OK;
    if (!json_object_is_type(v, json_type_string)) {
        *status = http_send_error(req, 400, "invalid_field", 0,
                                  "Field '%s' must be a string", name);
        return CTXD_ERR;
    }
    size_t n = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (!util_utf8_valid(s, n)) {
        *status = http_send_error(req, 400, "invalid_utf8", 0,
                                  "Field '%s' is not valid UTF-8 (lone surrogate escape?)",
                                  name);
        return CTXD_ERR;
    }
    if (n > max) {
        *status = http_send_error(req, 413, "field_too_large", 0,
                                  "Field '%s' is %zu bytes; at most %zu are allowed",
                                  name, n, max);
        return CTXD_ERR;
    }
    *out = s;
    if (len) *len = n;
    return CTXD_OK;
}

/* A state object: keys and serialized values (borrowed from obj). Null
 * values are kept with data NULL (PATCH deletes them, PUT skips them). */
typedef struct state_input {
    store_blob *keys, *values;
    size_t n;
} state_input;

static void state_input_free(state_input *si) {
    free(si->keys);
    free(si->values);
    memset(si, 0, sizeof(*si));
}

static int state_or_respond(const http_req *req, json_object *obj, int keep_nulls,
                            state_input *si, int *status) {
    memset(si, 0, sizeof(*si));
    if (!json_object_is_type(obj, json_type_object)) {
        *status = http_send_error(req, 400, "invalid_field", 0,
                                  "State must be a JSON object");
        return CTXD_ERR;
    }
    size_t n = (size_t)json_object_object_length(obj), size = 0;
    si->keys = calloc(n ? n : 1, sizeof(store_blob));
    si->values = calloc(n ? n : 1, sizeof(store_blob));
    if (!si->keys || !si->values) {
        state_input_free(si);
        *status = http_send_error(req, 503, "out_of_memory", 1, "out of memory");
        return CTXD_ERR;
    }
    json_object_object_foreach(obj, key, val) {
        size_t kl = strlen(key);
        if (kl == 0 || kl > MAX_STATE_KEY || !util_utf8_valid(key, kl)) {
            state_input_free(si);
            *status = http_send_error(req, 400, "invalid_field", 0,
                                      "State keys must be 1 to %d bytes of UTF-8",
                                      MAX_STATE_KEY);
            return CTXD_ERR;
        }
        if (!val && !keep_nulls) continue;
        si->keys[si->n].data = key;
        si->keys[si->n].len = kl;
        if (val) {
            size_t vl;
            si->values[si->n].data = (char *)json_object_to_json_string_length(
                val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &vl);
            si->values[si->n].len = vl;
            size += kl + vl;
        }
        si->n++;
    }
    if (size > req->cfg->max_state_bytes) {
        state_input_free(si);
        *status = http_send_error(req, 413, "state_too_large", 0,
                                  "State of %zu bytes is larger than the %zu allowed "
                                  "(CTXD_MAX_STATE_BYTES)",
                                  size, req->cfg->max_state_bytes);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

/* Send a store failure as the right status. */
static int store_failure(const http_req *req, const store *st) {
    switch (st->err) {
    case STORE_ERR_NOT_FOUND:
        return http_send_error(req, 404, "context_not_found", 0,
                               "Context not found: %s", req->id);
    case STORE_ERR_TOO_LARGE:
        return http_send_error(req, 413, "state_too_large", 0,
                               "The merged state would be larger than the %zu bytes "
                               "allowed (CTXD_MAX_STATE_BYTES)",
                               req->cfg->max_state_bytes);
    default:
        return http_send_error(req, 503, "redis_unavailable", 1, "%s", st->errstr);
    }
}

static void put_state_object(buf *b, const store_context *c) {
    buf_puts(b, "{");
    for (size_t i = 0; i < c->n_state; i++) {
        if (i) buf_puts(b, ",");
        buf_put_json_string(b, c->state_keys[i].data, c->state_keys[i].len);
        buf_puts(b, ":");
        buf_putn(b, c->state_values[i].data, c->state_values[i].len);
    }
    buf_puts(b, "}");
}

static int send_buf(const http_req *req, int status, buf *b,
                    const char *const *headers) {
    buf_puts(b, "\n");
    if (b->err) {
        buf_free(b);
        return http_send_error(req, 503, "out_of_memory", 1, "out of memory");
    }
    http_send(req, status, "application/json", b->data, b->len, headers);
    buf_free(b);
    return status;
}

static int send_created(const http_req *req, const char *id, int replayed) {
    char loc[80];
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"context_id\":\"%s\",\"message\":\"New context created\"}", id);
    snprintf(loc, sizeof(loc), "/mcp/context/%s", id);
    const char *h[] = {"Location", loc, replayed ? "Idempotent-Replayed" : NULL,
                       "true", NULL};
    return send_buf(req, 201, &b, h);
}

/* ---- Routes ---- */

/* POST /mcp/context */
static int create_context(const http_req *req) {
    static const char *const allowed[] = {"system", "model", "ttl_seconds", "state", NULL};
    const ctxd_config *cfg = req->cfg;
    json_object *body = NULL, *v;
    state_input si = {0};
    const char *idem, *system, *model;
    uint64_t fp;
    int64_t ttl = 0;
    int status;
    char id[UTIL_UUID_LEN + 1];

    if (http_idem_key_or_respond(req, &idem, &status)) return status;
    if (http_json_body_or_respond(req, &body, &fp, &status)) return status;
    if (body) {
        if (only_fields_or_respond(req, body, allowed, &status) ||
            string_field_or_respond(req, body, "system", cfg->max_message_bytes,
                                    &system, NULL, &status) ||
            string_field_or_respond(req, body, "model", MAX_MODEL_LEN, &model, NULL,
                                    &status))
            goto cleanup;
        if (json_object_object_get_ex(body, "ttl_seconds", &v) && v) {
            ttl = json_object_get_int64(v);
            if (!json_object_is_type(v, json_type_int) || ttl < 0 || ttl > MAX_TTL_SECONDS) {
                status = http_send_error(req, 400, "invalid_field", 0,
                                         "Field 'ttl_seconds' must be an integer from 0 "
                                         "(no expiry) to %lld",
                                         MAX_TTL_SECONDS);
                goto cleanup;
            }
        }
        if (json_object_object_get_ex(body, "state", &v) && v &&
            state_or_respond(req, v, 0, &si, &status))
            goto cleanup;
    } else {
        system = model = NULL;
    }
    if (util_uuid4(id)) {
        status = http_send_error(req, 503, "no_randomness", 1, "no randomness for an id");
        goto cleanup;
    }
    if (idem) {
        int claimed;
        char first_id[UTIL_UUID_LEN + 1];
        uint64_t first_fp;
        if (store_create_claim(req->w->st, idem, fp, id, cfg->idempotency_ttl_s,
                               &claimed, first_id, &first_fp)) {
            status = store_failure(req, req->w->st);
            goto cleanup;
        }
        if (!claimed) {
            status = first_fp != fp
                         ? http_send_error(req, 422, "idempotency_key_reused", 0,
                                           "Idempotency-Key '%s' was already used with a "
                                           "different request; use a new key",
                                           idem)
                         : send_created(req, first_id, 1);
            goto cleanup;
        }
    }
    store_new_context nc = {id, util_now_ms(), system, model, ttl,
                            si.keys, si.values, si.n};
    if (store_create(req->w->st, &nc)) {
        if (idem) store_create_unclaim(req->w->st, idem);
        status = store_failure(req, req->w->st);
        goto cleanup;
    }
    status = send_created(req, id, 0);
cleanup:
    state_input_free(&si);
    if (body) json_object_put(body);
    return status;
}

/* Parse ?limit=N&before=SEQ; anything else is a 400. */
static int query_or_respond(const http_req *req, long *limit, int64_t *before,
                            int *status) {
    *limit = 0;
    *before = 0;
    if (!req->query || !*req->query) return CTXD_OK;
    char q[256];
    if (strlen(req->query) >= sizeof(q)) goto bad;
    snprintf(q, sizeof(q), "%s", req->query);
    char *save = NULL;
    for (char *p = strtok_r(q, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(p, '=');
        if (!eq) goto bad;
        *eq++ = '\0';
        char *end;
        long long v = strtoll(eq, &end, 10);
        if (*end || !*eq || v < 1 || v > 1000000000LL) goto bad;
        if (!strcmp(p, "limit")) *limit = (long)v;
        else if (!strcmp(p, "before")) *before = v;
        else goto bad;
    }
    return CTXD_OK;
bad:
    *status = http_send_error(req, 400, "invalid_query",
                              0, "Query must be limit=N (newest N messages) and/or "
                                 "before=SEQ (messages older than SEQ), positive integers");
    return CTXD_ERR;
}

/* GET /mcp/context/{id} */
static int get_context(const http_req *req) {
    long limit;
    int64_t before;
    int status;
    store_context c;
    if (id_or_respond(req, &status) || query_or_respond(req, &limit, &before, &status))
        return status;
    if (store_read(req->w->st, req->id, STORE_READ_MESSAGES | STORE_READ_STATE, limit,
                   before, &c))
        return store_failure(req, req->w->st);

    /* Where the returned page starts, mirroring the read script. */
    int64_t last = c.total_messages - 1;
    if (before > 0 && before - c.first_seq - 1 < last) last = before - c.first_seq - 1;
    int64_t start = limit > 0 && last - limit + 1 > 0 ? last - limit + 1 : 0;
    int has_more = c.n_messages > 0 && start > 0;

    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"id\":\"%s\",\"created_at\":\"%s\",\"last_updated\":\"%s\",\"messages\":[",
               c.id, c.created_at, c.last_updated);
    for (size_t i = 0; i < c.n_messages; i++) {
        if (i) buf_puts(&b, ",");
        buf_putn(&b, c.messages[i].data, c.messages[i].len);
    }
    buf_puts(&b, "],\"state\":");
    put_state_object(&b, &c);
    buf_puts(&b, ",\"system\":");
    if (c.system[0]) buf_put_json_string(&b, c.system, strlen(c.system));
    else buf_puts(&b, "null");
    buf_puts(&b, ",\"model\":");
    if (c.model[0]) buf_put_json_string(&b, c.model, strlen(c.model));
    else buf_puts(&b, "null");
    buf_printf(&b, ",\"ttl_seconds\":%" PRId64 ",\"message_count\":%" PRId64
                   ",\"has_more\":%s,\"next_before\":",
               c.ttl_seconds, c.total_messages, has_more ? "true" : "false");
    if (has_more) buf_printf(&b, "%" PRId64, c.first_seq + start);
    else buf_puts(&b, "null");
    buf_puts(&b, "}");
    store_context_free(&c);
    return send_buf(req, 200, &b, NULL);
}

/* DELETE /mcp/context/{id} */
static int delete_context(const http_req *req) {
    int status, deleted;
    if (id_or_respond(req, &status)) return status;
    if (store_delete(req->w->st, req->id, &deleted)) return store_failure(req, req->w->st);
    if (!deleted)
        return http_send_error(req, 404, "context_not_found", 0, "Context not found: %s",
                               req->id);
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"message\":\"Context '%s' deleted\"}", req->id);
    return send_buf(req, 200, &b, NULL);
}

/* ---- Turns, streamed or not ---- */

typedef struct stream_state {
    const http_req *req;
    int started;
    int client_gone; /* the turn still completes and is stored */
} stream_state;

static void sse_event(stream_state *ss, const char *event, const char *data, size_t len) {
    if (ss->client_gone) return;
    buf b;
    buf_init(&b);
    buf_printf(&b, "event: %s\ndata: ", event);
    buf_putn(&b, data, len);
    buf_puts(&b, "\n\n");
    if (b.err || http_stream_write(ss->req, b.data, b.len)) {
        if (!ss->client_gone)
            log_msg(LOG_INFO, "context %s: client left mid-stream; the turn still "
                              "completes and is stored", ss->req->id);
        ss->client_gone = 1;
    }
    buf_free(&b);
}

static void stream_start(void *arg) {
    stream_state *ss = arg;
    if (http_stream_start(ss->req, 200, "text/event-stream")) ss->client_gone = 1;
    ss->started = 1;
}

static int stream_delta(void *arg, const char *text, size_t len) {
    stream_state *ss = arg;
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"text\":");
    buf_put_json_string(&b, text, len);
    buf_puts(&b, "}");
    if (!b.err) sse_event(ss, "delta", b.data, b.len);
    buf_free(&b);
    return CTXD_OK;
}

/* Finish a streamed turn: done (replaying a stored answer as one delta) or
 * error. Returns the status of the answer. */
static int stream_finish(const http_req *req, stream_state *ss, const turn_result *res) {
    if (res->status >= 400 && !ss->started)
        return http_send_error(req, res->status, res->code, res->retry_after_s, "%s",
                               res->errstr);
    if (!ss->started) stream_start(ss);
    if (res->status < 400) {
        if (res->replayed) {
            json_object *o = json_tokener_parse(res->body), *t;
            if (o && json_object_object_get_ex(o, "ai_response", &t))
                stream_delta(ss, json_object_get_string(t),
                             (size_t)json_object_get_string_len(t));
            if (o) json_object_put(o);
        }
        sse_event(ss, "done", res->body, strlen(res->body));
    } else {
        buf b;
        buf_init(&b);
        buf_puts(&b, "{\"error\":");
        buf_put_json_string(&b, res->errstr, strlen(res->errstr));
        buf_printf(&b, ",\"code\":\"%s\",\"status\":%d}", res->code, res->status);
        if (!b.err) sse_event(ss, "error", b.data, b.len);
        buf_free(&b);
    }
    if (!ss->client_gone) http_stream_end(req);
    return 200;
}

static int wants_stream(const http_req *req, json_object *body, int *stream, int *status) {
    json_object *v;
    const char *accept = http_header(req, "Accept");
    *stream = accept && strstr(accept, "text/event-stream") != NULL;
    if (json_object_object_get_ex(body, "stream", &v) && v) {
        if (!json_object_is_type(v, json_type_boolean)) {
            *status = http_send_error(req, 400, "invalid_field", 0,
                                      "Field 'stream' must be true or false");
            return CTXD_ERR;
        }
        *stream = json_object_get_boolean(v);
    }
    return CTXD_OK;
}

/* POST /mcp/context/{id}/message */
static int post_message(const http_req *req) {
    static const char *const allowed[] = {"message", "stream", NULL};
    json_object *body = NULL;
    const char *idem, *text;
    size_t len;
    uint64_t fp;
    int status, stream = 0;
    turn_result res;
    memset(&res, 0, sizeof(res));

    if (id_or_respond(req, &status) || http_idem_key_or_respond(req, &idem, &status) ||
        http_json_body_or_respond(req, &body, &fp, &status))
        return status;
    if (!body) {
        status = http_send_error(req, 400, "missing_field",
                                 0, "Message content is required: send {\"message\": \"...\"} "
                                    "with Content-Type: application/json");
        goto cleanup;
    }
    if (only_fields_or_respond(req, body, allowed, &status) ||
        string_field_or_respond(req, body, "message", req->cfg->max_message_bytes, &text,
                                &len, &status) ||
        wants_stream(req, body, &stream, &status))
        goto cleanup;
    if (!text || len == 0) {
        status = http_send_error(req, 400, "missing_field", 0,
                                 "Message content is required: 'message' must be a "
                                 "non-empty string");
        goto cleanup;
    }
    stream_state ss = {req, 0, 0};
    turn_request tr = {req->id, text, len, idem, fp,
                       stream ? stream_start : NULL, stream ? stream_delta : NULL, &ss};
    turn_run(req->w, &tr, &res);
    if (stream) {
        status = stream_finish(req, &ss, &res);
    } else if (res.status >= 400) {
        status = http_send_error(req, res.status, res.code, res.retry_after_s, "%s",
                                 res.errstr);
    } else {
        status = http_send(req, res.status, "application/json", res.body,
                           strlen(res.body), res.replayed ? replayed_headers : NULL);
    }
cleanup:
    turn_result_free(&res);
    if (body) json_object_put(body);
    return status;
}

/* POST /mcp/context/{id}/messages */
static int post_messages(const http_req *req) {
    static const char *const allowed[] = {"messages", NULL};
    static const char *const msg_allowed[] = {"role", "content", NULL};
    json_object *body = NULL, *arr;
    const char **roles = NULL, **contents = NULL, *idem;
    size_t *lens = NULL, n = 0;
    uint64_t fp;
    int status;
    turn_result res;
    memset(&res, 0, sizeof(res));

    if (id_or_respond(req, &status) || http_idem_key_or_respond(req, &idem, &status) ||
        http_json_body_or_respond(req, &body, &fp, &status))
        return status;
    if (!body || only_fields_or_respond(req, body, allowed, &status)) {
        if (!body)
            status = http_send_error(req, 400, "missing_field", 0,
                                     "Send {\"messages\": [{\"role\": \"user\", "
                                     "\"content\": \"...\"}, ...]}");
        goto cleanup;
    }
    if (!json_object_object_get_ex(body, "messages", &arr) ||
        !json_object_is_type(arr, json_type_array) ||
        (n = json_object_array_length(arr)) == 0 || n > MAX_APPEND) {
        status = http_send_error(req, 400, "invalid_field", 0,
                                 "Field 'messages' must be an array of 1 to %d "
                                 "{\"role\", \"content\"} objects",
                                 MAX_APPEND);
        goto cleanup;
    }
    roles = calloc(n, sizeof(*roles));
    contents = calloc(n, sizeof(*contents));
    lens = calloc(n, sizeof(*lens));
    if (!roles || !contents || !lens) {
        status = http_send_error(req, 503, "out_of_memory", 1, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(arr, i);
        const char *role;
        if (!json_object_is_type(m, json_type_object)) {
            status = http_send_error(req, 400, "invalid_field", 0,
                                     "messages[%zu] must be an object", i);
            goto cleanup;
        }
        if (only_fields_or_respond(req, m, msg_allowed, &status) ||
            string_field_or_respond(req, m, "role", 16, &role, NULL, &status) ||
            string_field_or_respond(req, m, "content", req->cfg->max_message_bytes,
                                    &contents[i], &lens[i], &status))
            goto cleanup;
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
            status = http_send_error(req, 400, "invalid_field", 0,
                                     "messages[%zu].role must be \"user\" or "
                                     "\"assistant\" (set the system prompt at create)",
                                     i);
            goto cleanup;
        }
        if (!contents[i]) {
            status = http_send_error(req, 400, "missing_field", 0,
                                     "messages[%zu].content must be a string", i);
            goto cleanup;
        }
        roles[i] = role;
    }
    turn_append_request ar = {req->id, roles, contents, lens, n, idem, fp};
    turn_append(req->w, &ar, &res);
    if (res.status >= 400)
        status = http_send_error(req, res.status, res.code, res.retry_after_s, "%s",
                                 res.errstr);
    else
        status = http_send(req, res.status, "application/json", res.body,
                           strlen(res.body), res.replayed ? replayed_headers : NULL);
cleanup:
    turn_result_free(&res);
    free(roles);
    free(contents);
    free(lens);
    if (body) json_object_put(body);
    return status;
}

/* ---- State ---- */

static int send_state(const http_req *req) {
    store_context c;
    if (store_read(req->w->st, req->id, STORE_READ_STATE, 0, 0, &c))
        return store_failure(req, req->w->st);
    buf b;
    buf_init(&b);
    put_state_object(&b, &c);
    store_context_free(&c);
    return send_buf(req, 200, &b, NULL);
}

/* GET /mcp/context/{id}/state */
static int get_state(const http_req *req) {
    int status;
    if (id_or_respond(req, &status)) return status;
    return send_state(req);
}

/* PUT and PATCH /mcp/context/{id}/state */
static int write_state(const http_req *req, int patch) {
    json_object *body = NULL;
    state_input si = {0};
    int status;
    if (id_or_respond(req, &status) ||
        http_json_body_or_respond(req, &body, NULL, &status))
        return status;
    if (!body) {
        status = http_send_error(req, 400, "missing_field", 0,
                                 "Send the state as a JSON object body");
        goto cleanup;
    }
    if (state_or_respond(req, body, patch, &si, &status)) goto cleanup;
    int rc = patch ? store_state_patch(req->w->st, req->id, si.keys, si.values, si.n,
                                       req->cfg->max_state_bytes, util_now_ms())
                   : store_state_put(req->w->st, req->id, si.keys, si.values, si.n,
                                     req->cfg->max_state_bytes, util_now_ms());
    status = rc ? store_failure(req, req->w->st) : send_state(req);
cleanup:
    state_input_free(&si);
    if (body) json_object_put(body);
    return status;
}

static int put_state(const http_req *req) { return write_state(req, 0); }

static int patch_state(const http_req *req) { return write_state(req, 1); }

void routes_context_register(void) {
    http_route("POST", "/mcp/context", create_context);
    http_route("GET", "/mcp/context/{id}", get_context);
    http_route("DELETE", "/mcp/context/{id}", delete_context);
    http_route("POST", "/mcp/context/{id}/message", post_message);
    http_route("POST", "/mcp/context/{id}/messages", post_messages);
    http_route("GET", "/mcp/context/{id}/state", get_state);
    http_route("PUT", "/mcp/context/{id}/state", put_state);
    http_route("PATCH", "/mcp/context/{id}/state", patch_state);
}
