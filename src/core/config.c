/* config.c: settings from defaults, the environment and --flags, validated. */
#include "ctxd/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/version.h"

typedef enum { OPT_STR, OPT_INT, OPT_SIZE } opt_type;

typedef struct option_def {
    const char *env;
    const char *flag;
    opt_type type;
    const char *def; /* default as text; NULL: computed */
    long long min, max;
    const char *help;
    size_t off, width; /* a number stored in ctxd_config; width 0: applied by hand */
} option_def;

#define FIELD(f) offsetof(ctxd_config, f), sizeof(((ctxd_config *)0)->f)
#define BY_HAND 0, 0

/* One row per setting; config_apply maps each to its field. */
static const option_def options[] = {
    {"CTXD_LISTEN", "--listen", OPT_STR, "127.0.0.1:61909", 0, 0,
     "HOST:PORT to listen on (IPv4 address)", BY_HAND},
    {"CTXD_REDIS_URL", "--redis-url", OPT_STR, "redis://127.0.0.1:6379/0", 0, 0,
     "redis://[[user]:password@]host[:port][,host[:port]...][/db] (several: Redis Cluster seeds), "
     "unix:///path.sock[?db=N][&password=P] or "
     "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]"
     "[?sentinel_password=P]",
     BY_HAND},
    {"CTXD_REDIS_TIMEOUT_MS", "--redis-timeout-ms", OPT_INT, "2000", 50, 60000,
     "connect and command timeout for Redis", FIELD(redis_timeout_ms)},
    {"CTXD_REDIS_WAIT_REPLICAS", "--redis-wait-replicas", OPT_INT, "0", 0, 100,
     "replicas that must hold a write (Redis WAIT) before a client is told it is stored "
     "(0: do not wait)",
     FIELD(redis_wait_replicas)},
    {"CTXD_REDIS_WAIT_MS", "--redis-wait-ms", OPT_INT, "1000", 1, 60000,
     "how long a write waits for CTXD_REDIS_WAIT_REPLICAS replicas before it answers 503",
     FIELD(redis_wait_ms)},
    {"CTXD_THREADS", "--threads", OPT_INT, "64", 1, 8192,
     "HTTP worker threads (each holds one Redis connection)", FIELD(threads)},
    {"CTXD_HEADER_TIMEOUT_MS", "--header-timeout-ms", OPT_INT, "10000", 100, 600000,
     "a request line and its headers must arrive within this (else 408)", FIELD(header_timeout_ms)},
    {"CTXD_BODY_TIMEOUT_MS", "--body-timeout-ms", OPT_INT, "20000", 100, 3600000,
     "a request body must arrive within this after its headers (else 408)", FIELD(body_timeout_ms)},
    {"CTXD_KEEPALIVE_TIMEOUT_MS", "--keepalive-timeout-ms", OPT_INT, "5000", 0, 3600000,
     "an idle connection is closed after this", FIELD(keepalive_timeout_ms)},
    {"CTXD_WRITE_TIMEOUT_MS", "--write-timeout-ms", OPT_INT, "30000", 100, 3600000,
     "a client must take each part of an answer within this", FIELD(write_timeout_ms)},
    {"CTXD_MAX_CONNECTIONS", "--max-connections", OPT_INT, "10000", 16, 1000000,
     "open client connections at most (an idle one holds no thread)", FIELD(max_connections)},
    {"CTXD_ALLOWED_HOSTS", "--allowed-hosts", OPT_STR, "", 0, 0,
     "Host names served besides the listen address, localhost, 127.0.0.1 and [::1] "
     "(comma-separated; * for any)",
     BY_HAND},
    {"CTXD_CORS_ORIGINS", "--cors-origins", OPT_STR, "", 0, 0,
     "browser origins allowed to call ctxd, e.g. https://app.example (comma-separated)", BY_HAND},
    {"CTXD_TLS_CERT", "--tls-cert", OPT_STR, "", 0, 0,
     "PEM certificate (chain): with CTXD_TLS_KEY, ctxd serves HTTPS only", BY_HAND},
    {"CTXD_TLS_KEY", "--tls-key", OPT_STR, "", 0, 0, "PEM private key of CTXD_TLS_CERT", BY_HAND},
    {"CTXD_AUTH", "--auth", OPT_STR, NULL, 0, 0,
     "keys (API keys required) or off (default: off when listening on loopback, else keys)",
     BY_HAND},
    {"CTXD_ADMIN_TOKEN", "--admin-token", OPT_STR, "", 0, 0,
     "a secret that may manage API keys (Authorization: Bearer ...); never logged", BY_HAND},
    {"CTXD_RATE_REQUESTS_PER_MINUTE", "--rate-requests-per-minute", OPT_INT, "0", 0, 100000000,
     "requests a minute for keys that set no limit (0: none)", FIELD(rate_requests_per_minute)},
    {"CTXD_RATE_TOKENS_PER_MINUTE", "--rate-tokens-per-minute", OPT_INT, "0", 0, 1000000000,
     "model tokens a minute for keys that set no limit (0: none)", FIELD(rate_tokens_per_minute)},
    {"CTXD_LOG_LEVEL", "--log-level", OPT_STR, "info", 0, 0, "debug, info, warn or error", BY_HAND},
    {"CTXD_LOG_FORMAT", "--log-format", OPT_STR, "json", 0, 0, "json (JSON lines), logfmt or text",
     BY_HAND},
    {"CTXD_LOG_FILE", "--log-file", OPT_STR, "", 0, 0,
     "append the log to this file instead of stderr (SIGHUP reopens it)", BY_HAND},
    {"CTXD_SHUTDOWN_GRACE_MS", "--shutdown-grace-ms", OPT_INT, "30000", 0, 3600000,
     "on SIGTERM/SIGINT, how long in-flight requests may take to finish", FIELD(shutdown_grace_ms)},
    {"CTXD_PROVIDER", "--provider", OPT_STR, NULL, 0, 0,
     "echo, anthropic or openai (default: anthropic if ANTHROPIC_API_KEY is "
     "set, else openai if OPENAI_API_KEY is set, else echo)",
     BY_HAND},
    {"CTXD_MODEL", "--model", OPT_STR, "", 0, 0,
     "default model (per provider: claude-sonnet-4-5, gpt-4o-mini, echo)", BY_HAND},
    {"CTXD_PROMPT_CACHE", "--prompt-cache", OPT_STR, "on", 0, 0,
     "on or off: Anthropic prompt caching breakpoints on the system prompt, the tools and the "
     "history up to the last turn",
     BY_HAND},
    {"CTXD_MAX_TOKENS", "--max-tokens", OPT_INT, "1024", 1, 1000000,
     "default max_tokens for a reply", FIELD(max_tokens)},
    {"CTXD_MAX_BODY_BYTES", "--max-body-bytes", OPT_SIZE, "33554432", 1024, 1073741824LL,
     "largest request body accepted (413 beyond); 32 MiB, Anthropic's request limit, so images "
     "and PDFs fit (a body takes memory only as it arrives)",
     FIELD(max_body_bytes)},
    {"CTXD_MAX_MESSAGE_BYTES", "--max-message-bytes", OPT_SIZE, "262144", 16, 1073741824LL,
     "largest single message or system prompt (413 beyond)", FIELD(max_message_bytes)},
    {"CTXD_MAX_MESSAGES", "--max-messages", OPT_INT, "10000", 2, 100000000,
     "most messages one context may hold (413 beyond, unless it trims with max_messages)",
     FIELD(max_messages)},
    {"CTXD_MAX_STATE_BYTES", "--max-state-bytes", OPT_SIZE, "65536", 64, 1073741824LL,
     "largest state of one context, keys plus JSON values", FIELD(max_state_bytes)},
    {"CTXD_STRATEGY", "--strategy", OPT_STR, "all", 0, 0,
     "default for new contexts: all, window or summarize", BY_HAND},
    {"CTXD_CONTEXT_TOKENS", "--context-tokens", OPT_INT, "100000", 64, 100000000,
     "default prompt budget (max_context_tokens) of new contexts", FIELD(context_tokens)},
    {"CTXD_DEFAULT_TTL", "--default-ttl", OPT_INT, "0", 0, 10LL * 365 * 86400,
     "default ttl_seconds of new contexts (0: never expire)", FIELD(default_ttl_s)},
    {"CTXD_SUMMARY_MODEL", "--summary-model", OPT_STR, "", 0, 0,
     "model for summary folds (default: the context's model), e.g. a cheaper one", BY_HAND},
    {"CTXD_SUMMARY_BATCH", "--summary-batch", OPT_INT, "200", 2, 100000,
     "most messages folded into a summary by one model call", FIELD(summary_batch)},
    {"CTXD_LOCK_WAIT_MS", "--lock-wait-ms", OPT_INT, "10000", 0, 600000,
     "how long a turn waits for a busy context before 409", FIELD(lock_wait_ms)},
    {"CTXD_LOCK_TTL_MS", "--lock-ttl-ms", OPT_INT, "10000", 1000, 3600000,
     "lifetime of a turn lock, renewed while the model works", FIELD(lock_ttl_ms)},
    {"CTXD_IDEMPOTENCY_TTL", "--idempotency-ttl", OPT_INT, "86400", 1, 30 * 86400,
     "seconds an Idempotency-Key is remembered", FIELD(idempotency_ttl_s)},
    {"CTXD_ANTHROPIC_URL", "--anthropic-url", OPT_STR, "https://api.anthropic.com", 0, 0,
     "base URL of the Anthropic Messages API", BY_HAND},
    {"CTXD_OPENAI_URL", "--openai-url", OPT_STR, "https://api.openai.com/v1", 0, 0,
     "base URL of an OpenAI-compatible API", BY_HAND},
    {"CTXD_UPSTREAM_CONNECT_TIMEOUT_MS", "--upstream-connect-timeout-ms", OPT_INT, "5000", 100,
     600000, "connect timeout to the model API", FIELD(upstream_connect_timeout_ms)},
    {"CTXD_UPSTREAM_TIMEOUT_MS", "--upstream-timeout-ms", OPT_INT, "120000", 100, 3600000,
     "timeout of one model API attempt", FIELD(upstream_timeout_ms)},
    {"CTXD_UPSTREAM_DEADLINE_MS", "--upstream-deadline-ms", OPT_INT, "300000", 100, 3600000,
     "deadline for a model call, all retries included", FIELD(upstream_deadline_ms)},
    {"CTXD_UPSTREAM_MAX_RETRIES", "--upstream-max-retries", OPT_INT, "2", 0, 10,
     "retries after a failed model API attempt", FIELD(upstream_max_retries)},
    {"CTXD_UPSTREAM_RETRY_CAP_MS", "--upstream-retry-cap-ms", OPT_INT, "60000", 0, 600000,
     "longest wait between attempts, retry-after included", FIELD(upstream_retry_cap_ms)},
    {"CTXD_ECHO_DELAY_MS", "--echo-delay-ms", OPT_INT, "0", 0, 600000,
     "simulated latency of the echo model (demos and tests)", FIELD(echo_delay_ms)},
    {"ANTHROPIC_API_KEY_FILE", "--anthropic-api-key-file", OPT_STR, "", 0, 0,
     "file holding the Anthropic key (else ANTHROPIC_API_KEY)", BY_HAND},
    {"OPENAI_API_KEY_FILE", "--openai-api-key-file", OPT_STR, "", 0, 0,
     "file holding the OpenAI key (else OPENAI_API_KEY)", BY_HAND},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

const char *config_provider_name(ctxd_provider p) {
    switch (p) {
    case CTXD_PROVIDER_ANTHROPIC: return "anthropic";
    case CTXD_PROVIDER_OPENAI: return "openai";
    default: return "echo";
    }
}

/* Print the --help text to stdout. */
static void config_usage(void) {
    printf("ctxd %s: conversation contexts for LLM APIs, kept in Redis\n\n", CTXD_VERSION);
    printf("usage: ctxd [--flag VALUE]... [--help] [--version]\n\n");
    printf("Each setting is an environment variable or a flag (flags win):\n\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const option_def *o = &options[i];
        printf("  %-34s %s\n  %-34s %s", o->flag, o->env, "", o->help);
        if (o->def && o->def[0]) printf(" [default %s]", o->def);
        printf("\n");
    }
    printf("\nAPI keys: ANTHROPIC_API_KEY, OPENAI_API_KEY (never logged).\n");
}

/* Read a key file: first line, surrounding whitespace trimmed. */
static char *read_key_file(const char *setting, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s=%s: cannot open: %s", setting, path, strerror(errno));
        return NULL;
    }
    char line[4096];
    if (!fgets(line, sizeof(line), f)) line[0] = '\0';
    fclose(f);
    char *s = line;
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    if (!n) {
        snprintf(err, errlen, "%s=%s: the file holds no key", setting, path);
        return NULL;
    }
    return strdup(s);
}

