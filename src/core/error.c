/* error.c: filling in a ctxd_error. */
#include "ctxd/error.h"

#include <stdarg.h>
#include <stdio.h>

int ctxd_error_set(ctxd_error *e, ctxd_err err, const char *fmt, ...) {
    va_list ap;
    e->err = err;
    e->retry_after_s = 0;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return CTXD_ERR;
}
