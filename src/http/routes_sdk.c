/* routes_sdk.c: drop-in routes for the official SDKs: the history is ctxd's, the API the provider's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctxd/log.h"
#include "ctxd/message.h"
#include "ctxd/util.h"
#include "sdk_int.h"

/* The header naming the conversation, in a request and in every answer. */
#define CONTEXT_HEADER "ctxd-context-id"

void sdk_call_free(sdk_call *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        http_content_free(&c->msgs[i].c);
        if (c->msgs[i].src) json_object_put(c->msgs[i].src);
    }
    free(c->msgs);
    free(c->system);
    free(c->model);
    free(c->tools);
    free(c->tool_choice);
    free(c->extra);
    memset(c, 0, sizeof(*c));
}

void sdk_stream_event(sdk_stream *s, const char *event, const char *data, size_t len) {
    if (s->client_gone) return;
    buf b;
    buf_init(&b);
    if (event) buf_printf(&b, "event: %s\n", event);
    buf_puts(&b, "data: ");
    buf_putn(&b, data, len);
    buf_puts(&b, "\n\n");
    if (b.err || http_stream_write(s->req, b.data, b.len)) {
        log_msg(LOG_INFO, "%s: client left mid-stream; the turn still completes and is stored",
                s->req->path);
        s->client_gone = 1;
    }
    buf_free(&b);
}

json_object *sdk_reply_blocks(const turn_reply *r) {
    if (r->content_json) {
        json_object *o = json_tokener_parse(r->content_json);
        if (o && json_object_is_type(o, json_type_array)) return o;
        if (o) json_object_put(o);
    }
    json_object *arr = json_object_new_array(), *t = json_object_new_object();
    if (!arr || !t) {
        json_object_put(arr);
        json_object_put(t);
        return NULL;
    }
    json_object_object_add(t, "type", json_object_new_string("text"));
    json_object_object_add(t, "text",
                           json_object_new_string_len(r->text ? r->text : "", (int)r->text_len));
    json_object_array_add(arr, t);
    return arr;
}

/* Stop reasons: each pair is Anthropic's word and OpenAI's. */
static const char *const stops[][2] = {
    {"end_turn", "stop"},      {"max_tokens", "length"},      {"tool_use", "tool_calls"},
    {"stop_sequence", "stop"}, {"refusal", "content_filter"},
};

const char *sdk_stop_anthropic(const char *why) {
    if (!why || !*why) return "end_turn";
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++)
        if (!strcmp(why, stops[i][0]) || !strcmp(why, stops[i][1])) return stops[i][0];
    return why;
}

const char *sdk_stop_openai(const char *why) {
    if (!why || !*why) return "stop";
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++)
        if (!strcmp(why, stops[i][0]) || !strcmp(why, stops[i][1])) return stops[i][1];
    return why;
}

/* body minus own_fields as a JSON object's text (owned), or NULL when none
 * are left. *oom set when out of memory. */
static char *extra_fields(json_object *body, const char *const *own, int *oom) {
    json_object *rest = json_object_new_object();
    char *out = NULL;
    *oom = !rest;
    if (!rest) return NULL;
    json_object_object_foreach(body, k, v) {
        size_t i = 0;
        while (own[i] && strcmp(own[i], k)) i++;
        if (!own[i]) json_object_object_add(rest, k, json_object_get(v));
    }
    if (json_object_object_length(rest)) {
        out = strdup(json_object_to_json_string_ext(rest, JSON_C_TO_STRING_PLAIN));
        *oom = !out;
    }
    json_object_put(rest);
    return out;
}

