/* context_recall.c: the window a context's next turn would send, read without taking its lock. */
#include <stdlib.h>
#include <string.h>

#include "ctxd/context.h"
#include "ctxd/message.h"

#define RECALL_FIRST_READ 64
#define RECALL_MAX_READ 100000

/* The index of the oldest message of the newest whole units of c's
 * messages that fit avail tokens (c->n_messages when none fits); *used
 * gets their tokens, *cut 1 when a unit was left out for want of room. */
static size_t window_start(const store_context *c, int64_t avail, int64_t *used, int *cut) {
    size_t start = c->n_messages;
    int64_t unit = 0;
    *used = 0;
    *cut = 0;
    for (size_t i = c->n_messages; i-- > 0;) {
        char role[16];
        int64_t tokens, seq;
        if (message_head(c->messages[i].data, c->messages[i].len, role, &tokens, &seq))
            return start;
        unit += tokens >= 0 ? tokens : message_tokens(c->messages[i].len);
        if (strcmp(role, "user")) continue; /* a unit starts at a user message */
        if (*used + unit > avail) {
            *cut = 1;
            return start;
        }
        *used += unit;
        unit = 0;
        start = i;
    }
    return start;
}

/* Keep only c's messages from start on. */
static void keep_from(store_context *c, size_t start) {
    for (size_t i = 0; i < start; i++) free(c->messages[i].data);
    memmove(c->messages, c->messages + start, (c->n_messages - start) * sizeof(*c->messages));
    c->n_messages -= start;
    c->has_more = c->n_messages < (size_t)c->total_messages;
    c->next_before = 0;
}

int context_recall(ctxd_worker *w, const char *id, int64_t budget, store_context *out,
                   int64_t *tokens, int64_t *budget_used, ctxd_error *e) {
    long limit = RECALL_FIRST_READ;
    for (;;) {
        if (context_read(w, id, STORE_READ_MESSAGES, limit, 0, out, e)) return CTXD_ERR;
        int64_t b = budget > 0 ? budget : out->max_context_tokens;
        int64_t fixed = message_system_tokens(strlen(out->system)) +
                        (out->summary[0] ? out->summary_tokens : 0);
        int64_t used;
        int cut;
        size_t start = window_start(out, b - fixed, &used, &cut);
        if (cut || !out->has_more || limit >= RECALL_MAX_READ) {
            keep_from(out, start);
            *tokens = fixed + used;
            *budget_used = b;
            return CTXD_OK;
        }
        store_context_free(out); /* everything read fits: read further back */
        limit *= 4;
    }
}