static int set_size(const option_def *o, const char *value, long long *out, char *err,
                    size_t errlen) {
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value) goto bad;
    if (o->type == OPT_SIZE && *end) {
        if ((*end == 'k' || *end == 'K') && end[1] == '\0')
            v *= 1024;
        else if ((*end == 'm' || *end == 'M') && end[1] == '\0')
            v *= 1048576;
        else
            goto bad;
    } else if (*end) {
        goto bad;
    }
    if (v < o->min || v > o->max) goto bad;
    *out = v;
    return CTXD_OK;
bad:
    snprintf(err, errlen, "%s=%s is not allowed: expected %s %lld..%lld%s", o->env, value,
             o->type == OPT_SIZE ? "a size" : "an integer", o->min, o->max,
             o->type == OPT_SIZE ? " bytes (K/M suffix ok)" : "");
    return CTXD_ERR;
}

/* value must be one of choices (case-insensitive): *index gets which. */
static int set_choice(const char *name, const char *value, const char *const *choices, int *index,
                      char *err, size_t errlen) {
    char list[128] = "";
    for (int i = 0; choices[i]; i++) {
        if (!strcasecmp(value, choices[i])) {
            *index = i;
            return CTXD_OK;
        }
        size_t l = strlen(list);
        snprintf(list + l, sizeof(list) - l, "%s%s", i ? (choices[i + 1] ? ", " : " or ") : "",
                 choices[i]);
    }
    snprintf(err, errlen, "%s=%s is not allowed: use %s", name, value, list);
    return CTXD_ERR;
}

