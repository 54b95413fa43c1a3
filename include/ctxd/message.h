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
    /* The text (a JSON string's value), or with content_json the JSON text
     * of an array of content blocks (Anthropic's shape), as the client or
     * the model gave them. */
    const char *content;
    size_t content_len;
    int content_json;
    int tool_result;      /* a user message answering tool calls (see message_encode) */
    const char *id;       /* "msg_..." (NULL: none, messages of 0.4) */
    const char *metadata; /* JSON text of the client's object, or NULL */
    size_t metadata_len;
    int64_t created_ms;
    int64_t tokens;
    /* Replies only (NULL / -1 otherwise). */
    const char *model;
    const char *stop_reason;
    int64_t input_tokens, output_tokens;
    int64_t cache_creation_input_tokens, cache_read_input_tokens; /* -1: not said */
} message;

/* Append m as JSON: {"seq","role","tokens","id","content","metadata",
 * "created_at"} (id and metadata when set; content as given when
 * content_json) and, for replies, "usage", "model", "stop_reason". A user
 * message holding tool results gets "tool_result":true right after
 * "tokens": windows and trims (store_window.c, lua/context.lua) read that
 * prefix and never start a unit there, so a tool_use and its result stay
 * together. Returns CTXD_OK or CTXD_ERR when out of memory (b->err set). */
int message_encode(buf *b, const message *m);

/* Decode the fields a model call needs from a stored message: role and
 * content are unescaped into arena (which must have room for len bytes from
 * *used on; an array of blocks is copied as it is, content_json set), seq
 * and tokens read (-1 when absent). Other fields are skipped. Returns
 * CTXD_OK, or CTXD_ERR when json is not such an object. */
int message_decode(const char *json, size_t len, char *arena, size_t *used, message *out);

/* The role ("" when unknown; "tool_result" for a user message of tool
 * results, which starts no unit of a window), tokens and seq (-1 when
 * absent) of a stored message, read from the prefix message_encode writes
 * without decoding it, else decoded (messages of ctxd 0.4). CTXD_ERR only
 * when out of memory. */
int message_head(const char *raw, size_t len, char role[16], int64_t *tokens, int64_t *seq);

/* The one token estimate, for text no upstream has counted: a message costs
 * its bytes / MESSAGE_BYTES_PER_TOKEN plus MESSAGE_TOKEN_OVERHEAD (role and
 * framing); a system prompt only its bytes / MESSAGE_BYTES_PER_TOKEN. The
 * store passes both constants to its scripts, so Lua counts the same way. */
#define MESSAGE_BYTES_PER_TOKEN 4
#define MESSAGE_TOKEN_OVERHEAD 4
int64_t message_tokens(size_t bytes);
int64_t message_system_tokens(size_t bytes);

/* The estimate for content: message_tokens for text; for blocks the sum of
 * each block's (text, thinking, tool input and results by their bytes as
 * above, an image MESSAGE_IMAGE_TOKENS, a document by its bytes) plus the
 * overhead. */
#define MESSAGE_IMAGE_TOKENS 1600
int64_t message_content_tokens(const char *content, size_t len, int content_json);

/* The text of content: itself, or its text blocks joined with "\n" (other
 * blocks as "[image]", "[tool_use name]" ... placeholders), appended to b. */
void message_content_text(buf *b, const char *content, size_t len, int content_json);

/* 1 when content (blocks) holds a tool_result block. */
int message_has_tool_result(const char *content, size_t len, int content_json);

#endif
