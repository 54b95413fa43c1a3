/* mcp_tools.c: the MCP tools: thin adapters from tool arguments to the context and turn services. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/context.h"
#include "ctxd/mcp.h"
#include "ctxd/turn.h"
#include "ctxd/util.h"

#define MAX_MODEL_LEN 127
#define MAX_TTL_SECONDS (10LL * 365 * 86400)
#define MAX_APPEND 1000
#define MAX_PAGE 1000

/* One call of a tool: its arguments (borrowed), what it returns (owned,
 * structuredContent) or why it failed (the isError text). */
typedef struct tool_call {
    ctxd_worker *w;
    const mcp_caller *c;
    json_object *args;
    json_object *out;
    char why[CTXD_ERRSTR_LEN * 2];
    mcp_error *err; /* ctxd's own trouble goes here (mcp_infra_failure) */
    int infra;
} tool_call;

typedef int (*tool_fn)(tool_call *t);

typedef struct tool_def {
    const char *name, *title, *description;
    int read_only, destructive, idempotent;
    const char *input, *output; /* JSON Schemas, as JSON text */
    tool_fn fn;
    const char *const *args; /* the argument names, NULL-terminated */
} tool_def;

static int fail(tool_call *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(tool_call *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->why, sizeof(t->why), fmt, ap);
    va_end(ap);
    return CTXD_ERR;
}

/* A service failure: the tool's error, or ctxd's own trouble (not the
 * tool's: answered as the HTTP edge answers it everywhere). */
static int failed_with(tool_call *t, const ctxd_error *e) {
    if (mcp_infra_failure(t->err, e)) t->infra = 1;
    return fail(t, "%s", e->msg);
}

/* ---- Arguments: each check fails the call with a sentence naming the argument ---- */

static json_object *arg(tool_call *t, const char *name) {
    json_object *v = NULL;
    json_object_object_get_ex(t->args, name, &v);
    return v;
}

static int arg_only(tool_call *t, const char *tool, const char *const *allowed) {
    json_object_object_foreach(t->args, key, val) {
        CTXD_UNUSED(val);
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key)) i++;
        if (!allowed[i]) return fail(t, "Unknown argument '%s' for %s", key, tool);
    }
    return CTXD_OK;
}

/* A string argument of 1 to max bytes; *out NULL when absent and optional. */
static int arg_string(tool_call *t, const char *name, int required, size_t max, const char **out) {
    json_object *v = arg(t, name);
    *out = NULL;
    if (!v && !required) return CTXD_OK;
    if (!v || !json_object_is_type(v, json_type_string) || !json_object_get_string_len(v))
        return fail(t, "Argument '%s' must be a non-empty string", name);
    if ((size_t)json_object_get_string_len(v) > max)
        return fail(t, "Argument '%s' is %d bytes; at most %zu are allowed", name,
                    json_object_get_string_len(v), max);
    *out = json_object_get_string(v);
    return CTXD_OK;
}

/* An integer argument in [min, max]; *out stays as it is when absent. */
static int arg_int(tool_call *t, const char *name, int64_t min, int64_t max, int64_t *out) {
    json_object *v = arg(t, name);
    if (!v) return CTXD_OK;
    int64_t n = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || n < min || n > max)
        return fail(t, "Argument '%s' must be an integer from %" PRId64 " to %" PRId64, name, min,
                    max);
    *out = n;
    return CTXD_OK;
}

static int arg_context_id(tool_call *t, const char **id) {
    if (arg_string(t, "context_id", 1, 64, id)) return CTXD_ERR;
    if (!util_is_context_id(*id))
        return fail(t,
                    "Context not found: '%s' is not a context id (ids look like "
                    "1b4e28ba-2fa1-4d2e-8c8f-6d1e3f0c9a27)",
                    *id);
    return CTXD_OK;
}

/* The state argument (see context_state_input_of), or the tool's error. */
static int arg_state(tool_call *t, json_object *obj, int keep_nulls, context_state_input *s) {
    ctxd_error e;
    if (!json_object_is_type(obj, json_type_object))
        return fail(t, "Argument 'state' must be a JSON object");
    if (context_state_input_of(t->w->cfg, obj, keep_nulls, s, &e)) return fail(t, "%s", e.msg);
    return CTXD_OK;
}

