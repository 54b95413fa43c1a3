/* Model providers behind one interface: echo (offline), anthropic, openai. */
#ifndef CTXD_LLM_H
#define CTXD_LLM_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/common.h"
#include "ctxd/config.h"

typedef struct llm_message {
    const char *role; /* "user" or "assistant" */
    const char *content;
    size_t content_len;
    int content_json; /* content is the JSON text of an array of content blocks
                         (Anthropic's shape); each provider translates them */
} llm_message;

/* Called for each piece of streamed reply text, in order. Return CTXD_OK to
 * go on, CTXD_ERR to abort the call (the response then has LLM_ERR_ABORTED). */
typedef int (*llm_delta_fn)(void *arg, const char *text, size_t len);

/* Called, when streaming, with each finished block of the reply that is not
 * text (thinking, redacted_thinking, tool_use: the JSON text of the block
 * as stored), in the reply's order among the text deltas. Same return rule
 * as llm_delta_fn. */
typedef int (*llm_block_fn)(void *arg, const char *block_json, size_t len);

/* Called now and then while a call is in flight (at least every second or so,
 * and during retry waits). Return CTXD_ERR to abort the call. The turn uses it
 * to keep its Redis lock alive. */
typedef int (*llm_tick_fn)(void *arg);

typedef struct llm_request {
    const char *context_id;
    const char *system;          /* system prompt or NULL */
    const char *model;           /* NULL: the configured default */
    int max_tokens;              /* <= 0: the configured default */
    const llm_message *messages; /* history, the new user message last */
    size_t n_messages;
    llm_delta_fn on_delta; /* non-NULL: stream from the upstream */
    llm_block_fn on_block; /* may be NULL; gets on_delta_arg */
    void *on_delta_arg;
    int summarize;       /* a summary fold, not a conversation turn (echo tells them apart) */
    llm_tick_fn on_tick; /* may be NULL */
    void *on_tick_arg;
    /* Tools the model may call (JSON text of an array in Anthropic's shape:
     * name, description, input_schema) and how (tool_choice: {"type":
     * "auto"|"any"|"tool"|"none"[, "name"]}); NULL: none. */
    const char *tools_json;
    const char *tool_choice_json;
    /* Anthropic with CTXD_PROMPT_CACHE: cache_control breakpoints on the
     * tools, the system prompt and the last message before the new one. */
    int cache_prefix;
    /* Further fields for the upstream's body (a JSON object's text, or
     * NULL), as a client of one provider's API wrote them (extra_openai 1:
     * OpenAI's Chat Completions, 0: Anthropic's Messages): temperature,
     * stop_sequences, metadata, thinking... Sent as given to that provider;
     * the other gets the ones with a counterpart (llm_json_add_extra). */
    const char *extra_json;
    int extra_openai;
    /* Anthropic's beta features the client asked for (the anthropic-beta
     * header's value, sent on as given), or NULL. */
    const char *anthropic_beta;
} llm_request;

typedef enum {
    LLM_OK = 0,
    LLM_ERR_AUTH,        /* upstream 401/403: key refused */
    LLM_ERR_RATE,        /* upstream 429 after retries */
    LLM_ERR_OVERLOADED,  /* upstream 503/529 after retries */
    LLM_ERR_UPSTREAM,    /* other upstream 5xx or a malformed answer */
    LLM_ERR_BAD_REQUEST, /* upstream 400/404/413/422: our request refused */
    LLM_ERR_TIMEOUT,     /* attempt timeout or overall deadline */
    LLM_ERR_CONNECT,     /* could not reach the upstream */
    LLM_ERR_ABORTED,     /* on_delta asked to stop */
    LLM_ERR_CONFIG       /* provider not usable (e.g. no key) */
} llm_err;

typedef struct llm_response {
    char *text; /* reply text, NUL-terminated, owned (llm_response_free) */
    size_t text_len;
    /* The reply's content blocks in Anthropic's shape (JSON text, owned) when
     * it holds more than text (tool_use, thinking); NULL otherwise. */
    char *content_json;
    size_t content_json_len;
    char stop_reason[64];
    char model[128];
    long input_tokens;                /* -1 when the upstream did not say */
    long output_tokens;               /* -1 when the upstream did not say */
    long cache_creation_input_tokens; /* Anthropic prompt caching; -1 when not said */
    long cache_read_input_tokens;
    int retries; /* attempts beyond the first */

    llm_err err;
    int upstream_status;          /* last HTTP status seen, 0 if none */
    long retry_after_ms;          /* upstream's retry-after on final 429/503, or -1 */
    char errstr[CTXD_ERRSTR_LEN]; /* human sentence; never holds a key */
} llm_response;

/* Per-thread client (keeps one curl handle alive for keep-alive). */
typedef struct llm_client llm_client;

/* Set up process-wide state (curl_global_init). Call once from main, before
 * any thread runs. Returns CTXD_OK, or CTXD_ERR when curl could not start
 * (then no HTTP provider works). Undo with llm_global_cleanup at exit. */
int llm_global_init(void);
/* Release what llm_global_init set up; call once, after every client is freed. */
void llm_global_cleanup(void);

/* Create a client for cfg's provider. cfg is borrowed and must outlive the
 * client. Returns NULL on out of memory. The caller frees the client with
 * llm_client_free; use it from one thread at a time. */
llm_client *llm_client_new(const ctxd_config *cfg);
/* Free c and its connection; accepts NULL. */
void llm_client_free(llm_client *c);

/* Run one completion. req and everything it points to are borrowed for the
 * call. Fills resp (set it up first with llm_response_init). Returns
 * CTXD_OK with resp->text set, or CTXD_ERR with resp->err, resp->errstr
 * and, when known, resp->upstream_status. The caller frees resp's contents
 * with llm_response_free either way. */
int llm_complete(llm_client *c, const llm_request *req, llm_response *resp);

/* Set resp up empty (token counts and retry_after_ms -1). Never fails and
 * allocates nothing. */
void llm_response_init(llm_response *resp);
/* Free resp->text (resp itself is the caller's) and leave it NULL; accepts
 * NULL. */
void llm_response_free(llm_response *resp);

/* The whole prompt's tokens: input plus what prompt caching wrote to and
 * read from the cache (Anthropic counts those apart from input_tokens);
 * -1 when input is (-1: the upstream did not say); cache counts below 0
 * count as 0. */
int64_t llm_prompt_tokens(int64_t input, int64_t cache_creation, int64_t cache_read);

/* llm_prompt_tokens of resp's usage. */
long llm_response_prompt_tokens(const llm_response *resp);

/* Simulated latency of the echo model (CTXD_ECHO_DELAY_MS), spread over its
 * streamed pieces. Set once at start, before any thread runs. Never fails. */
void llm_echo_set_delay(int ms);

#endif