/* The common fields: model and max tokens (under max_key), stream. */
static int common_fields(const http_req *req, json_object *body, const char *max_key, sdk_call *out,
                         int *status) {
    const char *model;
    json_object *v;
    if (http_string_field_or_respond(req, body, "model", 256, &model, NULL, status))
        return CTXD_ERR;
    if (model && *model && !(out->model = strdup(model))) goto oom;
    if (json_object_object_get_ex(body, max_key, &v) && v) {
        int64_t n = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || n < 1 || n > 1000000) {
            *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                      "%s: must be a whole number from 1 to 1000000", max_key);
            return CTXD_ERR;
        }
        out->max_tokens = (int)n;
    }
    if (json_object_object_get_ex(body, "stream", &v) && v) {
        if (!json_object_is_type(v, json_type_boolean)) {
            *status = http_send_error(req, CTXD_E_INVALID_FIELD, "stream: must be true or false");
            return CTXD_ERR;
        }
        out->stream = json_object_get_boolean(v);
    }
    return CTXD_OK;
oom:
    *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
    return CTXD_ERR;
}

int sdk_common_fields(const http_req *req, json_object *body, const char *max_key,
                      const char *const *own, sdk_call *out, int *status) {
    int oom;
    if (common_fields(req, body, max_key, out, status)) return CTXD_ERR;
    out->extra = extra_fields(body, own, &oom);
    if (oom) {
        *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int sdk_messages_or_respond(const http_req *req, json_object *body, json_object **arr, size_t *n,
                            int *status) {
    if (!json_object_object_get_ex(body, "messages", arr) ||
        !json_object_is_type(*arr, json_type_array) || (*n = json_object_array_length(*arr)) == 0 ||
        *n > SDK_MAX_MESSAGES) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "messages: must be an array of 1 to %d messages; send only what "
                                  "is new, ctxd adds the history",
                                  SDK_MAX_MESSAGES);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

/* The context a call continues: the header's, else a new one with the
 * configured settings (*created 1). */
static int context_or_create(const http_req *req, const char *idem, uint64_t fp,
                             char id[UTIL_UUID_LEN + 1], int *created, int *status) {
    const char *given = http_header(req, CONTEXT_HEADER);
    ctxd_error e;
    *created = 0;
    if (given) {
        if (!util_is_context_id(given)) {
            *status = http_send_error(req, CTXD_E_NOT_FOUND,
                                      "Context not found: the " CONTEXT_HEADER
                                      " header '%.64s' is not a context id (ids look like "
                                      "1b4e28ba-2fa1-4d2e-8c8f-6d1e3f0c9a27); leave the header "
                                      "out to start a new conversation",
                                      given);
            return CTXD_ERR;
        }
        snprintf(id, UTIL_UUID_LEN + 1, "%s", given);
        return CTXD_OK;
    }
    store_settings st = STORE_SETTINGS_UNCHANGED;
    int replayed;
    if (context_create(req->w, &st, NULL, NULL, 0, idem, fp, id, &replayed, &e)) {
        *status = http_send_failure(req, &e);
        return CTXD_ERR;
    }
    *created = 1;
    return CTXD_OK;
}

/* A message's content as blocks to compare: text as one text block, and
 * what a client may add or drop on the way back left out (cache_control,
 * fields set to null). NULL when out of memory or not JSON. */
static json_object *comparable(const char *content, size_t len, int json) {
    json_object *arr;
    if (json) {
        arr = json_tokener_parse(content);
        if (!arr || !json_object_is_type(arr, json_type_array)) {
            if (arr) json_object_put(arr);
            return NULL;
        }
    } else {
        json_object *t = json_object_new_object();
        arr = json_object_new_array();
        if (!arr || !t) {
            json_object_put(arr);
            json_object_put(t);
            return NULL;
        }
        json_object_object_add(t, "type", json_object_new_string("text"));
        json_object_object_add(t, "text", json_object_new_string_len(content, (int)len));
        json_object_array_add(arr, t);
    }
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *b = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(b, json_type_object)) continue;
        json_object_object_del(b, "cache_control");
        const char *drop[16];
        size_t n = 0;
        json_object_object_foreach(b, k, v) if (!v && n < 16) drop[n++] = k;
        for (size_t j = 0; j < n; j++) json_object_object_del(b, drop[j]);
    }
    return arr;
}

