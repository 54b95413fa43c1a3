/* http_tls.c: HTTPS with OpenSSL: the server context from CTXD_TLS_CERT/KEY and each connection's session. */
#include "http_tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ctxd/error.h"
#include "ctxd/log.h"

/* TLS 1.2 suites: forward secrecy and AEAD only (Mozilla "intermediate"
 * without DHE). TLS 1.3 keeps OpenSSL's default suites, all of them modern. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Set once at start, before the loop and the workers run. */
static SSL_CTX *tls_ctx;

/* The newest OpenSSL reason on this thread's error queue, which is then
 * emptied so it never leaks into another connection's result. */
static const char *take_reason(char *out, size_t n) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(out, n, "%s", r ? r : "unknown error");
    ERR_clear_error();
    return out;
}

/* A key with a passphrase would make OpenSSL ask on the terminal: refuse. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* A precise line for a path that cannot be read at all. */
static int readable(const char *setting, const char *path, char *err, size_t errlen) {
    struct stat st;
    FILE *f = NULL;
    if (stat(path, &st) != 0 || (S_ISREG(st.st_mode) && !(f = fopen(path, "r")))) {
        snprintf(err, errlen, "%s=%s: cannot read it: %s", setting, path, strerror(errno));
        return CTXD_ERR;
    }
    if (!f) {
        snprintf(err, errlen, "%s=%s: not a file", setting, path);
        return CTXD_ERR;
    }
    fclose(f);
    return CTXD_OK;
}

static EVP_PKEY *read_key(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    return k;
}

/* The certificate chain and its key, checked against each other. */
static int load_pair(SSL_CTX *ctx, const ctxd_config *cfg, char *err, size_t errlen) {
    char why[128];
    if (readable("CTXD_TLS_CERT", cfg->tls_cert, err, errlen) ||
        readable("CTXD_TLS_KEY", cfg->tls_key, err, errlen))
        return CTXD_ERR;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        snprintf(err, errlen,
                 "CTXD_TLS_CERT=%s: not a usable PEM certificate "
                 "(-----BEGIN CERTIFICATE-----): %s",
                 cfg->tls_cert, take_reason(why, sizeof(why)));
        return CTXD_ERR;
    }
    EVP_PKEY *key = read_key(cfg->tls_key);
    if (!key) {
        snprintf(err, errlen,
                 "CTXD_TLS_KEY=%s: not a PEM private key without a passphrase "
                 "(-----BEGIN PRIVATE KEY-----): %s",
                 cfg->tls_key, take_reason(why, sizeof(why)));
        return CTXD_ERR;
    }
    int rc = CTXD_ERR;
    if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "CTXD_TLS_KEY=%s does not match the certificate in CTXD_TLS_CERT=%s",
                 cfg->tls_key, cfg->tls_cert);
        ERR_clear_error();
    } else {
        rc = CTXD_OK;
    }
    EVP_PKEY_free(key);
    return rc;
}

/* Say which certificate is served, and warn when it is out of its dates. */
static void log_certificate(const ctxd_config *cfg) {
    X509 *x = SSL_CTX_get0_certificate(tls_ctx);
    char subject[256] = "?";
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    log_msg(LOG_INFO, "HTTPS only (TLS 1.2 and 1.3): CTXD_TLS_CERT=%s subject %s", cfg->tls_cert,
            subject);
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        log_msg(LOG_WARN, "CTXD_TLS_CERT=%s has expired: clients will refuse it", cfg->tls_cert);
    else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
        log_msg(LOG_WARN, "CTXD_TLS_CERT=%s is not valid yet: clients will refuse it",
                cfg->tls_cert);
}

int http_tls_start(const ctxd_config *cfg, char *err, size_t errlen) {
    if (!cfg->tls_cert[0] || !cfg->tls_key[0]) return CTXD_OK;
    char why[128];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context: %s", take_reason(why, sizeof(why)));
        return CTXD_ERR;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        snprintf(err, errlen, "cannot configure TLS: %s", take_reason(why, sizeof(why)));
        SSL_CTX_free(ctx);
        return CTXD_ERR;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* A write that could not finish is retried with the same bytes from
     * c->out, whose address may change; idle connections give back their
     * buffers (thousands may be open). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (load_pair(ctx, cfg, err, errlen)) {
        SSL_CTX_free(ctx);
        return CTXD_ERR;
    }
    tls_ctx = ctx;
    log_certificate(cfg);
    return CTXD_OK;
}

void http_tls_stop(void) {
    SSL_CTX_free(tls_ctx);
    tls_ctx = NULL;
}

int http_tls_on(void) { return tls_ctx != NULL; }

struct ssl_st *http_tls_new(int fd) {
    SSL *s = SSL_new(tls_ctx);
    if (s && SSL_set_fd(s, fd) == 1) { /* BIO_NOCLOSE: the connection closes fd */
        SSL_set_accept_state(s);
        return s;
    }
    SSL_free(s);
    ERR_clear_error();
    return NULL;
}

void http_tls_free(struct ssl_st *tls) { SSL_free(tls); }

/* Map the result rc of an SSL call on s; why (when given) gets the reason
 * of a failure. */
static int outcome(SSL *s, int rc, char *why, size_t whylen) {
    int sys = errno, e = SSL_get_error(s, rc);
    char reason[128];
    switch (e) {
    case SSL_ERROR_WANT_READ: return HTTP_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return HTTP_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: ERR_clear_error(); return 0;
    case SSL_ERROR_SYSCALL:
        if (why) snprintf(why, whylen, "%s", sys ? strerror(sys) : "connection closed");
        ERR_clear_error();
        return HTTP_TLS_FAILED;
    default:
        take_reason(reason, sizeof(reason));
        if (why) snprintf(why, whylen, "%s", reason);
        return HTTP_TLS_FAILED;
    }
}

int http_tls_handshake(struct ssl_st *tls, char *why, size_t whylen) {
    ERR_clear_error();
    int rc = SSL_accept(tls);
    if (rc == 1) return 1;
    rc = outcome(tls, rc, why, whylen);
    if (rc == 0) {
        snprintf(why, whylen, "closed by the client");
        return HTTP_TLS_FAILED;
    }
    return rc;
}

ssize_t http_tls_read(struct ssl_st *tls, void *buf, size_t len) {
    size_t n = 0;
    ERR_clear_error();
    int rc = SSL_read_ex(tls, buf, len, &n);
    return rc == 1 ? (ssize_t)n : outcome(tls, rc, NULL, 0);
}

ssize_t http_tls_write(struct ssl_st *tls, const void *buf, size_t len) {
    size_t n = 0;
    ERR_clear_error();
    int rc = SSL_write_ex(tls, buf, len, &n);
    if (rc == 1) return (ssize_t)n;
    rc = outcome(tls, rc, NULL, 0);
    return rc == 0 ? HTTP_TLS_FAILED : rc; /* the client said close_notify and left */
}

int http_tls_pending(struct ssl_st *tls) { return SSL_has_pending(tls); }

void http_tls_close_notify(struct ssl_st *tls) {
    ERR_clear_error();
    if (SSL_shutdown(tls) < 0) ERR_clear_error(); /* the socket was full: close anyway */
}
