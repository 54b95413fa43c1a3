/* turn: one conversation turn (lock, history, model call, atomic store). */
#ifndef CTXD_TURN_H
#define CTXD_TURN_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/llm.h"
#include "ctxd/worker.h"

typedef struct turn_request {
    const char *context_id; /* validated by the caller */
    const char *message;    /* user text, valid UTF-8, borrowed */
    size_t message_len;
    const char *idem_key; /* Idempotency-Key or NULL */
    uint64_t fingerprint; /* of the request, to spot a reused key */
    /* Streaming: on_start runs once the turn is admitted (context found, lock
     * held), before the model is called; on_delta gets each piece. */
    void (*on_start)(void *arg);
    llm_delta_fn on_delta;
    void *stream_arg;
} turn_request;

/* Messages appended without a model call (POST .../messages). */
typedef struct turn_append_request {
    const char *context_id;
    const char *const *roles; /* "user" / "assistant" */
    const char *const *contents;
    const size_t *content_lens;
    size_t n;
    const char *idem_key;
    uint64_t fingerprint;
} turn_append_request;

typedef struct turn_result {
    int status;    /* HTTP status to answer */
    char code[48]; /* stable error code when status >= 400 */
    char errstr[CTXD_ERRSTR_LEN];
    int retry_after_s; /* > 0: answer a Retry-After header */
    char *body;        /* JSON answer when status < 400, owned */
    int replayed;      /* answered from the idempotency record */
    int started;       /* on_start ran */
} turn_result;

/* Run a turn. Always fills res (free with turn_result_free); returns CTXD_OK
 * when res->status < 400. Nothing is stored unless the model answered and
 * the user message and reply were appended together. */
int turn_run(ctxd_worker *w, const turn_request *req, turn_result *res);

/* Append messages under the same lock and idempotency rules as a turn. */
int turn_append(ctxd_worker *w, const turn_append_request *req, turn_result *res);

void turn_result_free(turn_result *res);

#endif
