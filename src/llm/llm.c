/* llm.c: the provider-neutral model interface and its dispatch. */
#include "ctxd/llm.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"

#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "llm_http.h"
#include "llm_provider.h"

struct llm_client {
    const ctxd_config *cfg; /* borrowed */
    llm_http *http;         /* one curl handle, kept for keep-alive */
};

int llm_global_init(void) {
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? CTXD_OK : CTXD_ERR;
}

void llm_global_cleanup(void) { curl_global_cleanup(); }

llm_client *llm_client_new(const ctxd_config *cfg) {
    llm_client *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->cfg = cfg;
    if (cfg->provider != CTXD_PROVIDER_ECHO && !(c->http = llm_http_new())) {
        free(c);
        return NULL;
    }
    return c;
}

void llm_client_free(llm_client *c) {
    if (!c) return;
    llm_http_free(c->http);
    free(c);
}

/* Dispatch to the configured provider. */
static int complete(llm_client *c, const llm_request *req, llm_response *resp) {
    const ctxd_config *cfg = c->cfg;
    int rc;
    if (cfg->provider != CTXD_PROVIDER_ECHO && req->n_messages == 0) {
        llm_response_set_error(resp, LLM_ERR_BAD_REQUEST, 0, "no messages to answer");
        return CTXD_ERR;
    }
    switch (cfg->provider) {
    case CTXD_PROVIDER_ECHO: return llm_echo_complete(req, resp);
    case CTXD_PROVIDER_ANTHROPIC: rc = llm_anthropic_complete(c->http, cfg, req, resp); break;
    case CTXD_PROVIDER_OPENAI: rc = llm_openai_complete(c->http, cfg, req, resp); break;
    default:
        llm_response_set_error(resp, LLM_ERR_CONFIG, 0,
                               "provider %s is not available in this build",
                               config_provider_name(cfg->provider));
        return CTXD_ERR;
    }
    if (rc == CTXD_OK && !resp->model[0])
        snprintf(resp->model, sizeof(resp->model), "%s",
                 req->model && *req->model ? req->model : cfg->model);
    return rc;
}

int llm_complete(llm_client *c, const llm_request *req, llm_response *resp) {
    int64_t t0 = util_mono_us();
    int rc = complete(c, req, resp);
    int status = resp->upstream_status                                     ? resp->upstream_status
                 : rc == CTXD_OK && c->cfg->provider != CTXD_PROVIDER_ECHO ? 200
                                                                           : 0;
    metrics_upstream_call(c->cfg->provider, status, rc == CTXD_OK, resp->retries,
                          util_mono_us() - t0);
    if (rc == CTXD_OK)
        metrics_tokens(c->cfg->provider, llm_response_prompt_tokens(resp), resp->output_tokens);
    return rc;
}
