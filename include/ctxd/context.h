/* context: the context service: create, read, list, settings, state and delete. */
#ifndef CTXD_CONTEXT_H
#define CTXD_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/error.h"
#include "ctxd/store.h"
#include "ctxd/worker.h"

/* Every function here returns CTXD_OK, or CTXD_ERR with e filled in (a
 * ctxd_err and a sentence for the client); a refused call changes nothing.
 * Context ids are validated by the caller. */

/* Create a context with the given settings (NULL strings and negative
 * numbers take the configured defaults) and state (JSON-encoded values).
 * With idem_key, a repeat with the same fingerprint gets the first id
 * (*replayed = 1); another fingerprint is CTXD_E_IDEM_KEY_REUSED. */
int context_create(ctxd_worker *w, const store_settings *given, const store_blob *state_keys,
                   const store_blob *state_values, size_t n_state, const char *idem_key,
                   uint64_t fp, char id[UTIL_UUID_LEN + 1], int *replayed, ctxd_error *e);

/* Read a context (see store_read); out is freed with store_context_free. */
int context_read(ctxd_worker *w, const char *id, int what, long limit, int64_t before,
                 store_context *out, ctxd_error *e);

/* Change the settings given (see store_settings) and read the context's
 * settings back into out. if_match: NULL, or the versions the client
 * accepts (see store_set_settings): else CTXD_E_PRECONDITION_FAILED. */
int context_change(ctxd_worker *w, const char *id, const store_settings *change,
                   const char *if_match, store_context *out, ctxd_error *e);

/* Replace (merge 0) or merge into (merge 1: a NULL value deletes its key)
 * the state, then read the whole state back into out; if_match as for
 * context_change. */
int context_state_write(ctxd_worker *w, const char *id, const store_blob *keys,
                        const store_blob *values, size_t n, int merge, const char *if_match,
                        store_context *out, ctxd_error *e);

/* A state object as context_create and context_state_write take it:
 * keys and JSON-encoded values, borrowed from the object (the arrays are
 * owned: free with context_state_input_free, also after a failure). */
typedef struct context_state_input {
    store_blob *keys, *values;
    size_t n;
} context_state_input;

/* obj (a json_object) as state: a null value is kept with data NULL when
 * keep_nulls (a merge deletes its key), else left out. CTXD_ERR with e:
 * CTXD_E_INVALID_FIELD (not an object, or a key that is not 1 to 256 bytes
 * of UTF-8), CTXD_E_STATE_TOO_LARGE (over CTXD_MAX_STATE_BYTES) or
 * CTXD_E_NOMEM. */
struct json_object;
int context_state_input_of(const ctxd_config *cfg, struct json_object *obj, int keep_nulls,
                           context_state_input *out, ctxd_error *e);
void context_state_input_free(context_state_input *s); /* accepts NULL */

/* Delete every key of a context; CTXD_E_NOT_FOUND when there was none. */
int context_delete(ctxd_worker *w, const char *id, ctxd_error *e);

/* A page of contexts, newest activity first. */
typedef struct context_page {
    store_list_item *items; /* owned */
    size_t n;
    char next_cursor[64]; /* "" on the last page */
} context_page;

/* The page after cursor (NULL: the first), at most limit items. A cursor
 * that is not a next_cursor of an earlier page is CTXD_E_INVALID_QUERY. */
int context_list(ctxd_worker *w, long limit, const char *cursor, context_page *out, ctxd_error *e);
void context_page_free(context_page *p); /* accepts NULL */

/* The window the model would see now, within budget tokens (<= 0: the
 * context's max_context_tokens): the newest whole units (a user message
 * that is no tool result, and what follows it) whose tokens fit what the
 * system prompt and the summary leave. out gets the settings, summary and
 * those messages, oldest first (free with store_context_free); *tokens
 * what the window costs, system prompt and summary included; *budget_used
 * the budget applied. */
int context_recall(ctxd_worker *w, const char *id, int64_t budget, store_context *out,
                   int64_t *tokens, int64_t *budget_used, ctxd_error *e);

/* Turn w->st's last failure into e, with a sentence about context id. */
void context_store_error(ctxd_error *e, const ctxd_worker *w, const char *id);

#endif
