/* llm_response.c: the llm_response a model call fills: set up, error, free. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_provider.h"

void llm_response_init(llm_response *resp) {
    memset(resp, 0, sizeof(*resp));
    resp->input_tokens = -1;
    resp->output_tokens = -1;
    resp->cache_creation_input_tokens = -1;
    resp->cache_read_input_tokens = -1;
    resp->retry_after_ms = -1;
}

void llm_response_free(llm_response *resp) {
    if (!resp) return;
    free(resp->text);
    free(resp->content_json);
    resp->text = NULL;
    resp->content_json = NULL;
    resp->text_len = resp->content_json_len = 0;
}

int64_t llm_prompt_tokens(int64_t input, int64_t cache_creation, int64_t cache_read) {
    if (input < 0) return -1;
    return input + (cache_creation > 0 ? cache_creation : 0) + (cache_read > 0 ? cache_read : 0);
}

long llm_response_prompt_tokens(const llm_response *resp) {
    return (long)llm_prompt_tokens(resp->input_tokens, resp->cache_creation_input_tokens,
                                   resp->cache_read_input_tokens);
}

void llm_response_set_error(llm_response *resp, llm_err err, int status, const char *fmt, ...) {
    va_list ap;
    resp->err = err;
    resp->upstream_status = status;
    va_start(ap, fmt);
    vsnprintf(resp->errstr, sizeof(resp->errstr), fmt, ap);
    va_end(ap);
}
