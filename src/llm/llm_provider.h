/* llm_provider.h: private to src/llm: each provider's entry point and how it reports an error. */
#ifndef CTXD_LLM_PROVIDER_H
#define CTXD_LLM_PROVIDER_H

#include "ctxd/llm.h"

typedef struct llm_http llm_http;

/* Record a failure on resp: err, the upstream HTTP status (0 when none) and
 * a printf-style sentence, cut to fit resp->errstr. Never fails; resp->text
 * is left alone. */
void llm_response_set_error(llm_response *resp, llm_err err, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The providers, one file each. Each has llm_complete's contract: returns
 * CTXD_OK with resp->text set, or CTXD_ERR with resp->err and resp->errstr;
 * resp's contents are the caller's to free with llm_response_free either way.
 * h (one per client, borrowed) carries the HTTP calls; cfg and req are
 * borrowed. */

/* The offline echo model; fails only when out of memory, on an empty
 * history, or when req's on_delta or on_tick abort it. */
int llm_echo_complete(const llm_request *req, llm_response *resp);
/* The Anthropic Messages API; needs cfg->anthropic_key. */
int llm_anthropic_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                           llm_response *resp);
/* OpenAI-compatible chat completions; cfg->openai_key is optional. */
int llm_openai_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                        llm_response *resp);

#endif
