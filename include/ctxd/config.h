/* ctxd configuration: environment variables and --flags, validated at start. */
#ifndef CTXD_CONFIG_H
#define CTXD_CONFIG_H

#include <stddef.h>

#include "ctxd/common.h"

typedef enum {
    CTXD_PROVIDER_ECHO = 0,
    CTXD_PROVIDER_ANTHROPIC,
    CTXD_PROVIDER_OPENAI
} ctxd_provider;

/* Sentinels one redis+sentinel:// URL may name, and seed nodes of a Redis
 * Cluster one redis:// URL may name. */
#define CTXD_SENTINELS_MAX 8
#define CTXD_SEEDS_MAX 8

typedef struct ctxd_hostport {
    char host[256];
    int port;
} ctxd_hostport;

typedef struct ctxd_config {
    /* HTTP */
    char listen_host[64];
    int listen_port;
    int threads;
    size_t max_body_bytes;
    int header_timeout_ms;    /* a request's line and headers, from their first byte */
    int body_timeout_ms;      /* its body, from the end of the head */
    int keepalive_timeout_ms; /* an idle connection between requests */
    int write_timeout_ms;     /* a client taking an answer */
    int max_connections;
    char allowed_hosts[1024]; /* Host names served besides the local ones; "*": any */
    char cors_origins[1024];  /* browser origins allowed to call, comma-separated */
    char tls_cert[512];       /* PEM files: both set, ctxd speaks HTTPS only */
    char tls_key[512];

    /* Who may call: API keys (auth 1) or everyone as tenant "default" (0). */
    int auth;
    int auth_explicit;             /* CTXD_AUTH was set (not derived from the address) */
    char *admin_token;             /* CTXD_ADMIN_TOKEN, owned, never logged; NULL: none */
    long rate_requests_per_minute; /* defaults for keys without their own; 0: none */
    long rate_tokens_per_minute;

    /* Redis, parsed from redis_url */
    char redis_url[512];
    char redis_host[256]; /* the first of redis_seeds */
    int redis_port;
    /* redis://h1:p1,h2:p2: the nodes asked first for a Redis Cluster's slot
     * map (one node is fine: ctxd finds out whether it is a cluster). */
    ctxd_hostport redis_seeds[CTXD_SEEDS_MAX];
    int redis_n_seeds;
    char redis_socket[256]; /* non-empty for redis+unix:// or unix:// */
    char redis_user[128];
    char redis_password[256];
    int redis_db;
    int redis_timeout_ms;
    /* redis+sentinel://: the master's name (non-empty in this mode; then
     * redis_host/redis_port are unused and the Sentinels say where the
     * master is), the Sentinels in the order they are asked, and their own
     * password (user/password above are the master's). */
    char redis_sentinel_master[128];
    ctxd_hostport redis_sentinels[CTXD_SENTINELS_MAX];
    int redis_n_sentinels;
    char redis_sentinel_password[256];
    /* Each write a client is told about waits (Redis WAIT) until this many
     * replicas hold it, for at most redis_wait_ms; 0: no waiting. */
    int redis_wait_replicas;
    int redis_wait_ms;

    /* Limits */
    size_t max_message_bytes;
    long max_messages;
    size_t max_state_bytes;

    /* Windowing and expiry defaults for new contexts */
    char strategy[16]; /* all, window or summarize */
    long context_tokens;
    long default_ttl_s;
    long summary_batch;      /* most messages folded into a summary per call */
    char summary_model[128]; /* empty: the context's model */

    /* Turn coordination */
    int lock_wait_ms;
    int lock_ttl_ms;
    int idempotency_ttl_s;

    /* Logging: 0 debug, 1 info, 2 warn, 3 error; format json, logfmt, text */
    int log_level;
    int log_format;
    char log_file[512]; /* empty: stderr */
    int shutdown_grace_ms;

    /* Model */
    ctxd_provider provider;
    int prompt_cache; /* CTXD_PROMPT_CACHE: cache_control breakpoints (Anthropic) */
    char model[128];
    int max_tokens;
    char anthropic_url[512];
    char openai_url[512];
    /* API keys: owned by the config, never logged, never stored in Redis. */
    char *anthropic_key;
    char *openai_key;
    int upstream_connect_timeout_ms;
    int upstream_timeout_ms;  /* one attempt */
    int upstream_deadline_ms; /* all attempts together, backoff included */
    int upstream_max_retries;
    int upstream_retry_cap_ms; /* cap on one wait, retry-after included */
    int echo_delay_ms;         /* simulated latency of the echo model */
} ctxd_config;

/* Fill cfg with defaults, then the environment, then argv (--flags win).
 * Returns CTXD_OK; CTXD_ERR with a one-line message in err (naming the
 * setting, the value and what is allowed). Returns CTXD_OK with *exit_now set
 * for --help and --version after printing them. Free with config_free. */
int config_load(ctxd_config *cfg, int argc, char **argv, char *err, size_t errlen, int *exit_now);

/* Parse "HOST:PORT" (an IPv4 address or localhost) into host and port.
 * CTXD_OK, or CTXD_ERR with a sentence in err. */
int config_parse_listen(const char *value, char *host, size_t hostlen, int *port, char *err,
                        size_t errlen);

/* Parse a redis://, unix:// or redis+sentinel:// URL into cfg's redis_*
 * fields. CTXD_OK, or CTXD_ERR with a sentence in err (never the
 * password). */
int config_parse_redis_url(ctxd_config *cfg, const char *url, char *err, size_t errlen);

/* The Redis address for messages: host:port, the socket path, or "sentinel
 * master NAME via HOST:PORT,..." (never a password). */
void config_redis_addr(const ctxd_config *cfg, char *out, size_t outlen);

/* Name of a provider ("echo", "anthropic", "openai"). */
const char *config_provider_name(ctxd_provider p);

/* Release what cfg owns (API keys). Accepts NULL. */
void config_free(ctxd_config *cfg);

#endif