/* ---- Results ---- */

static json_object *string_or_null(const char *s) {
    return s && s[0] ? json_object_new_string(s) : NULL;
}

static json_object *int_or_null(int64_t v) { return v >= 0 ? json_object_new_int64(v) : NULL; }

/* Stored messages (JSON text) as an array; one that does not parse is left out. */
static json_object *messages_json(const store_context *c) {
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < c->n_messages; i++) {
        json_object *m = mcp_json_parse(c->messages[i].data, c->messages[i].len);
        if (m) json_object_array_add(arr, m);
    }
    return arr;
}

static json_object *state_json(const store_context *c) {
    json_object *st = json_object_new_object();
    for (size_t i = 0; i < c->n_state; i++) {
        json_object *v = mcp_json_parse(c->state_values[i].data, c->state_values[i].len);
        json_object_object_add(st, c->state_keys[i].data, v);
    }
    return st;
}

static json_object *context_id_object(const char *id) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "context_id", json_object_new_string(id));
    return o;
}

/* ---- The tools ---- */

/* create_context */
static int create_context(tool_call *t) {
    const ctxd_config *cfg = t->w->cfg;
    store_settings st = STORE_SETTINGS_UNCHANGED;
    context_state_input sa = {0};
    char id[UTIL_UUID_LEN + 1];
    int replayed, rc = CTXD_ERR;
    ctxd_error e;
    json_object *state = arg(t, "state");
    if (arg_string(t, "system", 0, cfg->max_message_bytes, &st.system) ||
        arg_string(t, "model", 0, MAX_MODEL_LEN, &st.model) ||
        arg_string(t, "strategy", 0, 16, &st.strategy) ||
        arg_int(t, "ttl_seconds", 0, MAX_TTL_SECONDS, &st.ttl_seconds) ||
        arg_int(t, "max_context_tokens", 64, 100000000, &st.max_context_tokens) ||
        arg_int(t, "max_messages", 0, cfg->max_messages, &st.max_messages) ||
        (state && arg_state(t, state, 0, &sa)))
        goto cleanup;
    if (st.strategy && strcmp(st.strategy, "all") && strcmp(st.strategy, "window") &&
        strcmp(st.strategy, "summarize")) {
        fail(t, "Argument 'strategy' must be \"all\", \"window\" or \"summarize\"");
        goto cleanup;
    }
    if (st.max_messages == 1) {
        fail(t, "Argument 'max_messages' must be 0 (keep all) or at least 2");
        goto cleanup;
    }
    if (context_create(t->w, &st, sa.keys, sa.values, sa.n, NULL, 0, id, &replayed, &e)) {
        failed_with(t, &e);
        goto cleanup;
    }
    t->out = context_id_object(id);
    rc = CTXD_OK;
cleanup:
    context_state_input_free(&sa);
    return rc;
}

