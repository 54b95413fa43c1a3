/* mcp: the Model Context Protocol over ctxd's contexts: lifecycle, sessions, tools, resources, prompts. */
#ifndef CTXD_MCP_H
#define CTXD_MCP_H

#include <json-c/json.h>

#include "ctxd/auth.h"
#include "ctxd/error.h"
#include "ctxd/store.h"
#include "ctxd/worker.h"

/* The revisions with sessions (an initialize asking for another gets the
 * newest), and the stateless one served side by side: each of its
 * requests carries its version in params._meta, and no session. */
#define MCP_PROTOCOL_LATEST "2025-11-25"
#define MCP_PROTOCOL_STATELESS "2026-07-28"

/* A session lives this long after its last request. */
#define MCP_SESSION_TTL_S 86400

/* JSON-RPC 2.0's error codes, and the ones MCP and its SDKs add. */
#define MCP_PARSE_ERROR (-32700)
#define MCP_INVALID_REQUEST (-32600)
#define MCP_METHOD_NOT_FOUND (-32601)
#define MCP_INVALID_PARAMS (-32602)
#define MCP_INTERNAL_ERROR (-32603)
#define MCP_SERVER_ERROR (-32000)       /* a refusal of the transport (the SDKs' code) */
#define MCP_SESSION_NOT_FOUND (-32001)  /* the SDKs' code for an unknown session */
#define MCP_RESOURCE_NOT_FOUND (-32002) /* resources/read of a resource that is not there */
#define MCP_HEADER_MISMATCH (-32020)    /* 2026-07-28: headers missing or unlike the body */
#define MCP_UNSUPPORTED_VERSION (-32022)

/* A JSON-RPC error: code and a sentence for the client. When ctxd itself
 * cannot serve (Redis unavailable, out of memory), infra says so instead
 * (infra.err != CTXD_E_NONE): the HTTP edge answers it as every route does
 * (503 with Retry-After), so clients and balancers retry. */
typedef struct mcp_error {
    int code;
    char message[CTXD_ERRSTR_LEN * 2];
    ctxd_error infra;
} mcp_error;

/* Set err (printf-style; infra cleared); returns CTXD_ERR. */
int mcp_error_set(mcp_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Who calls, within a session: the identity the HTTP edge authenticated
 * (the worker's store is bound to its tenant already) and the revision the
 * session negotiated. Borrowed. */
typedef struct mcp_caller {
    const auth_identity *who;
    const char *protocol_version;
} mcp_caller;

/* A service failure e that is ctxd's own trouble (Redis, memory,
 * randomness): put into err->infra, CTXD_ERR. Else 0: e is the caller's to
 * report (a tool error, a JSON-RPC error). */
int mcp_infra_failure(mcp_error *err, const ctxd_error *e);

/* 1 when version is a revision with sessions this server speaks. */
int mcp_version_supported(const char *version);

/* Every revision served, newest first, as a JSON array (the caller puts it). */
json_object *mcp_versions_json(void);

/* Answer initialize: check params, negotiate the revision, start a
 * session in Redis (bound to who's tenant, with a fresh id) and build the
 * InitializeResult. CTXD_OK with *result (the caller's to put) and *sess
 * filled, or CTXD_ERR with err. */
int mcp_initialize(ctxd_worker *w, const auth_identity *who, json_object *params,
                   store_mcp_session *sess, json_object **result, mcp_error *err);

/* The session id of the caller's tenant, its countdown started again.
 * CTXD_OK with *found (0: none, or expired); CTXD_ERR with e on Redis
 * trouble. */
int mcp_session_find(ctxd_worker *w, const char *id, store_mcp_session *out, int *found,
                     ctxd_error *e);

/* End session id; CTXD_OK with *found 0 when there was none. */
int mcp_session_end(ctxd_worker *w, const char *id, int *found, ctxd_error *e);

/* Answer one request of an initialized session, or a stateless
 * (MCP_PROTOCOL_STATELESS) request: method with params (an object or NULL;
 * borrowed). Stateless results carry resultType, the server's identity and
 * cache hints, and server/discover is answered. CTXD_OK with *result (the caller's to put), or
 * CTXD_ERR with err: the JSON-RPC error to answer. A tool that fails
 * answers CTXD_OK with a result whose isError is true, and changed
 * nothing. */
int mcp_call(ctxd_worker *w, const mcp_caller *c, const char *method, json_object *params,
             json_object **result, mcp_error *err);

/* ---- Inside the MCP service (mcp_tools.c, mcp_resources.c) ---- */

/* tools/list and tools/call. */
int mcp_tools_list(json_object **result, mcp_error *err);
int mcp_tools_call(ctxd_worker *w, const mcp_caller *c, json_object *params, json_object **result,
                   mcp_error *err);

/* resources/list, resources/templates/list, resources/read, prompts/list, prompts/get. */
int mcp_resources_list(ctxd_worker *w, json_object *params, json_object **result, mcp_error *err);
int mcp_resource_templates_list(json_object **result, mcp_error *err);
int mcp_resources_read(ctxd_worker *w, json_object *params, json_object **result, mcp_error *err);
int mcp_prompts_list(json_object **result, mcp_error *err);
int mcp_prompts_get(ctxd_worker *w, json_object *params, json_object **result, mcp_error *err);

/* JSON text (a stored message, a schema) as a json-c object the caller puts,
 * or NULL when it does not parse. */
json_object *mcp_json_parse(const char *text, size_t len);

#endif