/* How many of the call's leading messages repeat the newest ones the
 * context holds (a client that sends the whole history each time): the
 * most j < n for which the call's first j messages end as the context's
 * messages end. They are not stored again. */
static int held_count(const http_req *req, const char *id, const sdk_call *call, size_t *held,
                      int *status) {
    store_context c;
    ctxd_error e;
    json_object **theirs = NULL, **ours = NULL;
    const char **roles = NULL;
    char *arena = NULL;
    size_t have = 0, used = 0, room = 1;
    int rc = CTXD_ERR;
    *held = 0;
    if (call->n < 2) return CTXD_OK;
    memset(&c, 0, sizeof(c));
    if (context_read(req->w, id, STORE_READ_MESSAGES, (long)call->n - 1, 0, &c, &e)) {
        *status = http_send_failure(req, &e);
        return CTXD_ERR;
    }
    for (size_t i = 0; i < c.n_messages; i++) room += c.messages[i].len;
    theirs = calloc(c.n_messages + 1, sizeof(*theirs));
    roles = calloc(c.n_messages + 1, sizeof(*roles));
    ours = calloc(call->n, sizeof(*ours));
    if (!theirs || !roles || !ours || !(arena = malloc(room))) goto oom;
    for (size_t i = 0; i < c.n_messages; i++) {
        message m;
        if (message_decode(c.messages[i].data, c.messages[i].len, arena, &used, &m)) continue;
        roles[have] = m.role;
        if (!(theirs[have++] = comparable(m.content, m.content_len, m.content_json))) goto oom;
    }
    for (size_t i = 0; i + 1 < call->n; i++) {
        const http_content *mc = &call->msgs[i].c;
        if (!(ours[i] = comparable(mc->text, mc->len, mc->json))) goto oom;
    }
    for (size_t j = call->n - 1; j > 0 && !*held; j--) {
        size_t m = j < have ? j : have, t;
        for (t = 0; t < m; t++) {
            size_t a = j - m + t, b = have - m + t;
            if (strcmp(call->msgs[a].role, roles[b]) || !json_object_equal(ours[a], theirs[b]))
                break;
        }
        if (m && t == m) *held = j;
    }
    rc = CTXD_OK;
    goto cleanup;
oom:
    *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
cleanup:
    for (size_t i = 0; theirs && i < have; i++) json_object_put(theirs[i]);
    for (size_t i = 0; ours && i + 1 < call->n; i++) json_object_put(ours[i]);
    free(theirs);
    free(ours);
    free(roles);
    free(arena);
    store_context_free(&c);
    return rc;
}

/* ---- Streaming ---- */

/* A streamed call. Its stream comes first: the dialect's callbacks get the
 * run as their sdk_stream *. */
typedef struct sdk_run {
    sdk_stream s;
    const sdk_dialect *d;
} sdk_run;

static void begin(sdk_run *run) {
    sdk_stream *s = &run->s;
    if (http_stream_start(s->req, 200, "text/event-stream", s->headers)) s->client_gone = 1;
    s->started = 1;
    run->d->open(s);
}

static void on_start(void *arg, const char *model) {
    sdk_run *run = arg;
    snprintf(run->s.model, sizeof(run->s.model), "%s", model);
    begin(run);
}

/* The end of a streamed call: a reply not streamed yet (a replay) goes out
 * whole, then the closing events, or an error event once begun. */