/* add_messages */
static int add_messages(tool_call *t) {
    const char *id, **roles = NULL, **contents = NULL;
    size_t *lens = NULL, n = 0;
    json_object *arr = arg(t, "messages");
    turn_result res;
    int rc = CTXD_ERR;
    memset(&res, 0, sizeof(res));
    if (arg_context_id(t, &id)) return CTXD_ERR;
    if (!arr || !json_object_is_type(arr, json_type_array) ||
        (n = json_object_array_length(arr)) == 0 || n > MAX_APPEND)
        return fail(t,
                    "Argument 'messages' must be an array of 1 to %d {\"role\", \"content\"} "
                    "objects",
                    MAX_APPEND);
    roles = calloc(n, sizeof(*roles));
    contents = calloc(n, sizeof(*contents));
    lens = calloc(n, sizeof(*lens));
    if (!roles || !contents || !lens) {
        fail(t, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(arr, i), *role = NULL, *content = NULL;
        json_object_object_get_ex(m, "role", &role);
        json_object_object_get_ex(m, "content", &content);
        const char *r = role ? json_object_get_string(role) : NULL;
        if (!json_object_is_type(m, json_type_object) || json_object_object_length(m) != 2 ||
            !json_object_is_type(role, json_type_string) ||
            (strcmp(r, "user") && strcmp(r, "assistant"))) {
            fail(t,
                 "messages[%zu] must be {\"role\": \"user\" or \"assistant\", \"content\": "
                 "\"...\"}",
                 i);
            goto cleanup;
        }
        if (!json_object_is_type(content, json_type_string) ||
            !json_object_get_string_len(content) ||
            (size_t)json_object_get_string_len(content) > t->w->cfg->max_message_bytes) {
            fail(t, "messages[%zu].content must be a non-empty string of at most %zu bytes", i,
                 t->w->cfg->max_message_bytes);
            goto cleanup;
        }
        roles[i] = r;
        contents[i] = json_object_get_string(content);
        lens[i] = (size_t)json_object_get_string_len(content);
    }
    turn_append_request ar = {
        .context_id = id, .roles = roles, .contents = contents, .content_lens = lens, .n = n};
    if (turn_append(t->w, &ar, &res)) {
        failed_with(t, &res.error);
        goto cleanup;
    }
    t->out = context_id_object(id);
    json_object_object_add(t->out, "appended", json_object_new_int64((int64_t)res.appended));
    json_object_object_add(t->out, "first_seq", json_object_new_int64(res.first_seq));
    rc = CTXD_OK;
cleanup:
    turn_result_free(&res);
    free(roles);
    free(contents);
    free(lens);
    return rc;
}

/* read_messages */
static int read_messages(tool_call *t) {
    const char *id;
    int64_t limit = 50, before = 0;
    store_context c;
    ctxd_error e;
    if (arg_context_id(t, &id) || arg_int(t, "limit", 1, MAX_PAGE, &limit) ||
        arg_int(t, "before", 1, INT64_MAX / 2, &before))
        return CTXD_ERR;
    if (context_read(t->w, id, STORE_READ_MESSAGES, (long)limit, before, &c, &e))
        return failed_with(t, &e);
    t->out = context_id_object(id);
    json_object_object_add(t->out, "messages", messages_json(&c));
    json_object_object_add(t->out, "message_count", json_object_new_int64(c.total_messages));
    json_object_object_add(t->out, "has_more", json_object_new_boolean(c.has_more));
    json_object_object_add(t->out, "next_before",
                           c.has_more ? json_object_new_int64(c.next_before) : NULL);
    store_context_free(&c);
    return CTXD_OK;
}

static json_object *reply_json(const char *id, const turn_reply *r) {
    json_object *o = context_id_object(id), *usage = json_object_new_object();
    json_object_object_add(o, "reply",
                           json_object_new_string_len(r->text ? r->text : "", (int)r->text_len));
    json_object_object_add(o, "model", json_object_new_string(r->model));
    json_object_object_add(o, "stop_reason", string_or_null(r->stop_reason));
    json_object_object_add(usage, "input_tokens", int_or_null(r->input_tokens));
    json_object_object_add(usage, "output_tokens", int_or_null(r->output_tokens));
    json_object_object_add(o, "usage", usage);
    if (r->content_json) /* tool_use or thinking blocks: the reply whole */
        json_object_object_add(o, "content", mcp_json_parse(r->content_json, r->content_json_len));
    return o;
}

/* send_message */
static int send_message(tool_call *t) {
    const char *id, *text;
    ctxd_error e;
    turn_result res;
    memset(&res, 0, sizeof(res));
    if (arg_context_id(t, &id) || arg_string(t, "message", 1, t->w->cfg->max_message_bytes, &text))
        return CTXD_ERR;
    if (auth_rate_tokens_check(t->w, t->c->who, NULL, &e)) return failed_with(t, &e);
    turn_request tr = {.context_id = id, .message = text, .message_len = strlen(text)};
    int rc = turn_run(t->w, &tr, &res);
    if (rc) {
        failed_with(t, &res.error);
    } else {
        t->out = reply_json(id, &res.reply);
        auth_rate_tokens_charge(t->w, t->c->who, turn_reply_tokens(&res.reply));
    }
    turn_result_free(&res);
    return rc;
}

static int state_answer(tool_call *t, const char *id, store_context *c) {
    t->out = context_id_object(id);
    json_object_object_add(t->out, "state", state_json(c));
    store_context_free(c);
    return CTXD_OK;
}

/* get_state */
static int get_state(tool_call *t) {
    const char *id;
    store_context c;
    ctxd_error e;
    if (arg_context_id(t, &id)) return CTXD_ERR;
    if (context_read(t->w, id, STORE_READ_STATE, 0, 0, &c, &e)) return failed_with(t, &e);
    return state_answer(t, id, &c);
}

static int write_state(tool_call *t, int merge) {
    const char *id;
    context_state_input sa = {0};
    store_context c;
    ctxd_error e;
    json_object *state = arg(t, "state");
    int rc = CTXD_ERR;
    if (arg_context_id(t, &id)) return CTXD_ERR;
    if (!state) return fail(t, "Argument 'state' is required: a JSON object");
    if (arg_state(t, state, merge, &sa)) goto cleanup;
    if (context_state_write(t->w, id, sa.keys, sa.values, sa.n, merge, NULL, &c, &e)) {
        failed_with(t, &e);
        goto cleanup;
    }
    rc = state_answer(t, id, &c);
cleanup:
    context_state_input_free(&sa);
    return rc;
}

/* set_state */
static int set_state(tool_call *t) { return write_state(t, 0); }

/* patch_state */
static int patch_state(tool_call *t) { return write_state(t, 1); }

/* list_contexts */
static int list_contexts(tool_call *t) {
    int64_t limit = 20;
    const char *cursor;
    context_page page;
    ctxd_error e;
    if (arg_int(t, "limit", 1, MAX_PAGE, &limit) || arg_string(t, "cursor", 0, 63, &cursor))
        return CTXD_ERR;
    if (context_list(t->w, (long)limit, cursor, &page, &e)) {
        if (e.err == CTXD_E_INVALID_QUERY)
            return fail(t, "Argument 'cursor' must be a next_cursor of an earlier list_contexts");
        return failed_with(t, &e);
    }
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < page.n; i++) {
        const store_list_item *it = &page.items[i];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "id", json_object_new_string(it->id));
        json_object_object_add(o, "created_at", json_object_new_string(it->created_at));
        json_object_object_add(o, "last_updated", json_object_new_string(it->last_updated));
        json_object_object_add(o, "message_count", json_object_new_int64(it->message_count));
        json_object_array_add(arr, o);
    }
    t->out = json_object_new_object();
    json_object_object_add(t->out, "contexts", arr);
    json_object_object_add(t->out, "next_cursor", string_or_null(page.next_cursor));
    context_page_free(&page);
    return CTXD_OK;
}