/* Copy value into dst[cap], refusing what does not fit. */
static int set_string(const char *name, const char *value, char *dst, size_t cap, char *err,
                      size_t errlen) {
    if (strlen(value) >= cap) {
        snprintf(err, errlen, "%s is too long (max %zu bytes)", name, cap - 1);
        return CTXD_ERR;
    }
    memcpy(dst, value, strlen(value) + 1);
    return CTXD_OK;
}

/* Apply one setting's text value to cfg. */
static int config_apply(ctxd_config *cfg, const option_def *o, const char *value, char *err,
                        size_t errlen) {
    const char *e = o->env;
    long long n = 0;
    if (o->type != OPT_STR && set_size(o, value, &n, err, errlen)) return CTXD_ERR;

    if (!strcmp(e, "CTXD_LISTEN"))
        return config_parse_listen(value, cfg->listen_host, sizeof(cfg->listen_host),
                                   &cfg->listen_port, err, errlen);
    if (!strcmp(e, "CTXD_REDIS_URL")) return config_parse_redis_url(cfg, value, err, errlen);
    if (!strcmp(e, "CTXD_LOG_LEVEL")) {
        static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
        return set_choice(e, value, levels, &cfg->log_level, err, errlen);
    }
    if (!strcmp(e, "CTXD_LOG_FORMAT")) {
        static const char *const formats[] = {"json", "logfmt", "text", NULL};
        return set_choice(e, value, formats, &cfg->log_format, err, errlen);
    }
    if (!strcmp(e, "CTXD_STRATEGY")) {
        static const char *const strategies[] = {"all", "window", "summarize", NULL};
        int i;
        if (set_choice(e, value, strategies, &i, err, errlen)) return CTXD_ERR;
        return set_string(e, strategies[i], cfg->strategy, sizeof(cfg->strategy), err, errlen);
    }
    if (!strcmp(e, "CTXD_PROVIDER")) {
        /* Same order as ctxd_provider. */
        static const char *const providers[] = {"echo", "anthropic", "openai", NULL};
        int i;
        if (set_choice(e, value, providers, &i, err, errlen)) return CTXD_ERR;
        cfg->provider = (ctxd_provider)i;
        return CTXD_OK;
    }
    if (!strcmp(e, "CTXD_LOG_FILE"))
        return set_string(e, value, cfg->log_file, sizeof(cfg->log_file), err, errlen);
    if (!strcmp(e, "CTXD_TLS_CERT"))
        return set_string(e, value, cfg->tls_cert, sizeof(cfg->tls_cert), err, errlen);
    if (!strcmp(e, "CTXD_TLS_KEY"))
        return set_string(e, value, cfg->tls_key, sizeof(cfg->tls_key), err, errlen);
    if (!strcmp(e, "CTXD_PROMPT_CACHE")) {
        static const char *const modes[] = {"off", "on", NULL};
        return set_choice(e, value, modes, &cfg->prompt_cache, err, errlen);
    }
    if (!strcmp(e, "CTXD_AUTH")) {
        static const char *const modes[] = {"off", "keys", NULL};
        cfg->auth_explicit = 1;
        return set_choice(e, value, modes, &cfg->auth, err, errlen);
    }
    if (!strcmp(e, "CTXD_ADMIN_TOKEN")) {
        if (!*value) return CTXD_OK;
        if (strlen(value) < 16) {
            snprintf(err, errlen, "CTXD_ADMIN_TOKEN is too short: use at least 16 characters");
            return CTXD_ERR;
        }
        free(cfg->admin_token);
        return (cfg->admin_token = strdup(value)) ? CTXD_OK : CTXD_ERR;
    }
    if (!strcmp(e, "CTXD_ALLOWED_HOSTS"))
        return set_string(e, value, cfg->allowed_hosts, sizeof(cfg->allowed_hosts), err, errlen);
    if (!strcmp(e, "CTXD_CORS_ORIGINS"))
        return set_string(e, value, cfg->cors_origins, sizeof(cfg->cors_origins), err, errlen);
    if (!strcmp(e, "CTXD_MODEL"))
        return set_string(e, value, cfg->model, sizeof(cfg->model), err, errlen);
    if (!strcmp(e, "CTXD_SUMMARY_MODEL"))
        return set_string(e, value, cfg->summary_model, sizeof(cfg->summary_model), err, errlen);
    if (!strcmp(e, "CTXD_ANTHROPIC_URL") || !strcmp(e, "CTXD_OPENAI_URL")) {
        char *dst = e[5] == 'A' ? cfg->anthropic_url : cfg->openai_url;
        if (strncmp(value, "http://", 7) && strncmp(value, "https://", 8)) {
            snprintf(err, errlen,
                     "%s=%s is not allowed: use an http:// or "
                     "https:// URL",
                     e, value);
            return CTXD_ERR;
        }
        if (set_string(e, value, dst, sizeof(cfg->anthropic_url), err, errlen)) return CTXD_ERR;
        size_t l = strlen(dst);
        while (l && dst[l - 1] == '/') dst[--l] = '\0'; /* no double slash */
        return CTXD_OK;
    }
    if (!strcmp(e, "ANTHROPIC_API_KEY_FILE") || !strcmp(e, "OPENAI_API_KEY_FILE")) {
        if (!*value) return CTXD_OK;
        char *key = read_key_file(e, value, err, errlen);
        if (!key) return CTXD_ERR;
        char **dst = e[0] == 'A' ? &cfg->anthropic_key : &cfg->openai_key;
        free(*dst);
        *dst = key;
        return CTXD_OK;
    }
    if (o->width == sizeof(int)) {
        int v = (int)n;
        memcpy((char *)cfg + o->off, &v, sizeof(v));
    } else if (o->width == sizeof(long)) {
        long v = (long)n; /* size_t fields too: the same bytes for these values */
        memcpy((char *)cfg + o->off, &v, sizeof(v));
    }
    return CTXD_OK;
}

