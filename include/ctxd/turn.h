/* turn: one conversation turn (lock, history, model call, atomic store), and appends. */
#ifndef CTXD_TURN_H
#define CTXD_TURN_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/error.h"
#include "ctxd/llm.h"
#include "ctxd/worker.h"

typedef struct turn_request {
    const char *context_id; /* validated by the caller */
    const char *message;    /* user text, valid UTF-8, or with message_json the JSON
                            text of content blocks; borrowed */
    size_t message_len;
    const char *idem_key; /* Idempotency-Key or NULL */
    uint64_t fingerprint; /* of the request, to spot a reused key */
    /* Streaming: on_start runs once the turn is admitted (context found, lock
     * held), before the model is called; on_delta gets each piece. */
    void (*on_start)(void *arg);
    llm_delta_fn on_delta;
    void *stream_arg;
    int message_json;             /* message is content blocks */
    const char *tools_json;       /* tools the model may call (Anthropic's shape), or NULL */
    const char *tool_choice_json; /* or NULL */
    const char *metadata;         /* the client's metadata for the message (JSON text), or NULL */
    size_t metadata_len;
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
    char *text; /* owned, NUL-terminated */
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

#endif
