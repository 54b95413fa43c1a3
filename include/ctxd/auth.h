/* auth: API keys (made, checked, listed, revoked), tenants and scopes, and rate limits. */
#ifndef CTXD_AUTH_H
#define CTXD_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/error.h"
#include "ctxd/store.h"
#include "ctxd/worker.h"

#define AUTH_SCOPE_READ 1
#define AUTH_SCOPE_WRITE 2
#define AUTH_SCOPE_ADMIN 4

/* How long a checked key is remembered by a process: a revoked key stops
 * working on every process within this. */
#define AUTH_CACHE_MS 2000

/* "ctxd_" + 43 base62 characters (256 random bits) + "_" + a 6-character
 * base62 CRC-32 of the random part, so a typo or a leaked key is known
 * offline. */
#define AUTH_KEY_LEN (5 + 43 + 1 + 6)

/* The caller a request acts for. */
typedef struct auth_identity {
    char key_id[40]; /* "" when auth is off or for the admin token */
    char tenant[STORE_TENANT_MAX + 1];
    int scopes;                  /* AUTH_SCOPE_* */
    int64_t requests_per_minute; /* in force (the key's, else the default); 0: none */
    int64_t tokens_per_minute;
} auth_identity;

/* The identity of every request when CTXD_AUTH=off: tenant "default", every scope. */
void auth_open_identity(auth_identity *id);

/* Who presents credential (the bearer token or x-api-key value): an API
 * key, or CTXD_ADMIN_TOKEN (admin scope only). A malformed key or one with
 * a wrong checksum is refused without asking Redis; a well-formed one costs
 * at most one lookup (none while cached). CTXD_ERR with e: CTXD_E_UNAUTHORIZED
 * (unknown or revoked too), or CTXD_E_REDIS. */
int auth_check(ctxd_worker *w, const char *credential, auth_identity *id, ctxd_error *e);

/* 1 if key has the shape and checksum of a ctxd key (no Redis). */
int auth_key_well_formed(const char *key);

/* 1 if name is a tenant name: 1 to STORE_TENANT_MAX of [a-z0-9_-]. */
int auth_tenant_valid(const char *name);

/* Scopes from "read,write,admin" (CTXD_ERR on an unknown or empty one), and back. */
int auth_scopes_parse(const char *text, int *scopes);
void auth_scopes_format(int scopes, char *out, size_t cap);

/* A new key for tenant: the key text is written to key (shown once, never
 * stored) and its record to out. */
typedef struct auth_new_key {
    const char *tenant;
    int scopes;
    int64_t requests_per_minute; /* 0: the configured default */
    int64_t tokens_per_minute;
    const char *name; /* may be NULL */
} auth_new_key;

int auth_key_create(ctxd_worker *w, const auth_new_key *nk, char key[AUTH_KEY_LEN + 1],
                    store_apikey *out, ctxd_error *e);

/* Every key, or only tenant's (tenant NULL: all); *keys is the caller's to free(). */
int auth_key_list(ctxd_worker *w, const char *tenant, store_apikey **keys, size_t *n,
                  ctxd_error *e);

/* Revoke a key by id: CTXD_E_KEY_NOT_FOUND when there is none. */
int auth_key_revoke(ctxd_worker *w, const char *id, ctxd_error *e);

/* Rate limits of an identity (no-ops with CTXD_OK when it has none).
 * requests: take one request, CTXD_E_RATE_LIMITED (with retry_after_s)
 * when over. tokens_check: refuse a turn while the key is over its token
 * budget; tokens_charge: count the tokens a reply used. st (may be NULL)
 * gets the limit's state for the RateLimit header. */
int auth_rate_request(ctxd_worker *w, const auth_identity *id, store_rate *st, ctxd_error *e);
int auth_rate_tokens_check(ctxd_worker *w, const auth_identity *id, store_rate *st, ctxd_error *e);
void auth_rate_tokens_charge(ctxd_worker *w, const auth_identity *id, int64_t tokens);

#endif
