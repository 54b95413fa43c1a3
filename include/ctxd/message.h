/* message: the stored JSON form of one conversation message, written and read
 * without building a json-c tree (the hot path of every turn). */
#ifndef CTXD_MESSAGE_H
#define CTXD_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/buf.h"
#include "ctxd/common.h"

/* What a stored message says. Usage figures are -1 when unknown. */
typedef struct message {
    int64_t seq;
    const char *role; /* "user" or "assistant" */
    const char *content;
    size_t content_len;
    int64_t created_ms;
    int64_t tokens;
    /* Replies only (NULL / -1 otherwise). */
    const char *model;
    const char *stop_reason;
    int64_t input_tokens, output_tokens;
} message;

/* Append m as JSON: {"seq","role","content","created_at","tokens"} and, for
 * replies, "usage", "model", "stop_reason". Returns CTXD_OK or CTXD_ERR when
 * out of memory (b->err set). */
int message_encode(buf *b, const message *m);

/* Decode the fields a model call needs from a stored message: role and
 * content are unescaped into arena (which must have room for len bytes from
 * *used on), seq and tokens read (-1 when absent). Other fields are
 * skipped. Returns CTXD_OK, or CTXD_ERR when json is not such an object. */
int message_decode(const char *json, size_t len, char *arena, size_t *used, message *out);

/* The one token estimate, for text no upstream has counted: a message costs
 * its bytes / MESSAGE_BYTES_PER_TOKEN plus MESSAGE_TOKEN_OVERHEAD (role and
 * framing); a system prompt only its bytes / MESSAGE_BYTES_PER_TOKEN. The
 * store passes both constants to its scripts, so Lua counts the same way. */
#define MESSAGE_BYTES_PER_TOKEN 4
#define MESSAGE_TOKEN_OVERHEAD 4
int64_t message_tokens(size_t bytes);
int64_t message_system_tokens(size_t bytes);

#endif
