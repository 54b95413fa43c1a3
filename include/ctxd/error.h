/* error: the domain errors every layer reports; the HTTP edge maps each to a status and code. */
#ifndef CTXD_ERROR_H
#define CTXD_ERROR_H

#include "ctxd/common.h"

/* One enum for the whole service. The store, the turn and the context
 * service set these (with a sentence in their errstr); only the HTTP layer's
 * table (src/http/http_error.c) knows which status and stable code each one
 * is answered with. */
typedef enum ctxd_err {
    CTXD_E_NONE = 0,

    /* The request itself (found by the HTTP edge). */
    CTXD_E_BAD_HTTP_REQUEST, /* not HTTP/1.1 framing (http_parse.c) */
    CTXD_E_INVALID_JSON,
    CTXD_E_INVALID_UTF8,
    CTXD_E_MISSING_FIELD,
    CTXD_E_INVALID_FIELD,
    CTXD_E_UNKNOWN_FIELD,
    CTXD_E_INVALID_QUERY,
    CTXD_E_INVALID_IDEM_KEY,
    CTXD_E_INCOMPLETE_BODY,
    CTXD_E_ROUTE_NOT_FOUND,
    CTXD_E_METHOD_NOT_ALLOWED,
    CTXD_E_BODY_TOO_LARGE,
    CTXD_E_FIELD_TOO_LARGE,
    CTXD_E_UNSUPPORTED_MEDIA_TYPE,
    CTXD_E_BAD_CHUNKED_BODY,
    CTXD_E_REQUEST_TIMEOUT,      /* a request too slow to arrive */
    CTXD_E_HOST_NOT_ALLOWED,     /* a Host this server does not answer to */
    CTXD_E_ORIGIN_NOT_ALLOWED,   /* a browser origin not in CTXD_CORS_ORIGINS */
    CTXD_E_TOO_MANY_CONNECTIONS, /* CTXD_MAX_CONNECTIONS reached */

    /* Who is asking. */
    CTXD_E_UNAUTHORIZED, /* no key, or a malformed, unknown or revoked one */
    CTXD_E_FORBIDDEN,    /* the key lacks the scope */
    CTXD_E_RATE_LIMITED, /* the key is over one of its limits */
    CTXD_E_KEY_NOT_FOUND,

    /* Contexts and turns. */
    CTXD_E_NOT_FOUND,           /* no such context */
    CTXD_E_BUSY,                /* another owner holds the context's lock */
    CTXD_E_LOCK_LOST,           /* our lock expired or was taken over */
    CTXD_E_CONFLICT,            /* history or summary moved on since it was read */
    CTXD_E_PRECONDITION_FAILED, /* If-Match: the context changed since the client read it */
    CTXD_E_CONTEXT_FULL,        /* the message cap would be exceeded */
    CTXD_E_STATE_TOO_LARGE,     /* the state would exceed its byte cap */
    CTXD_E_PROMPT_TOO_LARGE,    /* the prompt cannot fit max_context_tokens */
    CTXD_E_IDEM_KEY_REUSED,     /* the key came with another request */
    CTXD_E_EXISTS,              /* a create found the id taken */

    /* Resources. */
    CTXD_E_REDIS, /* Redis unreachable, or it answered an error */
    CTXD_E_NOMEM,
    CTXD_E_NO_RANDOMNESS,
    CTXD_E_SHUTTING_DOWN,

    /* The model provider. */
    CTXD_E_UPSTREAM_AUTH,
    CTXD_E_UPSTREAM_RATE_LIMITED,
    CTXD_E_UPSTREAM_OVERLOADED,
    CTXD_E_UPSTREAM_ERROR,
    CTXD_E_UPSTREAM_REJECTED,
    CTXD_E_UPSTREAM_TIMEOUT,
    CTXD_E_UPSTREAM_UNREACHABLE,
    CTXD_E_PROVIDER_UNAVAILABLE,

    CTXD_E_COUNT
} ctxd_err;

/* A failure as the service layers report it: what, a sentence for the
 * client, and how long a retry should wait (0: the HTTP table's default). */
typedef struct ctxd_error {
    ctxd_err err;
    int retry_after_s;
    char msg[CTXD_ERRSTR_LEN];
} ctxd_error;

/* Set e (printf-style message); retry_after_s goes back to 0. Returns
 * CTXD_ERR, so a caller can `return ctxd_error_set(...)`. */
int ctxd_error_set(ctxd_error *e, ctxd_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