static const option_def *find_flag(const char *arg, const char **inline_value) {
    *inline_value = NULL;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        size_t fl = strlen(options[i].flag);
        if (!strncmp(arg, options[i].flag, fl)) {
            if (arg[fl] == '\0') return &options[i];
            if (arg[fl] == '=') {
                *inline_value = arg + fl + 1;
                return &options[i];
            }
        }
    }
    return NULL;
}

int config_load(ctxd_config *cfg, int argc, char **argv, char *err, size_t errlen, int *exit_now) {
    memset(cfg, 0, sizeof(*cfg));
    *exit_now = 0;
    cfg->provider = CTXD_PROVIDER_ECHO;
    const char *akey = getenv("ANTHROPIC_API_KEY");
    const char *okey = getenv("OPENAI_API_KEY");
    if (akey && *akey) cfg->anthropic_key = strdup(akey);
    if (okey && *okey) cfg->openai_key = strdup(okey);

    /* Defaults, then the environment. */
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const option_def *o = &options[i];
        if (o->def && config_apply(cfg, o, o->def, err, errlen)) return CTXD_ERR;
    }
    int provider_set = 0;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const option_def *o = &options[i];
        const char *v = getenv(o->env);
        if (!v) continue;
        if (!*v) continue; /* empty is unset (compose passes ${VAR:-} through) */
        if (!strcmp(o->env, "CTXD_PROVIDER")) provider_set = 1;
        if (config_apply(cfg, o, v, err, errlen)) return CTXD_ERR;
    }
    /* Flags. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            config_usage();
            *exit_now = 1;
            return CTXD_OK;
        }
        if (!strcmp(a, "--version")) {
            printf("ctxd %s\n", CTXD_VERSION);
            *exit_now = 1;
            return CTXD_OK;
        }
        const char *val;
        const option_def *o = find_flag(a, &val);
        if (!o) {
            snprintf(err, errlen, "unknown argument '%s' (see ctxd --help)", a);
            return CTXD_ERR;
        }
        if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value (see ctxd --help)", a);
                return CTXD_ERR;
            }
            val = argv[++i];
        }
        if (!strcmp(o->env, "CTXD_PROVIDER")) provider_set = 1;
        if (config_apply(cfg, o, val, err, errlen)) {
            /* Name the flag the user typed, not only the variable. */
            char tmp[CTXD_ERRSTR_LEN * 2];
            snprintf(tmp, sizeof(tmp), "%s (%s): %s", o->flag, o->env, err);
            snprintf(err, errlen, "%s", tmp);
            return CTXD_ERR;
        }
    }
    if (!provider_set) {
        if (cfg->anthropic_key)
            cfg->provider = CTXD_PROVIDER_ANTHROPIC;
        else if (cfg->openai_key)
            cfg->provider = CTXD_PROVIDER_OPENAI;
    }
    if (cfg->provider == CTXD_PROVIDER_ANTHROPIC && !cfg->anthropic_key) {
        snprintf(err, errlen,
                 "CTXD_PROVIDER=anthropic needs ANTHROPIC_API_KEY or "
                 "ANTHROPIC_API_KEY_FILE");
        return CTXD_ERR;
    }
    if (cfg->provider == CTXD_PROVIDER_OPENAI && !cfg->openai_key &&
        !strcmp(cfg->openai_url, "https://api.openai.com/v1")) {
        snprintf(err, errlen,
                 "CTXD_PROVIDER=openai with api.openai.com needs "
                 "OPENAI_API_KEY or OPENAI_API_KEY_FILE");
        return CTXD_ERR;
    }
    if (!!cfg->tls_cert[0] != !!cfg->tls_key[0]) {
        snprintf(err, errlen, "CTXD_TLS_CERT and CTXD_TLS_KEY go together: set both or neither");
        return CTXD_ERR;
    }
    /* Keys are required unless only this machine can connect. */
    if (!cfg->auth_explicit)
        cfg->auth = strcmp(cfg->listen_host, "localhost") && strncmp(cfg->listen_host, "127.", 4);
    if (!cfg->model[0]) {
        const char *m = cfg->provider == CTXD_PROVIDER_ANTHROPIC ? "claude-sonnet-4-5"
                        : cfg->provider == CTXD_PROVIDER_OPENAI  ? "gpt-4o-mini"
                                                                 : "echo";
        snprintf(cfg->model, sizeof(cfg->model), "%s", m);
    }
    if (cfg->max_message_bytes > cfg->max_body_bytes) {
        snprintf(err, errlen,
                 "CTXD_MAX_MESSAGE_BYTES=%zu is not allowed: it must not exceed "
                 "CTXD_MAX_BODY_BYTES=%zu",
                 cfg->max_message_bytes, cfg->max_body_bytes);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

void config_free(ctxd_config *cfg) {
    if (!cfg) return;
    if (cfg->admin_token) {
        memset(cfg->admin_token, 0, strlen(cfg->admin_token));
        free(cfg->admin_token);
        cfg->admin_token = NULL;
    }
    if (cfg->anthropic_key) {
        memset(cfg->anthropic_key, 0, strlen(cfg->anthropic_key));
        free(cfg->anthropic_key);
    }
    if (cfg->openai_key) {
        memset(cfg->openai_key, 0, strlen(cfg->openai_key));
        free(cfg->openai_key);
    }
    cfg->anthropic_key = cfg->openai_key = NULL;
}
