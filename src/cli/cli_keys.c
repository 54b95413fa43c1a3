/* cli_keys.c: ctxd keys create | list | revoke: API keys from the command line. */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/auth.h"
#include "ctxd/cli.h"
#include "ctxd/config.h"
#include "ctxd/log.h"
#include "ctxd/worker.h"

#define USAGE                                                                                      \
    "usage: ctxd keys create --tenant NAME --scopes read,write[,admin]\n"                          \
    "                        [--requests-per-minute N] [--tokens-per-minute N] [--name LABEL]\n"   \
    "       ctxd keys list [--tenant NAME]\n"                                                      \
    "       ctxd keys revoke ID\n"                                                                 \
    "Settings (CTXD_REDIS_URL...) come from the environment, as for the server.\n"

static int usage(const char *why) {
    if (why) fprintf(stderr, "ctxd keys: %s\n", why);
    fputs(USAGE, stderr);
    return 2;
}

/* The value after --name, or NULL. */
static const char *opt(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return NULL;
}

/* Every argument is one of the allowed --options with a value. */
static int options_ok(int argc, char **argv, const char *const *allowed) {
    for (int i = 1; i < argc; i += 2) {
        int ok = 0;
        for (size_t k = 0; allowed[k]; k++) ok |= !strcmp(argv[i], allowed[k]);
        if (!ok || i + 1 >= argc) return 0;
    }
    return 1;
}

static int number(const char *v, int64_t *out) {
    char *end;
    if (!v) return CTXD_OK;
    long long n = strtoll(v, &end, 10);
    if (*end || n < 0) return CTXD_ERR;
    *out = n;
    return CTXD_OK;
}

static int create(ctxd_worker *w, int argc, char **argv) {
    static const char *const allowed[] = {
        "--tenant", "--scopes", "--requests-per-minute", "--tokens-per-minute", "--name", NULL};
    auth_new_key nk = {0};
    if (!options_ok(argc, argv, allowed)) return usage("unknown or incomplete option");
    nk.tenant = opt(argc, argv, "--tenant");
    nk.name = opt(argc, argv, "--name");
    if (!nk.tenant || !auth_tenant_valid(nk.tenant))
        return usage("--tenant must be 1 to 64 characters of a-z, 0-9, _ and -");
    if (auth_scopes_parse(opt(argc, argv, "--scopes"), &nk.scopes))
        return usage("--scopes must list read, write and/or admin, comma-separated");
    if (number(opt(argc, argv, "--requests-per-minute"), &nk.requests_per_minute) ||
        number(opt(argc, argv, "--tokens-per-minute"), &nk.tokens_per_minute))
        return usage("limits are whole numbers (0: the server's default)");
    char key[AUTH_KEY_LEN + 1];
    store_apikey k;
    ctxd_error e;
    if (auth_key_create(w, &nk, key, &k, &e)) {
        fprintf(stderr, "ctxd keys: %s\n", e.msg);
        return 1;
    }
    printf("%s\n", key);
    fprintf(stderr, "created %s for tenant %s (scopes %s); the key is shown only now\n", k.id,
            k.tenant, k.scopes);
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
}

static int list(ctxd_worker *w, int argc, char **argv) {
    static const char *const allowed[] = {"--tenant", NULL};
    store_apikey *keys;
    size_t n;
    ctxd_error e;
    if (!options_ok(argc, argv, allowed)) return usage("unknown or incomplete option");
    if (auth_key_list(w, opt(argc, argv, "--tenant"), &keys, &n, &e)) {
        fprintf(stderr, "ctxd keys: %s\n", e.msg);
        return 1;
    }
    printf("%-28s %-20s %-18s %8s %10s  %-24s %s\n", "ID", "TENANT", "SCOPES", "REQ/MIN",
           "TOKENS/MIN", "CREATED", "NAME");
    for (size_t i = 0; i < n; i++)
        printf("%-28s %-20s %-18s %8" PRId64 " %10" PRId64 "  %-24s %s\n", keys[i].id,
               keys[i].tenant, keys[i].scopes, keys[i].requests_per_minute,
               keys[i].tokens_per_minute, keys[i].created_at, keys[i].name);
    free(keys);
    return 0;
}

static int revoke(ctxd_worker *w, int argc, char **argv) {
    ctxd_error e;
    if (argc != 2) return usage("revoke takes one key id");
    if (auth_key_revoke(w, argv[1], &e)) {
        fprintf(stderr, "ctxd keys: %s\n", e.msg);
        return e.err == CTXD_E_KEY_NOT_FOUND ? 2 : 1;
    }
    fprintf(stderr, "revoked %s\n", argv[1]);
    return 0;
}

int cli_keys(int argc, char **argv) {
    ctxd_config cfg;
    char err[512];
    int exit_now = 0, rc;
    char self[] = "ctxd", *none[] = {self, NULL}; /* no flags: the environment only */
    if (argc < 2) return usage(NULL);
    if (config_load(&cfg, 1, none, err, sizeof(err), &exit_now)) {
        fprintf(stderr, "ctxd: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    log_set_level(LOG_WARN); /* the key or the table on stdout; only trouble on stderr */
    ctxd_worker *w = worker_new(&cfg);
    if (!w) {
        config_free(&cfg);
        fprintf(stderr, "ctxd keys: out of memory\n");
        return 1;
    }
    if (!strcmp(argv[1], "create"))
        rc = create(w, argc - 1, argv + 1);
    else if (!strcmp(argv[1], "list"))
        rc = list(w, argc - 1, argv + 1);
    else if (!strcmp(argv[1], "revoke"))
        rc = revoke(w, argc - 1, argv + 1);
    else
        rc = usage("unknown command");
    worker_free(w);
    config_free(&cfg);
    return rc;
}
