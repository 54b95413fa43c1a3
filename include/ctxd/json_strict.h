/* json_strict: RFC 8259 JSON checked to the letter before any parser sees it. */
#ifndef CTXD_JSON_STRICT_H
#define CTXD_JSON_STRICT_H

#include <stddef.h>

#include "ctxd/common.h"

/* What json_strict_check found. */
typedef enum {
    JSON_STRICT_OK = 0,
    JSON_STRICT_SYNTAX,  /* not JSON: NaN, Infinity, a raw control byte, \u0000... */
    JSON_STRICT_ENCODING /* a lone UTF-16 surrogate escape */
} json_strict_result;

/* Check that s[0..len) is one JSON value by RFC 8259 and nothing more:
 * no NaN or Infinity, no raw control bytes in strings, no \u0000, every
 * \u surrogate paired, nesting at most max_depth. UTF-8 itself is checked
 * elsewhere (util_utf8_valid). On a failure *at is the byte offset and *why
 * a short phrase. */
json_strict_result json_strict_check(const char *s, size_t len, int max_depth, size_t *at,
                                     const char **why);

#endif
