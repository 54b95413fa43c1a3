/* context.c: the context service the routes call: defaults, idempotent create, reads, changes. */
#include "ctxd/context.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void context_store_error(ctxd_error *e, const ctxd_worker *w, const char *id) {
    const store *st = w->st;
    switch (st->err) {
    case CTXD_E_NOT_FOUND: ctxd_error_set(e, st->err, "Context not found: %s", id); break;
    case CTXD_E_LOCK_LOST:
    case CTXD_E_CONFLICT:
        ctxd_error_set(e, st->err,
                       "Context %s changed while this turn ran (its lock expired); "
                       "nothing was stored, retry the request",
                       id);
        break;
    case CTXD_E_PRECONDITION_FAILED:
        ctxd_error_set(e, st->err,
                       "Context %s changed since it was read: If-Match names none of its "
                       "current version; nothing was changed (read it again for its ETag)",
                       id);
        break;
    case CTXD_E_CONTEXT_FULL:
        ctxd_error_set(e, st->err,
                       "Context %s is full; it may hold at most the configured "
                       "CTXD_MAX_MESSAGES messages",
                       id);
        break;
    case CTXD_E_STATE_TOO_LARGE:
        ctxd_error_set(e, st->err,
                       "The merged state would be larger than the %zu bytes "
                       "allowed (CTXD_MAX_STATE_BYTES)",
                       w->cfg->max_state_bytes);
        break;
    case CTXD_E_NOMEM: ctxd_error_set(e, st->err, "%s", st->errstr); break;
    default: ctxd_error_set(e, CTXD_E_REDIS, "%s", st->errstr); break;
    }
}

static int store_failed(ctxd_error *e, const ctxd_worker *w, const char *id) {
    context_store_error(e, w, id);
    return CTXD_ERR;
}

/* A repeat of an idempotent create: the first id, or 422. */
static int claim(ctxd_worker *w, const char *idem_key, uint64_t fp, char id[UTIL_UUID_LEN + 1],
                 int *replayed, ctxd_error *e) {
    int claimed;
    char first_id[UTIL_UUID_LEN + 1];
    uint64_t first_fp;
    if (store_create_claim(w->st, idem_key, fp, id, w->cfg->idempotency_ttl_s, &claimed, first_id,
                           &first_fp))
        return ctxd_error_set(e, w->st->err == CTXD_E_NOMEM ? CTXD_E_NOMEM : CTXD_E_REDIS, "%s",
                              w->st->errstr);
    if (claimed) return CTXD_OK;
    if (first_fp != fp)
        return ctxd_error_set(e, CTXD_E_IDEM_KEY_REUSED,
                              "Idempotency-Key '%s' was already used with a "
                              "different request; use a new key",
                              idem_key);
    memcpy(id, first_id, sizeof(first_id));
    *replayed = 1;
    return CTXD_OK;
}