static int stream_finish(sdk_run *run, const turn_result *res) {
    sdk_stream *s = &run->s;
    int failed = res->error.err != CTXD_E_NONE;
    if (failed && !s->started)
        return http_send_error_with(s->req, res->error.err, res->error.retry_after_s, s->headers,
                                    res->error.msg);
    if (!s->started) {
        if (res->reply.model[0]) snprintf(s->model, sizeof(s->model), "%s", res->reply.model);
        begin(run);
    }
    if (!failed && !s->sent) {
        json_object *blocks = sdk_reply_blocks(&res->reply);
        for (size_t i = 0; blocks && i < json_object_array_length(blocks); i++) {
            json_object *b = json_object_array_get_idx(blocks, i), *t;
            const char *type =
                json_object_object_get_ex(b, "type", &t) ? json_object_get_string(t) : "";
            if (!strcmp(type, "text") && json_object_object_get_ex(b, "text", &t))
                run->d->delta(s, json_object_get_string(t), (size_t)json_object_get_string_len(t));
            else if ((type = json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN)))
                run->d->block(s, type, strlen(type));
        }
        if (blocks) json_object_put(blocks);
    }
    run->d->close(s, failed ? NULL : &res->reply, failed ? &res->error : NULL);
    if (!s->client_gone) http_stream_end(s->req);
    return 200;
}

/* ---- The routes ---- */

static int serve(const http_req *req, const sdk_dialect *d) {
    json_object *body = NULL;
    sdk_call call;
    turn_message *lead = NULL;
    turn_result res;
    const char *idem;
    char id[UTIL_UUID_LEN + 1] = "";
    uint64_t fp;
    size_t held = 0;
    int status, created = 0;
    memset(&call, 0, sizeof(call));
    memset(&res, 0, sizeof(res));

    if (http_idem_key_or_respond(req, &idem, &status) ||
        http_required_body_or_respond(req, "Send the provider's request body as JSON", &body, &fp,
                                      &status))
        return status;
    if (d->parse(req, body, &call, &status) ||
        context_or_create(req, idem, fp, id, &created, &status))
        goto cleanup;
    /* Every answer names the context; a replay says so too (below). */
    const char *headers[] = {CONTEXT_HEADER, id, NULL, NULL, NULL};
    if (held_count(req, id, &call, &held, &status)) goto cleanup;
    sdk_message *last = &call.msgs[call.n - 1];
    if (strcmp(last->role, "user")) {
        status = http_send_error_with(req, CTXD_E_INVALID_FIELD, 0, headers,
                                      "messages: the last message must be the user's (a question "
                                      "or tool results): ctxd stores a conversation turn by turn");
        goto cleanup;
    }
    size_t n_lead = call.n - 1 - held;
    if (n_lead && !(lead = calloc(n_lead, sizeof(*lead)))) {
        status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n_lead; i++) {
        const sdk_message *m = &call.msgs[held + i];
        lead[i] = (turn_message){m->role, m->c.text, m->c.len, m->c.json};
    }
    ctxd_error e;
    if (auth_rate_tokens_check(req->w, req->who, NULL, &e)) {
        status = http_send_error_with(req, e.err, e.retry_after_s, headers, e.msg);
        goto cleanup;
    }
    sdk_run run = {
        .s = {.req = req, .headers = headers, .call = &call, .created = util_now_ms() / 1000},
        .d = d};
    if (turn_message_id(run.s.id)) {
        status = http_send_error(req, CTXD_E_NO_RANDOMNESS, "no randomness for a message id");
        goto cleanup;
    }
    turn_request tr = {
        .context_id = id,
        .message = last->c.text,
        .message_len = last->c.len,
        .message_json = last->c.json,
        .idem_key = idem,
        .fingerprint = fp,
        .on_start = call.stream ? on_start : NULL,
        .on_delta = call.stream ? d->delta : NULL,
        .on_block = call.stream ? d->block : NULL,
        .stream_arg = &run,
        .tools_json = call.tools,
        .tool_choice_json = call.tool_choice,
        .lead = lead,
        .n_lead = n_lead,
        .system = call.system,
        .model = call.model,
        .max_tokens = call.max_tokens,
        .extra_json = call.extra,
        .extra_openai = d->api == HTTP_API_OPENAI,
        .reply_id = run.s.id,
        .anthropic_beta = d->api == HTTP_API_ANTHROPIC ? http_header(req, "anthropic-beta") : NULL};
    turn_run(req->w, &tr, &res);
    if (res.replayed && res.reply.id[0]) snprintf(run.s.id, sizeof(run.s.id), "%s", res.reply.id);
    if (res.replayed) headers[2] = "Idempotent-Replayed", headers[3] = "true";
    if (call.stream) {
        status = stream_finish(&run, &res);
    } else if (res.error.err != CTXD_E_NONE) {
        status = http_send_error_with(req, res.error.err, res.error.retry_after_s, headers,
                                      res.error.msg);
    } else {
        buf b;
        buf_init(&b);
        if (res.reply.model[0])
            snprintf(run.s.model, sizeof(run.s.model), "%s", res.reply.model);
        else
            snprintf(run.s.model, sizeof(run.s.model), "%s",
                     call.model ? call.model : req->cfg->model);
        d->render(&b, &run.s, &res.reply);
        status = http_send_json(req, 200, &b, headers);
    }
    if (res.error.err == CTXD_E_NONE && !res.replayed)
        auth_rate_tokens_charge(req->w, req->who, turn_reply_tokens(&res.reply));
cleanup:
    if (created && status >= 400)
        log_msg(LOG_INFO, "context %s was created for a call that failed (%d); its id went back",
                id, status);
    free(lead);
    turn_result_free(&res);
    sdk_call_free(&call);
    if (body) json_object_put(body);
    return status;
}

