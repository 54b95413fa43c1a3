/* http: the HTTP server's life: start, drain, stop. */
#ifndef CTXD_HTTP_H
#define CTXD_HTTP_H

#include <stddef.h>

#include "ctxd/common.h"
#include "ctxd/config.h"

/* Register every route and start listening on cfg's address with
 * cfg->threads workers. CTXD_ERR with a one-line message in err (address in
 * use, permission...). cfg is borrowed and must outlive the server. */
int http_server_start(const ctxd_config *cfg, char *err, size_t errlen);

/* Begin draining: /readyz answers 503 so load balancers move away, and new
 * requests (probes aside) get 503 shutting_down; requests already running go
 * on. http_inflight counts the requests being handled. */
void http_server_drain(void);
long http_inflight(void);

/* Stop the server and wait for its threads. */
void http_server_stop(void);

#endif
