/* http_tls.h: HTTPS for the front door: the server's TLS context and one connection's TLS session. */
#ifndef CTXD_HTTP_TLS_H
#define CTXD_HTTP_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "ctxd/config.h"

struct ssl_st; /* OpenSSL's SSL, seen only by http_tls.c */

/* What a step that could not finish waits for; reads return 0 at the end of
 * the stream (close_notify, or the peer closed the socket). */
enum { HTTP_TLS_WANT_READ = -1, HTTP_TLS_WANT_WRITE = -2, HTTP_TLS_FAILED = -3 };

/* Load cfg->tls_cert and cfg->tls_key when both are set (HTTPS only from
 * then on); nothing when neither is. CTXD_ERR with one line in err naming the
 * setting and the path (missing, unreadable, not PEM, key not matching the
 * certificate). Call once before any connection; http_tls_stop frees. */
int http_tls_start(const ctxd_config *cfg, char *err, size_t errlen);

/* Free the context; connections hold their own reference until freed. */
void http_tls_stop(void);

/* 1 when ctxd serves HTTPS. */
int http_tls_on(void);

/* A TLS session on the non-blocking socket fd, server side; NULL when out of
 * memory. The caller frees it with http_tls_free (the fd stays open). */
struct ssl_st *http_tls_new(int fd);

/* Free a session (NULL is fine); never closes its socket. */
void http_tls_free(struct ssl_st *tls);

/* One step of the handshake: 1 when done, HTTP_TLS_WANT_READ/WRITE, or
 * HTTP_TLS_FAILED with the reason in why (for the log; never key material). */
int http_tls_handshake(struct ssl_st *tls, char *why, size_t whylen);

/* Read up to len bytes: the count, 0 at the end of the stream, or
 * HTTP_TLS_WANT_READ/WRITE/FAILED. */
ssize_t http_tls_read(struct ssl_st *tls, void *buf, size_t len);

/* Write up to len bytes: the count (maybe fewer), or HTTP_TLS_WANT_READ/
 * WRITE/FAILED. After a WANT, call again with the same bytes (the pointer may
 * move, len may grow) before writing anything else. */
ssize_t http_tls_write(struct ssl_st *tls, const void *buf, size_t len);

/* 1 when the session holds bytes read from the socket that no read returned
 * yet: epoll will not announce them. */
int http_tls_pending(struct ssl_st *tls);

/* Send close_notify if the socket takes it now (best effort, never waits). */
void http_tls_close_notify(struct ssl_st *tls);

#endif