/* delete_context */
static int delete_context(tool_call *t) {
    const char *id;
    ctxd_error e;
    if (arg_context_id(t, &id)) return CTXD_ERR;
    if (context_delete(t->w, id, &e)) return failed_with(t, &e);
    t->out = context_id_object(id);
    json_object_object_add(t->out, "deleted", json_object_new_boolean(1));
    return CTXD_OK;
}

/* recall */
static int recall(tool_call *t) {
    const char *id;
    int64_t budget = 0, tokens, used;
    store_context c;
    ctxd_error e;
    if (arg_context_id(t, &id) || arg_int(t, "max_tokens", 64, 100000000, &budget)) return CTXD_ERR;
    if (context_recall(t->w, id, budget, &c, &tokens, &used, &e)) return failed_with(t, &e);
    t->out = context_id_object(id);
    json_object_object_add(t->out, "strategy", json_object_new_string(c.strategy));
    json_object_object_add(t->out, "budget", json_object_new_int64(used));
    json_object_object_add(t->out, "tokens", json_object_new_int64(tokens));
    json_object_object_add(t->out, "system", string_or_null(c.system));
    json_object_object_add(t->out, "summary", string_or_null(c.summary));
    json_object_object_add(t->out, "messages", messages_json(&c));
    json_object_object_add(t->out, "omitted_messages",
                           json_object_new_int64(c.total_messages - (int64_t)c.n_messages));
    store_context_free(&c);
    return CTXD_OK;
}