int context_create(ctxd_worker *w, const store_settings *given, const store_blob *state_keys,
                   const store_blob *state_values, size_t n_state, const char *idem_key,
                   uint64_t fp, char id[UTIL_UUID_LEN + 1], int *replayed, ctxd_error *e) {
    const ctxd_config *cfg = w->cfg;
    *replayed = 0;
    if (util_uuid4(id)) return ctxd_error_set(e, CTXD_E_NO_RANDOMNESS, "no randomness for an id");
    if (idem_key && (claim(w, idem_key, fp, id, replayed, e) || *replayed))
        return *replayed ? CTXD_OK : CTXD_ERR;
    store_new_context nc = {
        .id = id,
        .now_ms = util_now_ms(),
        .settings =
            {
                .system = given->system,
                .model = given->model,
                .strategy = given->strategy ? given->strategy : cfg->strategy,
                .ttl_seconds = given->ttl_seconds >= 0 ? given->ttl_seconds : cfg->default_ttl_s,
                .max_context_tokens = given->max_context_tokens >= 0 ? given->max_context_tokens
                                                                     : cfg->context_tokens,
                .max_messages = given->max_messages >= 0 ? given->max_messages : 0,
                .tools = given->tools,
                .tool_choice = given->tool_choice,
            },
        .state_keys = state_keys,
        .state_values = state_values,
        .n_state = n_state,
    };
    if (store_create(w->st, &nc)) {
        ctxd_error_set(e, w->st->err == CTXD_E_EXISTS ? CTXD_E_EXISTS : CTXD_E_REDIS, "%s",
                       w->st->errstr);
        if (w->st->err == CTXD_E_NOMEM) e->err = CTXD_E_NOMEM;
        /* A create stored but not yet replicated keeps its claim: its retry
         * must find the same id, not make a second context. */
        if (idem_key && !store_unreplicated(w->st)) store_create_unclaim(w->st, idem_key);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int context_read(ctxd_worker *w, const char *id, int what, long limit, int64_t before,
                 store_context *out, ctxd_error *e) {
    if (store_read(w->st, id, what, limit, before, out)) return store_failed(e, w, id);
    return CTXD_OK;
}

int context_change(ctxd_worker *w, const char *id, const store_settings *change,
                   const char *if_match, store_context *out, ctxd_error *e) {
    memset(out, 0, sizeof(*out));
    if (store_set_settings(w->st, id, change, util_now_ms(), if_match))
        return store_failed(e, w, id);
    return context_read(w, id, 0, 0, 0, out, e);
}

#define MAX_STATE_KEY 256

void context_state_input_free(context_state_input *s) {
    if (!s) return;
    free(s->keys);
    free(s->values);
    memset(s, 0, sizeof(*s));
}

int context_state_input_of(const ctxd_config *cfg, json_object *obj, int keep_nulls,
                           context_state_input *out, ctxd_error *e) {
    size_t n, size = 0;
    memset(out, 0, sizeof(*out));
    if (!json_object_is_type(obj, json_type_object))
        return ctxd_error_set(e, CTXD_E_INVALID_FIELD, "State must be a JSON object");
    n = (size_t)json_object_object_length(obj);
    out->keys = calloc(n ? n : 1, sizeof(store_blob));
    out->values = calloc(n ? n : 1, sizeof(store_blob));
    if (!out->keys || !out->values) return ctxd_error_set(e, CTXD_E_NOMEM, "out of memory");
    json_object_object_foreach(obj, key, val) {
        size_t kl = strlen(key);
        if (kl == 0 || kl > MAX_STATE_KEY || !util_utf8_valid(key, kl))
            return ctxd_error_set(e, CTXD_E_INVALID_FIELD,
                                  "State keys must be 1 to %d bytes of UTF-8", MAX_STATE_KEY);
        if (!val && !keep_nulls) continue;
        out->keys[out->n] = (store_blob){key, kl};
        if (val) {
            size_t vl;
            out->values[out->n].data = (char *)json_object_to_json_string_length(
                val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &vl);
            out->values[out->n].len = vl;
            size += kl + vl;
        }
        out->n++;
    }
    if (size > cfg->max_state_bytes)
        return ctxd_error_set(e, CTXD_E_STATE_TOO_LARGE,
                              "State of %zu bytes is larger than the %zu allowed "
                              "(CTXD_MAX_STATE_BYTES)",
                              size, cfg->max_state_bytes);
    return CTXD_OK;
}

int context_state_write(ctxd_worker *w, const char *id, const store_blob *keys,
                        const store_blob *values, size_t n, int merge, const char *if_match,
                        store_context *out, ctxd_error *e) {
    size_t max = w->cfg->max_state_bytes;
    int64_t now = util_now_ms();
    memset(out, 0, sizeof(*out));
    if (merge ? store_state_patch(w->st, id, keys, values, n, max, now, if_match)
              : store_state_put(w->st, id, keys, values, n, max, now, if_match))
        return store_failed(e, w, id);
    return context_read(w, id, STORE_READ_STATE, 0, 0, out, e);
}

int context_delete(ctxd_worker *w, const char *id, ctxd_error *e) {
    int deleted;
    if (store_delete(w->st, id, &deleted)) return store_failed(e, w, id);
    if (!deleted) return ctxd_error_set(e, CTXD_E_NOT_FOUND, "Context not found: %s", id);
    return CTXD_OK;
}

/* A cursor is "<activity_ms>-<id>" of the last item of the page before. */
int context_list(ctxd_worker *w, long limit, const char *cursor, context_page *out, ctxd_error *e) {
    int64_t cursor_ms = 0;
    char cursor_id[UTIL_UUID_LEN + 1] = "";
    memset(out, 0, sizeof(*out));
    if (cursor) {
        char *dash;
        cursor_ms = strtoll(cursor, &dash, 10);
        if (cursor_ms <= 0 || *dash != '-' || !util_is_context_id(dash + 1))
            return ctxd_error_set(e, CTXD_E_INVALID_QUERY,
                                  "Query parameter cursor must be a next_cursor value "
                                  "from an earlier page");
        snprintf(cursor_id, sizeof(cursor_id), "%s", dash + 1);
    }
    if (store_list(w->st, limit, cursor_ms, cursor_id, &out->items, &out->n))
        return store_failed(e, w, "");
    if (out->n == (size_t)limit && out->n > 0)
        snprintf(out->next_cursor, sizeof(out->next_cursor), "%" PRId64 "-%s",
                 out->items[out->n - 1].activity_ms, out->items[out->n - 1].id);
    return CTXD_OK;
}

void context_page_free(context_page *p) {
    if (!p) return;
    store_list_free(p->items, p->n);
    memset(p, 0, sizeof(*p));
}
