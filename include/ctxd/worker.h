/* worker: what one HTTP worker thread owns (a Redis connection, a model client). */
#ifndef CTXD_WORKER_H
#define CTXD_WORKER_H

#include "ctxd/config.h"
#include "ctxd/llm.h"
#include "ctxd/store.h"

typedef struct ctxd_worker {
    const ctxd_config *cfg; /* borrowed, process-wide */
    store *st;              /* owned */
    llm_client *llm;        /* owned */
} ctxd_worker;

/* Create a worker's resources. Returns NULL when out of memory. */
ctxd_worker *worker_new(const ctxd_config *cfg);
void worker_free(ctxd_worker *w); /* accepts NULL */

#endif
