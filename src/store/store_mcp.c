/* store_mcp.c: MCP sessions in Redis: one expiring hash per session, any process reads it. */
#include <stdio.h>
#include <string.h>

#include "store_int.h"

int store_mcp_session_put(store *s, const store_mcp_session *sess, int ttl_s) {
    char key[STORE_KEY_LEN], ttl[24];
    store_key_mcp_session(key, s->tenant, sess->id);
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    const char *hset[12] = {"HSET",
                            key,
                            "protocol_version",
                            sess->protocol_version,
                            "client_name",
                            sess->client_name,
                            "client_version",
                            sess->client_version,
                            "key_id",
                            sess->key_id,
                            "created_at",
                            sess->created_at};
    const char *expire[3] = {"EXPIRE", key, ttl};
    const char **argvs[4] = {multi, hset, expire, exec};
    static const int argcs[4] = {1, 12, 3, 1};
    redisReply *r = store_pipeline(s, 4, argvs, argcs);
    if (!r) return CTXD_ERR;
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    freeReplyObject(r);
    if (!ok)
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s to a session write",
                   store_addr(s));
    return ok ? CTXD_OK : CTXD_ERR;
}

/* Copy field f's value v into out when f is one of the session's fields. */
static void session_field(store_mcp_session *out, const char *f, const char *v) {
    if (!strcmp(f, "protocol_version"))
        snprintf(out->protocol_version, sizeof(out->protocol_version), "%s", v);
    else if (!strcmp(f, "client_name"))
        snprintf(out->client_name, sizeof(out->client_name), "%s", v);
    else if (!strcmp(f, "client_version"))
        snprintf(out->client_version, sizeof(out->client_version), "%s", v);
    else if (!strcmp(f, "key_id"))
        snprintf(out->key_id, sizeof(out->key_id), "%s", v);
    else if (!strcmp(f, "created_at"))
        snprintf(out->created_at, sizeof(out->created_at), "%s", v);
}

int store_mcp_session_get(store *s, const char *id, int ttl_s, store_mcp_session *out, int *found) {
    char key[STORE_KEY_LEN], ttl[24];
    memset(out, 0, sizeof(*out));
    *found = 0;
    store_key_mcp_session(key, s->tenant, id);
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    const char *get[2] = {"HGETALL", key}, *expire[3] = {"EXPIRE", key, ttl};
    const char **argvs[4] = {multi, get, expire, exec};
    static const int argcs[4] = {1, 2, 3, 1};
    /* Safe to send again after an I/O error: the EXPIRE only renews. */
    redisReply *r = store_pipeline(s, 4, argvs, argcs);
    if (!r && store_failed_io(s)) r = store_pipeline(s, 4, argvs, argcs);
    if (!r) return CTXD_ERR;
    const redisReply *h = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[0] : NULL;
    if (!h || h->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s to a session read",
                   store_addr(s));
        return CTXD_ERR;
    }
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (h->element[i]->str && h->element[i + 1]->str)
            session_field(out, h->element[i]->str, h->element[i + 1]->str);
    freeReplyObject(r);
    if (!out->protocol_version[0]) return CTXD_OK; /* none, or not a whole session */
    snprintf(out->id, sizeof(out->id), "%s", id);
    *found = 1;
    return CTXD_OK;
}

int store_mcp_session_delete(store *s, const char *id, int *found) {
    char key[STORE_KEY_LEN];
    store_key_mcp_session(key, s->tenant, id);
    const char *argv[2] = {"DEL", key};
    *found = 0;
    redisReply *r = store_command(s, 2, argv, NULL);
    if (!r) return CTXD_ERR;
    *found = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return CTXD_OK;
}