/* ---- The table: names, schemas, hints ---- */

#define ID_PROP "\"context_id\":{\"type\":\"string\",\"description\":\"The context's id (a UUID)\"}"
#define OBJ(props, req) "{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req "]}"
#define IN(props, req)                                                                             \
    "{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req                           \
    "],\"additionalProperties\":false}"
#define INT "{\"type\":\"integer\"}"
#define STR "{\"type\":\"string\"}"
#define INT_OR_NULL "{\"type\":[\"integer\",\"null\"]}"
#define STR_OR_NULL "{\"type\":[\"string\",\"null\"]}"
#define MESSAGE                                                                                    \
    "{\"type\":\"object\",\"properties\":{\"seq\":" INT ",\"role\":{\"enum\":[\"user\","           \
    "\"assistant\"]},\"content\":{\"type\":[\"string\",\"array\"]},\"tokens\":" INT                \
    ",\"created_at\":" STR "},\"required\":[\"seq\",\"role\",\"content\"]}"
#define MESSAGES "{\"type\":\"array\",\"items\":" MESSAGE "}"
#define STATE_OUT                                                                                  \
    OBJ("\"context_id\":" STR ",\"state\":{\"type\":\"object\"}", "\"context_id\",\"state\"")

static const char *const a_create[] = {
    "system",       "model", "strategy", "ttl_seconds", "max_context_tokens",
    "max_messages", "state", NULL};
static const char *const a_add[] = {"context_id", "messages", NULL};
static const char *const a_read[] = {"context_id", "limit", "before", NULL};
static const char *const a_send[] = {"context_id", "message", NULL};
static const char *const a_id[] = {"context_id", NULL};
static const char *const a_state[] = {"context_id", "state", NULL};
static const char *const a_list[] = {"limit", "cursor", NULL};
static const char *const a_recall[] = {"context_id", "max_tokens", NULL};

