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
#define MAX_ENUM_LEN 1024 /* longer than any allowed value: a wrong one is a 400 */

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
static int only_fields_or_respond(const http_req *req, json_object *obj, const char *const *allowed,
                                  int *status) {
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
static int string_field_or_respond(const http_req *req, json_object *obj, const char *name,
                                   size_t max, const char **out, size_t *len, int *status) {
    json_object *v;
    *out = NULL;
    if (len) *len = 0;
    if (!obj || !json_object_object_get_ex(obj, name, &v) || !v) return CTXD_OK;
    if (!json_object_is_type(v, json_type_string)) {
        *status =
            http_send_error(req, 400, "invalid_field", 0, "Field '%s' must be a string", name);
        return CTXD_ERR;
    }
    size_t n = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (!util_utf8_valid(s, n)) {
        *status = http_send_error(req, 400, "invalid_utf8", 0,
                                  "Field '%s' is not valid UTF-8 (lone surrogate escape?)", name);
        return CTXD_ERR;
    }
    if (n > max) {
        *status = http_send_error(req, 413, "field_too_large", 0,
                                  "Field '%s' is %zu bytes; at most %zu are allowed", name, n, max);
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

static int state_or_respond(const http_req *req, json_object *obj, int keep_nulls, state_input *si,
                            int *status) {
    memset(si, 0, sizeof(*si));
    if (!json_object_is_type(obj, json_type_object)) {
        *status = http_send_error(req, 400, "invalid_field", 0, "State must be a JSON object");
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
                                      "State keys must be 1 to %d bytes of UTF-8", MAX_STATE_KEY);
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
        return http_send_error(req, 404, "context_not_found", 0, "Context not found: %s", req->id);
    case STORE_ERR_TOO_LARGE:
        return http_send_error(req, 413, "state_too_large", 0,
                               "The merged state would be larger than the %zu bytes "
                               "allowed (CTXD_MAX_STATE_BYTES)",
                               req->cfg->max_state_bytes);
    default: return http_send_error(req, 503, "redis_unavailable", 1, "%s", st->errstr);
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

static int send_buf(const http_req *req, int status, buf *b, const char *const *headers) {
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
    const char *h[] = {"Location", loc, replayed ? "Idempotent-Replayed" : NULL, "true", NULL};
    return send_buf(req, 201, &b, h);
}

/* ---- Routes ---- */

/* Settings a client may give at create and change with PATCH. Strings are
 * borrowed from the body; has_* say which were present. */
typedef struct settings {
    const char *system, *model, *strategy;
    int64_t ttl_seconds, max_context_tokens, max_messages;
    int has_system, has_model, has_strategy, has_ttl, has_budget, has_max_messages;
} settings;

/* An optional integer field in [min, max]. */
static int int_field_or_respond(const http_req *req, json_object *obj, const char *name,
                                int64_t min, int64_t max, int64_t *out, int *has, int *status) {
    json_object *v;
    if (!json_object_object_get_ex(obj, name, &v) || !v) return CTXD_OK;
    int64_t n = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || n < min || n > max) {
        *status = http_send_error(req, 400, "invalid_field", 0,
                                  "Field '%s' must be an integer from %" PRId64 " to %" PRId64,
                                  name, min, max);
        return CTXD_ERR;
    }
    *out = n;
    *has = 1;
    return CTXD_OK;
}

static int settings_or_respond(const http_req *req, json_object *body, settings *st, int *status) {
    const ctxd_config *cfg = req->cfg;
    memset(st, 0, sizeof(*st));
    if (string_field_or_respond(req, body, "system", cfg->max_message_bytes, &st->system, NULL,
                                status) ||
        string_field_or_respond(req, body, "model", MAX_MODEL_LEN, &st->model, NULL, status) ||
        string_field_or_respond(req, body, "strategy", MAX_ENUM_LEN, &st->strategy, NULL, status) ||
        int_field_or_respond(req, body, "ttl_seconds", 0, MAX_TTL_SECONDS, &st->ttl_seconds,
                             &st->has_ttl, status) ||
        int_field_or_respond(req, body, "max_context_tokens", 64, 100000000,
                             &st->max_context_tokens, &st->has_budget, status) ||
        int_field_or_respond(req, body, "max_messages", 0, cfg->max_messages, &st->max_messages,
                             &st->has_max_messages, status))
        return CTXD_ERR;
    st->has_system = st->system != NULL;
    st->has_model = st->model != NULL;
    st->has_strategy = st->strategy != NULL;
    if (st->strategy && strcmp(st->strategy, "all") && strcmp(st->strategy, "window") &&
        strcmp(st->strategy, "summarize")) {
        *status = http_send_error(req, 400, "invalid_field", 0,
                                  "Field 'strategy' must be \"all\", \"window\" or \"summarize\"");
        return CTXD_ERR;
    }
    if (st->has_max_messages && st->max_messages == 1) {
        *status = http_send_error(req, 400, "invalid_field", 0,
                                  "Field 'max_messages' must be 0 (keep all) or at least 2");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

/* The context as JSON: settings, summary, state and (if any) messages. */
static void put_context(buf *b, const store_context *c, int with_messages, int has_more,
                        int64_t next_before) {
    buf_printf(b, "{\"id\":\"%s\",\"created_at\":\"%s\",\"last_updated\":\"%s\"", c->id,
               c->created_at, c->last_updated);
    if (with_messages) {
        buf_puts(b, ",\"messages\":[");
        for (size_t i = 0; i < c->n_messages; i++) {
            if (i) buf_puts(b, ",");
            buf_putn(b, c->messages[i].data, c->messages[i].len);
        }
        buf_puts(b, "],\"state\":");
        put_state_object(b, c);
    }
    buf_puts(b, ",\"system\":");
    if (c->system[0])
        buf_put_json_string(b, c->system, strlen(c->system));
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"model\":");
    if (c->model[0])
        buf_put_json_string(b, c->model, strlen(c->model));
    else
        buf_puts(b, "null");
    buf_printf(b,
               ",\"strategy\":\"%s\",\"max_context_tokens\":%" PRId64 ",\"max_messages\":%" PRId64
               ",\"ttl_seconds\":%" PRId64 ",\"message_count\":%" PRId64 ",\"first_seq\":%" PRId64
               ",\"summary\":",
               c->strategy, c->max_context_tokens, c->max_messages, c->ttl_seconds,
               c->total_messages, c->first_seq);
    if (c->summary[0]) {
        buf_puts(b, "{\"text\":");
        buf_put_json_string(b, c->summary, strlen(c->summary));
        buf_printf(b, ",\"covers_until_seq\":%" PRId64 ",\"tokens\":%" PRId64 "}", c->summary_upto,
                   c->summary_tokens);
    } else {
        buf_puts(b, "null");
    }
    if (with_messages) {
        buf_printf(b, ",\"has_more\":%s,\"next_before\":", has_more ? "true" : "false");
        if (has_more)
            buf_printf(b, "%" PRId64, next_before);
        else
            buf_puts(b, "null");
    }
    buf_puts(b, "}");
}

/* POST /mcp/context */
static int create_context(const http_req *req) {
    static const char *const allowed[] = {"system",       "model",    "ttl_seconds",
                                          "state",        "strategy", "max_context_tokens",
                                          "max_messages", NULL};
    const ctxd_config *cfg = req->cfg;
    json_object *body = NULL, *v;
    state_input si = {0};
    settings st = {0};
    const char *idem;
    uint64_t fp;
    int status;
    char id[UTIL_UUID_LEN + 1];

    if (http_idem_key_or_respond(req, &idem, &status)) return status;
    if (http_json_body_or_respond(req, &body, &fp, &status)) return status;
    if (body && (only_fields_or_respond(req, body, allowed, &status) ||
                 settings_or_respond(req, body, &st, &status) ||
                 (json_object_object_get_ex(body, "state", &v) && v &&
                  state_or_respond(req, v, 0, &si, &status))))
        goto cleanup;
    if (util_uuid4(id)) {
        status = http_send_error(req, 503, "no_randomness", 1, "no randomness for an id");
        goto cleanup;
    }
    if (idem) {
        int claimed;
        char first_id[UTIL_UUID_LEN + 1];
        uint64_t first_fp;
        if (store_create_claim(req->w->st, idem, fp, id, cfg->idempotency_ttl_s, &claimed, first_id,
                               &first_fp)) {
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
    store_new_context nc = {
        .id = id,
        .now_ms = util_now_ms(),
        .system = st.system,
        .model = st.model,
        .ttl_seconds = st.has_ttl ? st.ttl_seconds : cfg->default_ttl_s,
        .strategy = st.has_strategy ? st.strategy : cfg->strategy,
        .max_context_tokens = st.has_budget ? st.max_context_tokens : cfg->context_tokens,
        .max_messages = st.max_messages,
        .state_keys = si.keys,
        .state_values = si.values,
        .n_state = si.n,
    };
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

/* Query parameters: each name must be in names[]; values[i] receives the
 * text (NULL when absent), in buffers of QUERY_VALUE_MAX. */
#define QUERY_VALUE_MAX 96
static int query_or_respond(const http_req *req, const char *const *names,
                            char values[][QUERY_VALUE_MAX], const char **found, size_t n,
                            int *status) {
    for (size_t i = 0; i < n; i++) found[i] = NULL;
    if (!req->query || !*req->query) return CTXD_OK;
    char q[512];
    if (strlen(req->query) >= sizeof(q)) goto bad;
    snprintf(q, sizeof(q), "%s", req->query);
    char *save = NULL;
    for (char *p = strtok_r(q, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(p, '=');
        if (!eq || !eq[1] || strlen(eq + 1) >= QUERY_VALUE_MAX) goto bad;
        *eq++ = '\0';
        size_t i = 0;
        while (i < n && strcmp(p, names[i])) i++;
        if (i == n) goto bad;
        snprintf(values[i], QUERY_VALUE_MAX, "%s", eq);
        found[i] = values[i];
    }
    return CTXD_OK;
bad : {
    buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) buf_printf(&b, "%s%s=...", i ? ", " : "", names[i]);
    *status = http_send_error(req, 400, "invalid_query", 0, "Query parameters allowed here: %s",
                              b.data ? b.data : "none");
    buf_free(&b);
    return CTXD_ERR;
}
}

/* A positive integer query value, or 0 when absent. */
static int query_int_or_respond(const http_req *req, const char *name, const char *v, int64_t max,
                                int64_t *out, int *status) {
    char *end;
    *out = 0;
    if (!v) return CTXD_OK;
    long long n = strtoll(v, &end, 10);
    if (*end || n < 1 || n > max) {
        *status =
            http_send_error(req, 400, "invalid_query", 0,
                            "Query parameter %s must be an integer from 1 to %" PRId64, name, max);
        return CTXD_ERR;
    }
    *out = n;
    return CTXD_OK;
}

/* ?limit=N&before=SEQ for the history routes. */
static int paging_or_respond(const http_req *req, int64_t *limit, int64_t *before, int *status) {
    static const char *const names[] = {"limit", "before"};
    char values[2][QUERY_VALUE_MAX];
    const char *found[2];
    if (query_or_respond(req, names, values, found, 2, status) ||
        query_int_or_respond(req, "limit", found[0], 100000, limit, status) ||
        query_int_or_respond(req, "before", found[1], INT64_MAX / 2, before, status))
        return CTXD_ERR;
    return CTXD_OK;
}

/* Read a page of history and render it with or without the context. */
static int send_history(const http_req *req, int full) {
    int64_t limit, before;
    int status;
    store_context c;
    if (id_or_respond(req, &status) || paging_or_respond(req, &limit, &before, &status))
        return status;
    if (store_read(req->w->st, req->id, STORE_READ_MESSAGES | (full ? STORE_READ_STATE : 0),
                   (long)limit, before, &c))
        return store_failure(req, req->w->st);

    /* Where the returned page starts, mirroring the read script. */
    int64_t last = c.total_messages - 1;
    if (before > 0 && before - c.first_seq - 1 < last) last = before - c.first_seq - 1;
    int64_t start = limit > 0 && last - limit + 1 > 0 ? last - limit + 1 : 0;
    int has_more = c.n_messages > 0 && start > 0;

    buf b;
    buf_init(&b);
    if (full) {
        put_context(&b, &c, 1, has_more, c.first_seq + start);
    } else {
        buf_printf(&b, "{\"context_id\":\"%s\",\"messages\":[", c.id);
        for (size_t i = 0; i < c.n_messages; i++) {
            if (i) buf_puts(&b, ",");
            buf_putn(&b, c.messages[i].data, c.messages[i].len);
        }
        buf_printf(&b, "],\"message_count\":%" PRId64 ",\"has_more\":%s,\"next_before\":",
                   c.total_messages, has_more ? "true" : "false");
        if (has_more)
            buf_printf(&b, "%" PRId64 "}", c.first_seq + start);
        else
            buf_puts(&b, "null}");
    }
    store_context_free(&c);
    return send_buf(req, 200, &b, NULL);
}

/* GET /mcp/context/{id} */
static int get_context(const http_req *req) { return send_history(req, 1); }

/* GET /mcp/context/{id}/messages */
static int get_messages(const http_req *req) { return send_history(req, 0); }

/* PATCH /mcp/context/{id} */
static int patch_context(const http_req *req) {
    static const char *const allowed[] = {
        "system", "model", "ttl_seconds", "strategy", "max_context_tokens", "max_messages", NULL};
    json_object *body = NULL;
    settings st;
    int status;
    const char *fields[6], *values[6];
    char nums[3][24];
    size_t n = 0;
    store_context c;
    if (id_or_respond(req, &status) || http_json_body_or_respond(req, &body, NULL, &status))
        return status;
    if (!body) {
        status = http_send_error(req, 400, "missing_field", 0,
                                 "Send the settings to change as a JSON object, e.g. "
                                 "{\"strategy\": \"window\", \"max_context_tokens\": 4000}");
        goto cleanup;
    }
    if (only_fields_or_respond(req, body, allowed, &status) ||
        settings_or_respond(req, body, &st, &status))
        goto cleanup;
    if (st.has_system) fields[n] = "system", values[n++] = st.system;
    if (st.has_model) fields[n] = "model", values[n++] = st.model;
    if (st.has_strategy) fields[n] = "strategy", values[n++] = st.strategy;
    if (st.has_ttl) {
        snprintf(nums[0], sizeof(nums[0]), "%" PRId64, st.ttl_seconds);
        fields[n] = "ttl_seconds", values[n++] = nums[0];
    }
    if (st.has_budget) {
        snprintf(nums[1], sizeof(nums[1]), "%" PRId64, st.max_context_tokens);
        fields[n] = "max_context_tokens", values[n++] = nums[1];
    }
    if (st.has_max_messages) {
        snprintf(nums[2], sizeof(nums[2]), "%" PRId64, st.max_messages);
        fields[n] = "max_messages", values[n++] = nums[2];
    }
    if (store_set_settings(req->w->st, req->id, fields, values, n, util_now_ms()) ||
        store_read(req->w->st, req->id, 0, 0, 0, &c)) {
        status = store_failure(req, req->w->st);
        goto cleanup;
    }
    buf b;
    buf_init(&b);
    put_context(&b, &c, 0, 0, 0);
    store_context_free(&c);
    status = send_buf(req, 200, &b, NULL);
cleanup:
    if (body) json_object_put(body);
    return status;
}

/* A short preview of a stored message: role and the first bytes of its
 * text, cut on a UTF-8 boundary. */
static void put_preview(buf *b, const store_blob *m) {
    json_object *o = m->data ? json_tokener_parse(m->data) : NULL, *role, *content;
    if (!o || !json_object_object_get_ex(o, "role", &role) ||
        !json_object_object_get_ex(o, "content", &content)) {
        buf_puts(b, "null");
        json_object_put(o);
        return;
    }
    const char *t = json_object_get_string(content);
    size_t n = (size_t)json_object_get_string_len(content), cut = n > 96 ? 96 : n;
    while (cut < n && cut > 0 && ((unsigned char)t[cut] & 0xc0) == 0x80) cut--;
    buf_puts(b, "{\"role\":");
    buf_put_json_string(b, json_object_get_string(role), (size_t)json_object_get_string_len(role));
    buf_puts(b, ",\"text\":");
    buf_put_json_string(b, t, cut);
    buf_printf(b, ",\"truncated\":%s}", cut < n ? "true" : "false");
    json_object_put(o);
}

/* GET /mcp/contexts */
static int list_contexts(const http_req *req) {
    static const char *const names[] = {"limit", "cursor"};
    char values[2][QUERY_VALUE_MAX], cursor_id[UTIL_UUID_LEN + 1] = "";
    const char *found[2];
    int64_t limit, cursor_ms = 0;
    int status;
    store_list_item *items;
    size_t n;
    if (query_or_respond(req, names, values, found, 2, &status) ||
        query_int_or_respond(req, "limit", found[0], 1000, &limit, &status))
        return status;
    if (found[1]) {
        char *dash;
        cursor_ms = strtoll(found[1], &dash, 10);
        if (cursor_ms <= 0 || *dash != '-' || !util_is_context_id(dash + 1))
            return http_send_error(req, 400, "invalid_query", 0,
                                   "Query parameter cursor must be a next_cursor value "
                                   "from an earlier page");
        snprintf(cursor_id, sizeof(cursor_id), "%s", dash + 1);
    }
    if (!limit) limit = 20;
    if (store_list(req->w->st, (long)limit, cursor_ms, cursor_id, &items, &n))
        return store_failure(req, req->w->st);
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"contexts\":[");
    for (size_t i = 0; i < n; i++) {
        buf_printf(&b,
                   "%s{\"id\":\"%s\",\"created_at\":\"%s\",\"last_updated\":\"%s\","
                   "\"message_count\":%" PRId64 ",\"preview\":",
                   i ? "," : "", items[i].id, items[i].created_at, items[i].last_updated,
                   items[i].message_count);
        put_preview(&b, &items[i].last_message);
        buf_puts(&b, "}");
    }
    buf_puts(&b, "],\"next_cursor\":");
    if (n == (size_t)limit && n > 0)
        buf_printf(&b, "\"%" PRId64 "-%s\"", items[n - 1].activity_ms, items[n - 1].id);
    else
        buf_puts(&b, "null");
    buf_puts(&b, "}");
    store_list_free(items, n);
    return send_buf(req, 200, &b, NULL);
}

/* DELETE /mcp/context/{id} */
static int delete_context(const http_req *req) {
    int status, deleted;
    if (id_or_respond(req, &status)) return status;
    if (store_delete(req->w->st, req->id, &deleted)) return store_failure(req, req->w->st);
    if (!deleted)
        return http_send_error(req, 404, "context_not_found", 0, "Context not found: %s", req->id);
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
            log_msg(LOG_INFO,
                    "context %s: client left mid-stream; the turn still "
                    "completes and is stored",
                    ss->req->id);
        ss->client_gone = 1;
    }
    buf_free(&b);
}

static void stream_begin(stream_state *ss, const char *const *headers) {
    if (http_stream_start(ss->req, 200, "text/event-stream", headers)) ss->client_gone = 1;
    ss->started = 1;
}

static void stream_start(void *arg) { stream_begin(arg, NULL); }

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
        return http_send_error(req, res->status, res->code, res->retry_after_s, "%s", res->errstr);
    if (!ss->started) stream_begin(ss, res->replayed ? replayed_headers : NULL);
    if (res->status < 400) {
        if (res->replayed) {
            json_object *o = json_tokener_parse(res->body), *t;
            if (o && json_object_object_get_ex(o, "ai_response", &t))
                stream_delta(ss, json_object_get_string(t), (size_t)json_object_get_string_len(t));
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
        status = http_send_error(req, 400, "missing_field", 0,
                                 "Message content is required: send {\"message\": \"...\"} "
                                 "with Content-Type: application/json");
        goto cleanup;
    }
    if (only_fields_or_respond(req, body, allowed, &status) ||
        string_field_or_respond(req, body, "message", req->cfg->max_message_bytes, &text, &len,
                                &status) ||
        wants_stream(req, body, &stream, &status))
        goto cleanup;
    if (!text || len == 0) {
        status = http_send_error(req, 400, "missing_field", 0,
                                 "Message content is required: 'message' must be a "
                                 "non-empty string");
        goto cleanup;
    }
    stream_state ss = {req, 0, 0};
    turn_request tr = {
        req->id, text, len, idem, fp, stream ? stream_start : NULL, stream ? stream_delta : NULL,
        &ss};
    turn_run(req->w, &tr, &res);
    if (stream) {
        status = stream_finish(req, &ss, &res);
    } else if (res.status >= 400) {
        status = http_send_error(req, res.status, res.code, res.retry_after_s, "%s", res.errstr);
    } else {
        status = http_send(req, res.status, "application/json", res.body, strlen(res.body),
                           res.replayed ? replayed_headers : NULL);
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
        !json_object_is_type(arr, json_type_array) || (n = json_object_array_length(arr)) == 0 ||
        n > MAX_APPEND) {
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
            status =
                http_send_error(req, 400, "invalid_field", 0, "messages[%zu] must be an object", i);
            goto cleanup;
        }
        if (only_fields_or_respond(req, m, msg_allowed, &status) ||
            string_field_or_respond(req, m, "role", MAX_ENUM_LEN, &role, NULL, &status) ||
            string_field_or_respond(req, m, "content", req->cfg->max_message_bytes, &contents[i],
                                    &lens[i], &status))
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
        status = http_send_error(req, res.status, res.code, res.retry_after_s, "%s", res.errstr);
    else
        status = http_send(req, res.status, "application/json", res.body, strlen(res.body),
                           res.replayed ? replayed_headers : NULL);
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
    if (id_or_respond(req, &status) || http_json_body_or_respond(req, &body, NULL, &status))
        return status;
    if (!body) {
        status =
            http_send_error(req, 400, "missing_field", 0, "Send the state as a JSON object body");
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
    http_route("GET", "/mcp/contexts", list_contexts);
    http_route("GET", "/mcp/context/{id}", get_context);
    http_route("PATCH", "/mcp/context/{id}", patch_context);
    http_route("GET", "/mcp/context/{id}/messages", get_messages);
    http_route("DELETE", "/mcp/context/{id}", delete_context);
    http_route("POST", "/mcp/context/{id}/message", post_message);
    http_route("POST", "/mcp/context/{id}/messages", post_messages);
    http_route("GET", "/mcp/context/{id}/state", get_state);
    http_route("PUT", "/mcp/context/{id}/state", put_state);
    http_route("PATCH", "/mcp/context/{id}/state", patch_state);
}
