/* turn: one conversation turn (lock, history, model call, atomic store), and appends. */
#ifndef CTXD_TURN_H
#define CTXD_TURN_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/error.h"
#include "ctxd/llm.h"
#include "ctxd/worker.h"

/* A new message a client sends before a turn's own (routes_sdk.c). */
typedef struct turn_message {
    const char *role; /* "user" / "assistant" */
    const char *content;
    size_t len;
    int json; /* content is the JSON text of content blocks */
} turn_message;

typedef struct turn_request {
    const char *context_id; /* validated by the caller */
    const char *message;    /* user text, valid UTF-8, or with message_json the JSON
                            text of content blocks; borrowed */
    size_t message_len;
    const char *idem_key; /* Idempotency-Key or NULL */
    uint64_t fingerprint; /* of the request, to spot a reused key */
    /* Streaming: on_start runs once the turn is admitted (context found, lock
     * held), before the model is called, with the model it asks for;
     * on_delta gets each piece of text, on_block (may be NULL) each other
     * block, in order. */
    void (*on_start)(void *arg, const char *model);
    llm_delta_fn on_delta;
    llm_block_fn on_block;
    void *stream_arg;
    int message_json;             /* message is content blocks */
    const char *tools_json;       /* tools the model may call (Anthropic's shape), or NULL */
    const char *tool_choice_json; /* or NULL */
    const char *metadata;         /* the client's metadata for the message (JSON text), or NULL */
    size_t metadata_len;
    /* What the SDK routes add (all optional, borrowed): */
    const turn_message *lead; /* new messages before message, stored with it in order */
    size_t n_lead;
    const char *system;     /* this call's system prompt instead of the context's */
    const char *model;      /* the model, unless the context names one */
    int max_tokens;         /* <= 0: CTXD_MAX_TOKENS */
    const char *extra_json; /* further upstream fields, see llm_request */
    int extra_openai;
    const char *reply_id;       /* the id to store the reply under (turn_message_id), or NULL */
    const char *anthropic_beta; /* see llm_request */
} turn_request;

/* Messages appended without a model call (POST .../messages). */
typedef struct turn_append_request {
    const char *context_id;
    const char *const *roles; /* "user" / "assistant" */
    const char *const *contents;
    const size_t *content_lens;
    size_t n;
    const int *content_json;      /* per message: contents[i] is blocks; NULL: none */
    const char *const *metadatas; /* per message: JSON text or NULL; NULL: none */
    const size_t *metadata_lens;
    const char *idem_key;
    uint64_t fingerprint;
    const char *if_match; /* NULL, or the context versions the client accepts */
} turn_append_request;

/* What the model answered in a turn. */
typedef struct turn_reply {
    char id[40]; /* the stored reply's id; "" in a replay */
    char *text;  /* owned, NUL-terminated */
    size_t text_len;
    char *content_json; /* owned: the reply's blocks when not only text (tool_use, thinking) */
    size_t content_json_len;
    char stop_reason[64]; /* "" when not known (a replay of 0.4's record) */
    char model[128];
    int64_t input_tokens;                /* -1 when the upstream did not say */
    int64_t output_tokens;               /* -1 when the upstream did not say */
    int64_t cache_creation_input_tokens; /* prompt caching (Anthropic); -1: not said */
    int64_t cache_read_input_tokens;
} turn_reply;

typedef struct turn_result {
    ctxd_error error; /* error.err == CTXD_E_NONE on success */
    int replayed;     /* answered from the idempotency record */
    int started;      /* on_start ran */
    turn_reply reply; /* turn_run */
    size_t appended;  /* turn_append: how many, and the first one's seq */
    int64_t first_seq;
} turn_result;

/* Run a turn. Always fills res (free with turn_result_free); returns CTXD_OK
 * with res->reply, or CTXD_ERR with res->error. Nothing is stored unless the
 * model answered and the user message and reply were appended together. */
int turn_run(ctxd_worker *w, const turn_request *req, turn_result *res);

/* Append messages under the same lock and idempotency rules as a turn.
 * CTXD_OK with res->appended and res->first_seq, or CTXD_ERR with
 * res->error. */
int turn_append(ctxd_worker *w, const turn_append_request *req, turn_result *res);

void turn_result_free(turn_result *res); /* frees res->reply.text; accepts NULL */

/* A new message id into out: "msg_" and 24 letters and digits (142 random
 * bits; the shape of Anthropic's ids, and 8 bytes shorter per stored
 * message than 32 hex digits). CTXD_ERR when no randomness. */
#define TURN_MESSAGE_ID_LEN 28
int turn_message_id(char out[40]);

/* The prompt a reply read, whole (cached parts included; Anthropic's
 * input_tokens leaves them out); unknown counts as 0. */
int64_t turn_reply_prompt_tokens(const turn_reply *r);

/* The tokens a reply used, for a key's token budget: the whole prompt
 * plus the output; unknown counts as 0. */
int64_t turn_reply_tokens(const turn_reply *r);

#endif