static const tool_def tools[] = {
    {"create_context", "Create a context",
     "Start a new conversation context. Optional settings: a system prompt, a model, the "
     "windowing strategy (all, window, summarize) with its token budget, a message cap, an "
     "expiry, and an initial JSON state. Returns the new context_id.",
     0, 0, 0,
     IN("\"system\":{\"type\":\"string\",\"description\":\"System prompt\"},\"model\":" STR
        ",\"strategy\":{\"enum\":[\"all\",\"window\",\"summarize\"]},\"ttl_seconds\":{\"type\":"
        "\"integer\",\"minimum\":0},\"max_context_tokens\":{\"type\":\"integer\",\"minimum\":64},"
        "\"max_messages\":{\"type\":\"integer\",\"minimum\":0},\"state\":{\"type\":\"object\"}",
        ""),
     OBJ("\"context_id\":" STR, "\"context_id\""), create_context, a_create},
    {"add_messages", "Add messages",
     "Store messages in a context as they are, without calling a model (for example a "
     "conversation you ran yourself). Roles are user or assistant.",
     0, 0, 0,
     IN(ID_PROP ",\"messages\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":1000,\"items\":"
                "{\"type\":\"object\",\"properties\":{\"role\":{\"enum\":[\"user\",\"assistant\"]"
                "},\"content\":{\"type\":\"string\",\"minLength\":1}},\"required\":[\"role\","
                "\"content\"],\"additionalProperties\":false}}",
        "\"context_id\",\"messages\""),
     OBJ("\"context_id\":" STR ",\"appended\":" INT ",\"first_seq\":" INT,
         "\"context_id\",\"appended\",\"first_seq\""),
     add_messages, a_add},
    {"read_messages", "Read messages",
     "Read a context's stored messages, newest page first: limit (default 50) newest messages "
     "before the seq 'before'; has_more and next_before page further back.",
     1, 0, 1,
     IN(ID_PROP ",\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},\"before\":{"
                "\"type\":\"integer\",\"minimum\":1}",
        "\"context_id\""),
     OBJ("\"context_id\":" STR ",\"messages\":" MESSAGES ",\"message_count\":" INT
         ",\"has_more\":{\"type\":\"boolean\"},\"next_before\":" INT_OR_NULL,
         "\"context_id\",\"messages\",\"message_count\",\"has_more\",\"next_before\""),
     read_messages, a_read},
    {"send_message", "Send a message and get the reply",
     "Send a user message in a context: ctxd calls the model with the context's history "
     "(windowed as the context says), stores the message and the reply together, and returns "
     "the reply.",
     0, 0, 0,
     IN(ID_PROP ",\"message\":{\"type\":\"string\",\"minLength\":1}", "\"context_id\",\"message\""),
     OBJ("\"context_id\":" STR ",\"reply\":" STR ",\"model\":" STR ",\"stop_reason\":" STR_OR_NULL
         ",\"usage\":" OBJ("\"input_tokens\":" INT_OR_NULL ",\"output_tokens\":" INT_OR_NULL,
                           "\"input_tokens\",\"output_tokens\"") ",\"content\":{\"type\":"
                                                                 "\"array\"}",
         "\"context_id\",\"reply\",\"model\",\"usage\""),
     send_message, a_send},
    {"get_state", "Get the state", "Read a context's JSON state object.", 1, 0, 1,
     IN(ID_PROP, "\"context_id\""), STATE_OUT, get_state, a_id},
    {"set_state", "Replace the state",
     "Replace a context's whole JSON state with the object given; returns the new state.", 0, 1, 1,
     IN(ID_PROP ",\"state\":{\"type\":\"object\"}", "\"context_id\",\"state\""), STATE_OUT,
     set_state, a_state},
    {"patch_state", "Merge into the state",
     "Merge the object given into a context's JSON state: its keys are set, a null value "
     "deletes that key; returns the new state.",
     0, 1, 1, IN(ID_PROP ",\"state\":{\"type\":\"object\"}", "\"context_id\",\"state\""), STATE_OUT,
     patch_state, a_state},
    {"list_contexts", "List contexts",
     "List contexts, most recently active first, limit (default 20) at a time; pass "
     "next_cursor as cursor for the next page.",
     1, 0, 1,
     IN("\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},\"cursor\":" STR, ""),
     OBJ("\"contexts\":{\"type\":\"array\",\"items\":" OBJ(
             "\"id\":" STR ",\"created_at\":" STR ",\"last_updated\":" STR
             ",\"message_count\":" INT,
             "\"id\",\"created_at\",\"last_updated\",\"message_count\"") "},\"next_"
                                                                         "cursor\":" STR_OR_NULL,
         "\"contexts\",\"next_cursor\""),
     list_contexts, a_list},
    {"delete_context", "Delete a context",
     "Delete a context: its messages, state and settings are gone for good.", 0, 1, 1,
     IN(ID_PROP, "\"context_id\""),
     OBJ("\"context_id\":" STR ",\"deleted\":{\"type\":\"boolean\"}", "\"context_id\",\"deleted\""),
     delete_context, a_id},
    {"recall", "Recall the window",
     "The part of a context a model would see now: the system prompt, the summary of older "
     "turns (summarize contexts) and the newest whole turns that fit max_tokens (default: the "
     "context's max_context_tokens).",
     1, 0, 1, IN(ID_PROP ",\"max_tokens\":{\"type\":\"integer\",\"minimum\":64}", "\"context_id\""),
     OBJ("\"context_id\":" STR ",\"strategy\":" STR ",\"budget\":" INT ",\"tokens\":" INT
         ",\"system\":" STR_OR_NULL ",\"summary\":" STR_OR_NULL ",\"messages\":" MESSAGES
         ",\"omitted_messages\":" INT,
         "\"context_id\",\"strategy\",\"budget\",\"tokens\",\"system\",\"summary\",\"messages\","
         "\"omitted_messages\""),
     recall, a_recall},
};

#define N_TOOLS (sizeof(tools) / sizeof(tools[0]))

