/* log.c: one line per event on stderr, written with a single write(2). */
#include "ctxd/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "ctxd/util.h"

static int min_level = LOG_INFO;

void log_set_level(int level) { min_level = level; }

int log_enabled(int level) { return level >= min_level; }

void log_msg(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < min_level) return;
    char line[2048], ts[UTIL_ISO_LEN];
    util_iso8601(util_now_ms(), ts);
    int n = snprintf(line, sizeof(line), "%s %-5s ", ts, names[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2) len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write keeps lines from different threads whole. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
