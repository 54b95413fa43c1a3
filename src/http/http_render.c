/* http_render.c: the JSON answers, rendered from what the services return. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/message.h"
#include "http_int.h"

#define PREVIEW_BYTES 96

static void put_string_or_null(buf *b, const char *s) {
    if (s && s[0])
        buf_put_json_string(b, s, strlen(s));
    else
        buf_puts(b, "null");
}

static void put_int_or_null(buf *b, int64_t v) {
    if (v >= 0)
        buf_printf(b, "%" PRId64, v);
    else
        buf_puts(b, "null");
}

/* Stored messages are JSON already: copied as they are. */
static void put_messages(buf *b, const store_context *c) {
    buf_puts(b, "[");
    for (size_t i = 0; i < c->n_messages; i++) {
        if (i) buf_puts(b, ",");
        buf_putn(b, c->messages[i].data, c->messages[i].len);
    }
    buf_puts(b, "]");
}

static void put_paging(buf *b, const store_context *c) {
    buf_printf(b, ",\"has_more\":%s,\"next_before\":", c->has_more ? "true" : "false");
    if (c->has_more)
        buf_printf(b, "%" PRId64, c->next_before);
    else
        buf_puts(b, "null");
}

void http_render_state(buf *b, const store_context *c) {
    buf_puts(b, "{");
    for (size_t i = 0; i < c->n_state; i++) {
        if (i) buf_puts(b, ",");
        buf_put_json_string(b, c->state_keys[i].data, c->state_keys[i].len);
        buf_puts(b, ":");
        buf_putn(b, c->state_values[i].data, c->state_values[i].len);
    }
    buf_puts(b, "}");
}

void http_render_context(buf *b, const store_context *c, int with_messages) {
    buf_printf(b, "{\"id\":\"%s\",\"created_at\":\"%s\",\"last_updated\":\"%s\"", c->id,
               c->created_at, c->last_updated);
    if (with_messages) {
        buf_puts(b, ",\"messages\":");
        put_messages(b, c);
        buf_puts(b, ",\"state\":");
        http_render_state(b, c);
    }
    buf_puts(b, ",\"system\":");
    put_string_or_null(b, c->system);
    if (c->tools && c->tools[0]) {
        buf_puts(b, ",\"tools\":");
        buf_puts(b, c->tools);
    }
    if (c->tool_choice && c->tool_choice[0]) {
        buf_puts(b, ",\"tool_choice\":");
        buf_puts(b, c->tool_choice);
    }
    buf_puts(b, ",\"model\":");
    put_string_or_null(b, c->model);
    buf_printf(b,
               ",\"strategy\":\"%s\",\"max_context_tokens\":%" PRId64 ",\"max_messages\":%" PRId64
               ",\"ttl_seconds\":%" PRId64 ",\"message_count\":%" PRId64 ",\"first_seq\":%" PRId64
               ",\"summary\":",
               c->strategy, c->max_context_tokens, c->max_messages, c->ttl_seconds,
               c->total_messages, c->first_seq);
    if (c->summary[0]) {
        buf_puts(b, "{\"text\":");
        buf_put_json_string(b, c->summary, strlen(c->summary));
        buf_printf(b, ",\"covers_until_seq\":%" PRId64 ",\"tokens\":%" PRId64 "}", c->summary_upto,
                   c->summary_tokens);
    } else {
        buf_puts(b, "null");
    }
    if (with_messages) put_paging(b, c);
    buf_puts(b, "}");
}

void http_render_messages(buf *b, const store_context *c) {
    buf_printf(b, "{\"context_id\":\"%s\",\"messages\":", c->id);
    put_messages(b, c);
    buf_printf(b, ",\"message_count\":%" PRId64, c->total_messages);
    put_paging(b, c);
    buf_puts(b, "}");
}

/* A short preview of a stored message: role and the first bytes of its
 * text, cut on a UTF-8 boundary. */
static void put_preview(buf *b, const store_blob *m) {
    message msg;
    size_t used = 0;
    char *arena = m->data ? malloc(m->len + 1) : NULL;
    if (!arena || message_decode(m->data, m->len, arena, &used, &msg)) {
        buf_puts(b, "null");
        free(arena);
        return;
    }
    buf text; /* blocks: their text */
    buf_init(&text);
    if (msg.content_json) message_content_text(&text, msg.content, msg.content_len, 1);
    const char *t = msg.content_json ? (text.data ? text.data : "") : msg.content;
    size_t n = msg.content_json ? text.len : msg.content_len;
    size_t cut = n > PREVIEW_BYTES ? PREVIEW_BYTES : n;
    while (cut < n && cut > 0 && ((unsigned char)t[cut] & 0xc0) == 0x80) cut--;
    buf_puts(b, "{\"role\":");
    buf_put_json_string(b, msg.role, strlen(msg.role));
    buf_puts(b, ",\"text\":");
    buf_put_json_string(b, t, cut);
    buf_printf(b, ",\"truncated\":%s}", cut < n ? "true" : "false");
    buf_free(&text);
    free(arena);
}

void http_render_list(buf *b, const context_page *p) {
    buf_puts(b, "{\"contexts\":[");
    for (size_t i = 0; i < p->n; i++) {
        const store_list_item *it = &p->items[i];
        buf_printf(b,
                   "%s{\"id\":\"%s\",\"created_at\":\"%s\",\"last_updated\":\"%s\","
                   "\"message_count\":%" PRId64 ",\"preview\":",
                   i ? "," : "", it->id, it->created_at, it->last_updated, it->message_count);
        put_preview(b, &it->last_message);
        buf_puts(b, "}");
    }
    buf_puts(b, "],\"next_cursor\":");
    if (p->next_cursor[0])
        buf_printf(b, "\"%s\"", p->next_cursor);
    else
        buf_puts(b, "null");
    buf_puts(b, "}");
}

void http_render_reply(buf *b, const char *id, const turn_reply *r) {
    buf_printf(b, "{\"context_id\":\"%s\",\"ai_response\":", id);
    buf_put_json_string(b, r->text, r->text_len);
    buf_puts(b, ",\"usage\":{\"input_tokens\":");
    put_int_or_null(b, r->input_tokens);
    buf_puts(b, ",\"output_tokens\":");
    put_int_or_null(b, r->output_tokens);
    if (r->cache_creation_input_tokens > 0)
        buf_printf(b, ",\"cache_creation_input_tokens\":%" PRId64, r->cache_creation_input_tokens);
    if (r->cache_read_input_tokens > 0)
        buf_printf(b, ",\"cache_read_input_tokens\":%" PRId64, r->cache_read_input_tokens);
    buf_puts(b, "}");
    if (r->model[0]) {
        buf_puts(b, ",\"model\":");
        buf_put_json_string(b, r->model, strlen(r->model));
    }
    if (r->stop_reason[0]) {
        buf_puts(b, ",\"stop_reason\":");
        buf_put_json_string(b, r->stop_reason, strlen(r->stop_reason));
    }
    if (r->content_json) { /* tool_use or thinking blocks: the reply whole */
        buf_puts(b, ",\"content\":");
        buf_putn(b, r->content_json, r->content_json_len);
    }
    buf_puts(b, "}");
}

void http_render_appended(buf *b, const char *id, size_t appended, int64_t first_seq) {
    buf_printf(b, "{\"context_id\":\"%s\",\"appended\":%zu,\"first_seq\":%" PRId64 "}", id,
               appended, first_seq);
}