static json_object *annotations(const tool_def *d) {
    json_object *a = json_object_new_object();
    json_object_object_add(a, "title", json_object_new_string(d->title));
    json_object_object_add(a, "readOnlyHint", json_object_new_boolean(d->read_only));
    if (!d->read_only) {
        json_object_object_add(a, "destructiveHint", json_object_new_boolean(d->destructive));
        json_object_object_add(a, "idempotentHint", json_object_new_boolean(d->idempotent));
    }
    json_object_object_add(a, "openWorldHint", json_object_new_boolean(0));
    return a;
}

int mcp_tools_list(json_object **result, mcp_error *err) {
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < N_TOOLS; i++) {
        const tool_def *d = &tools[i];
        json_object *t = json_object_new_object();
        json_object *in = mcp_json_parse(d->input, strlen(d->input)),
                    *out = mcp_json_parse(d->output, strlen(d->output));
        if (!in || !out) { /* a bug in the table above: the unit tests parse every schema */
            json_object_put(in);
            json_object_put(out);
            json_object_put(t);
            json_object_put(arr);
            return mcp_error_set(err, MCP_INTERNAL_ERROR, "the schema of tool %s is broken",
                                 d->name);
        }
        json_object_object_add(t, "name", json_object_new_string(d->name));
        json_object_object_add(t, "title", json_object_new_string(d->title));
        json_object_object_add(t, "description", json_object_new_string(d->description));
        json_object_object_add(t, "inputSchema", in);
        json_object_object_add(t, "outputSchema", out);
        json_object_object_add(t, "annotations", annotations(d));
        json_object_array_add(arr, t);
    }
    *result = json_object_new_object();
    json_object_object_add(*result, "tools", arr);
    return CTXD_OK;
}

/* A tool's answer: its structured result and the same as text, or the
 * failure as text with isError. */
static json_object *tool_result(tool_call *t, int failed) {
    json_object *r = json_object_new_object(), *content = json_object_new_array(),
                *text = json_object_new_object();
    json_object_object_add(text, "type", json_object_new_string("text"));
    json_object_object_add(
        text, "text",
        json_object_new_string(
            failed ? t->why
                   : json_object_to_json_string_ext(t->out, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE)));
    json_object_array_add(content, text);
    json_object_object_add(r, "content", content);
    if (!failed) {
        json_object_object_add(r, "structuredContent", t->out);
        t->out = NULL;
    }
    json_object_object_add(r, "isError", json_object_new_boolean(failed));
    return r;
}

int mcp_tools_call(ctxd_worker *w, const mcp_caller *c, json_object *params, json_object **result,
                   mcp_error *err) {
    json_object *name = NULL, *args = NULL;
    *result = NULL;
    if (params) json_object_object_get_ex(params, "name", &name);
    if (!json_object_is_type(name, json_type_string))
        return mcp_error_set(err, MCP_INVALID_PARAMS, "tools/call needs params.name, a string");
    const tool_def *d = NULL;
    for (size_t i = 0; i < N_TOOLS && !d; i++)
        if (!strcmp(tools[i].name, json_object_get_string(name))) d = &tools[i];
    if (!d)
        return mcp_error_set(err, MCP_INVALID_PARAMS, "Unknown tool: %s (tools/list names them)",
                             json_object_get_string(name));
    json_object_object_get_ex(params, "arguments", &args);
    json_object *empty = args ? NULL : json_object_new_object();
    tool_call t = {w, c, args ? args : empty, NULL, "", err, 0};
    int failed;
    if (!json_object_is_type(t.args, json_type_object))
        failed = fail(&t, "The arguments of %s must be a JSON object", d->name);
    else if (!d->read_only && !(c->who->scopes & AUTH_SCOPE_WRITE))
        failed = fail(&t,
                      "This API key may only read; %s changes a context and needs the write "
                      "scope",
                      d->name);
    else
        failed = arg_only(&t, d->name, d->args) || d->fn(&t);
    if (failed) {
        json_object_put(t.out);
        t.out = NULL;
    }
    json_object_put(empty);
    if (t.infra) return CTXD_ERR;
    *result = tool_result(&t, failed);
    return CTXD_OK;
}
