/* routes_admin.c: /admin/keys: make, list and revoke API keys (the admin scope, or CTXD_ADMIN_TOKEN). */
#include <inttypes.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

#define MAX_NAME 127
#define MAX_RATE 1000000000LL

/* One key as JSON (never the key itself: only creation shows it). */
static void put_key(buf *b, const store_apikey *k) {
    buf_puts(b, "{\"id\":");
    buf_put_json_string(b, k->id, strlen(k->id));
    buf_puts(b, ",\"tenant\":");
    buf_put_json_string(b, k->tenant, strlen(k->tenant));
    buf_puts(b, ",\"scopes\":[");
    for (const char *p = k->scopes, *first = p; *p;) {
        size_t n = strcspn(p, ",");
        if (p != first) buf_puts(b, ",");
        buf_put_json_string(b, p, n);
        p += n + (p[n] == ',');
    }
    buf_printf(b,
               "],\"requests_per_minute\":%" PRId64 ",\"tokens_per_minute\":%" PRId64 ",\"name\":",
               k->requests_per_minute, k->tokens_per_minute);
    buf_put_json_string(b, k->name, strlen(k->name));
    buf_printf(b, ",\"created_at\":\"%s\"}", k->created_at);
}

/* "scopes": ["read", "write"] or "read,write". */
static int scopes_or_respond(const http_req *req, json_object *body, int *scopes, int *status) {
    json_object *v;
    char text[64] = "";
    if (!json_object_object_get_ex(body, "scopes", &v) || !v) goto bad;
    if (json_object_is_type(v, json_type_string)) {
        snprintf(text, sizeof(text), "%s", json_object_get_string(v));
    } else if (json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *s = json_object_array_get_idx(v, i);
            if (!json_object_is_type(s, json_type_string)) goto bad;
            size_t used = strlen(text);
            snprintf(text + used, sizeof(text) - used, "%s%s", used ? "," : "",
                     json_object_get_string(s));
        }
    }
    if (auth_scopes_parse(text, scopes) == CTXD_OK) return CTXD_OK;
bad:
    *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                              "Field 'scopes' must list one or more of \"read\", \"write\", "
                              "\"admin\"");
    return CTXD_ERR;
}

/* POST /admin/keys */
static int create_key(const http_req *req) {
    static const char *const allowed[] = {
        "tenant", "scopes", "requests_per_minute", "tokens_per_minute", "name", NULL};
    json_object *body = NULL;
    auth_new_key nk = {0};
    const char *tenant = NULL;
    int status;
    if (http_required_body_or_respond(req,
                                      "Send {\"tenant\": \"acme\", \"scopes\": [\"read\", "
                                      "\"write\"]}",
                                      &body, NULL, &status))
        return status;
    if (http_only_fields_or_respond(req, body, allowed, &status) ||
        http_string_field_or_respond(req, body, "tenant", STORE_TENANT_MAX, &tenant, NULL,
                                     &status) ||
        http_string_field_or_respond(req, body, "name", MAX_NAME, &nk.name, NULL, &status) ||
        http_int_field_or_respond(req, body, "requests_per_minute", 0, MAX_RATE,
                                  &nk.requests_per_minute, &status) ||
        http_int_field_or_respond(req, body, "tokens_per_minute", 0, MAX_RATE,
                                  &nk.tokens_per_minute, &status) ||
        scopes_or_respond(req, body, &nk.scopes, &status))
        goto cleanup;
    if (!tenant || !auth_tenant_valid(tenant)) {
        status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                 "Field 'tenant' must be 1 to %d characters of a-z, 0-9, _ and -",
                                 STORE_TENANT_MAX);
        goto cleanup;
    }
    nk.tenant = tenant;
    char key[AUTH_KEY_LEN + 1];
    store_apikey k;
    ctxd_error e;
    if (auth_key_create(req->w, &nk, key, &k, &e)) {
        status = http_send_failure(req, &e);
        goto cleanup;
    }
    buf b;
    buf_init(&b);
    put_key(&b, &k);
    b.len--; /* the key goes in too, this once */
    buf_printf(&b, ",\"key\":\"%s\"}", key);
    OPENSSL_cleanse(key, sizeof(key));
    status = http_send_json(req, 201, &b, NULL);
cleanup:
    if (body) json_object_put(body);
    return status;
}

/* GET /admin/keys[?tenant=] */
static int list_keys(const http_req *req) {
    static const char *const names[] = {"tenant"};
    char values[1][HTTP_QUERY_VALUE_MAX];
    const char *found[1];
    int status;
    store_apikey *keys;
    size_t n;
    ctxd_error e;
    if (http_query_or_respond(req, names, values, found, 1, &status)) return status;
    if (auth_key_list(req->w, found[0], &keys, &n, &e)) return http_send_failure(req, &e);
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"keys\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) buf_puts(&b, ",");
        put_key(&b, &keys[i]);
    }
    buf_puts(&b, "]}");
    free(keys);
    return http_send_json(req, 200, &b, NULL);
}

/* DELETE /admin/keys/{id} */
static int revoke_key(const http_req *req) {
    ctxd_error e;
    if (auth_key_revoke(req->w, req->id, &e)) return http_send_failure(req, &e);
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"message\":");
    char msg[128];
    snprintf(msg, sizeof(msg), "Key '%s' revoked", req->id);
    buf_put_json_string(&b, msg, strlen(msg));
    buf_puts(&b, "}");
    return http_send_json(req, 200, &b, NULL);
}

void routes_admin_register(void) {
    http_route("POST", "/admin/keys", create_key);
    http_route("GET", "/admin/keys", list_keys);
    http_route("DELETE", "/admin/keys/{id}", revoke_key);
}
