/* worker.c: what one worker thread owns: its Redis connection and model client. */
#include "ctxd/worker.h"

#include <stdlib.h>

ctxd_worker *worker_new(const ctxd_config *cfg) {
    ctxd_worker *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->cfg = cfg;
    w->st = store_new(cfg);
    w->llm = llm_client_new(cfg);
    if (!w->st || !w->llm) {
        worker_free(w);
        return NULL;
    }
    return w;
}

void worker_free(ctxd_worker *w) {
    if (!w) return;
    store_free(w->st);
    llm_client_free(w->llm);
    free(w);
}
