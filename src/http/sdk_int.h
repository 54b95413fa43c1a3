/* sdk_int.h: what the SDK routes share: a provider's request in the stored shape, and its answers. */
#ifndef CTXD_SDK_INT_H
#define CTXD_SDK_INT_H

#include <stddef.h>
#include <stdint.h>

#include "http_int.h"

/* One message of a request, in the stored shape: text, or the JSON text of
 * content blocks (Anthropic's), checked as POST .../messages checks them. */
typedef struct sdk_message {
    const char *role; /* "user" / "assistant" (static) */
    http_content c;   /* owned: free with http_content_free */
    json_object *src; /* what c may borrow from (owned) */
} sdk_message;

/* A provider's request, read into the stored shape. Every pointer owned;
 * free with sdk_call_free. */
typedef struct sdk_call {
    sdk_message *msgs; /* as the request lists them */
    size_t n;
    char *system;      /* NULL: none given */
    char *model;       /* NULL: none given */
    int max_tokens;    /* 0: none given */
    char *tools;       /* Anthropic's shape, NULL: none given */
    char *tool_choice; /* likewise */
    char *extra;       /* the other fields, a JSON object's text, or NULL */
    int stream;
    int include_usage; /* OpenAI's stream_options.include_usage */
} sdk_call;

void sdk_call_free(sdk_call *c);

/* A streamed answer as it goes out. */
typedef struct sdk_stream {
    const http_req *req;
    const char *const *headers; /* extra answer headers (ctxd-context-id) */
    const sdk_call *call;
    char id[40];     /* the reply's id (turn_message_id) */
    char model[128]; /* what the answer says it is */
    int64_t created; /* seconds */
    int started;     /* the head and the first event went out */
    int client_gone; /* the turn still completes and is stored */
    int text_open;   /* a text block is open (Anthropic) */
    int index;       /* the next block's index (Anthropic), tool call's (OpenAI) */
    int sent;        /* some of the reply went out */
} sdk_stream;

/* Write one SSE event (event may be NULL: data only); marks the client gone
 * when it cannot be written. */
void sdk_stream_event(sdk_stream *s, const char *event, const char *data, size_t len);

/* What a provider's API is to the SDK routes. Each parse answers a bad
 * request itself (400 in the provider's shape) and leaves the status in
 * *status. */
typedef struct sdk_dialect {
    http_api api;
    int (*parse)(const http_req *req, json_object *body, sdk_call *out, int *status);
    /* The whole answer to a call that was not streamed. */
    void (*render)(buf *b, const sdk_stream *s, const turn_reply *r);
    /* Streaming: the head is out; the opening events. */
    void (*open)(sdk_stream *s);
    int (*delta)(void *s, const char *text, size_t len);
    int (*block)(void *s, const char *json, size_t len);
    /* The closing events of a reply (r) or an error event (e). */
    void (*close)(sdk_stream *s, const turn_reply *r, const ctxd_error *e);
} sdk_dialect;

extern const sdk_dialect sdk_anthropic;
extern const sdk_dialect sdk_openai;

/* The fields both APIs share: model, the most tokens (under max_key),
 * stream; and the fields not in own (NULL-terminated) as out->extra. */
int sdk_common_fields(const http_req *req, json_object *body, const char *max_key,
                      const char *const *own, sdk_call *out, int *status);

/* The request's "messages": an array of 1 to SDK_MAX_MESSAGES (*arr
 * borrowed from body, *n its length). */
#define SDK_MAX_MESSAGES 1000
int sdk_messages_or_respond(const http_req *req, json_object *body, json_object **arr, size_t *n,
                            int *status);

/* The reply's blocks (parsed; caller puts): its content_json, else one
 * text block of its text. NULL when out of memory. */
json_object *sdk_reply_blocks(const turn_reply *r);

/* A stop reason in Anthropic's words (end_turn, max_tokens, tool_use,
 * stop_sequence...) from either provider's, and in OpenAI's (stop, length,
 * tool_calls, content_filter). */
const char *sdk_stop_anthropic(const char *stop_reason);
const char *sdk_stop_openai(const char *stop_reason);

#endif