/* POST /v1/messages: Anthropic's Messages API */
static int post_messages(const http_req *req) { return serve(req, &sdk_anthropic); }

/* POST /v1/chat/completions: OpenAI's Chat Completions API */
static int post_completions(const http_req *req) { return serve(req, &sdk_openai); }

/* The configured model as both SDKs read a model (Anthropic's fields and
 * OpenAI's side by side). */
static void put_model(buf *b, const ctxd_config *cfg) {
    static const char *const providers[] = {"echo", "anthropic", "openai"};
    const char *owner = (size_t)cfg->provider < 3 ? providers[cfg->provider] : "ctxd";
    buf_puts(b, "{\"id\":");
    buf_put_json_string(b, cfg->model, strlen(cfg->model));
    buf_puts(b, ",\"object\":\"model\",\"type\":\"model\",\"display_name\":");
    buf_put_json_string(b, cfg->model, strlen(cfg->model));
    buf_puts(b, ",\"created\":0,\"created_at\":\"1970-01-01T00:00:00Z\",\"owned_by\":");
    buf_put_json_string(b, owner, strlen(owner));
    buf_puts(b, "}");
}

/* GET /v1/models: the configured model, in a list. */
static int get_models(const http_req *req) {
    const char *model = req->cfg->model;
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    put_model(&b, req->cfg);
    buf_puts(&b, "],\"has_more\":false,\"first_id\":");
    buf_put_json_string(&b, model, strlen(model));
    buf_puts(&b, ",\"last_id\":");
    buf_put_json_string(&b, model, strlen(model));
    buf_puts(&b, "}");
    return http_send_json(req, 200, &b, NULL);
}

/* GET /v1/models/{id}: the configured model, or 404 for any other. */
static int get_model(const http_req *req) {
    if (strcmp(req->id, req->cfg->model))
        return http_send_error(req, CTXD_E_ROUTE_NOT_FOUND,
                               "No model '%.128s' here: this ctxd serves its CTXD_MODEL, '%s' "
                               "(a request's own model goes upstream as given)",
                               req->id, req->cfg->model);
    buf b;
    buf_init(&b);
    put_model(&b, req->cfg);
    return http_send_json(req, 200, &b, NULL);
}

void routes_sdk_register(void) {
    http_route_api("POST", "/v1/messages", post_messages, HTTP_API_ANTHROPIC);
    http_route_api("POST", "/v1/chat/completions", post_completions, HTTP_API_OPENAI);
    http_route_api("GET", "/v1/models", get_models, HTTP_API_OPENAI);
    http_route_api("GET", "/v1/models/{id}", get_model, HTTP_API_OPENAI);
}
