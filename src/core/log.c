/* log.c: lines built in a buffer and written with one write(2), so lines from
 * different threads never mix. */
#include "ctxd/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctxd/buf.h"
#include "ctxd/common.h"
#include "ctxd/util.h"

static int min_level = LOG_INFO;
static int format = LOG_FORMAT_JSON;
static char file_path[512]; /* set once at start; reopened by the main thread */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(int level) { min_level = level; }
void log_set_format(int f) { format = f; }

int log_open_file(const char *path) {
    snprintf(file_path, sizeof(file_path), "%s", path);
    return log_reopen();
}

int log_reopen(void) {
    if (!file_path[0]) return CTXD_OK;
    int fd = open(file_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return CTXD_ERR;
    /* dup2 swaps the descriptor atomically for writers on other threads. */
    int rc = dup2(fd, STDERR_FILENO) < 0 ? CTXD_ERR : CTXD_OK;
    close(fd);
    return rc;
}

/* logfmt value: quoted, with quotes and backslashes escaped. */
static void put_logfmt(buf *b, const char *s) {
    buf_puts(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_putn(b, "\\", 1);
        if (*s == '\n')
            buf_puts(b, "\\n");
        else
            buf_putn(b, s, 1);
    }
    buf_puts(b, "\"");
}

static void start_line(buf *b, int level, const char *msg) {
    char ts[UTIL_ISO_LEN];
    util_iso8601(util_now_ms(), ts);
    const char *lv = level_names[level & 3];
    if (format == LOG_FORMAT_JSON) {
        buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, lv);
        buf_put_json_string(b, msg, strlen(msg));
    } else if (format == LOG_FORMAT_LOGFMT) {
        buf_printf(b, "ts=%s level=%s msg=", ts, lv);
        put_logfmt(b, msg);
    } else {
        buf_printf(b, "%s %-5s %s", ts, lv, msg);
    }
}

static void end_line(buf *b) {
    buf_puts(b, format == LOG_FORMAT_JSON ? "}\n" : "\n");
    if (!b->err) {
        ssize_t w = write(STDERR_FILENO, b->data, b->len);
        (void)w;
    }
    buf_free(b);
}

void log_msg(int level, const char *fmt, ...) {
    if (level < min_level) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    buf b;
    buf_init(&b);
    start_line(&b, level, msg);
    end_line(&b);
}

/* One field: "key": value in JSON, key=value otherwise. */
static void put_field(buf *b, const char *key, const char *value) {
    if (format == LOG_FORMAT_JSON) {
        buf_printf(b, ",\"%s\":", key);
        buf_put_json_string(b, value, strlen(value));
    } else {
        buf_printf(b, " %s=", key);
        put_logfmt(b, value);
    }
}

void log_request(int level, const char *method, const char *path, const char *route, int status,
                 double ms, const char *request_id) {
    if (level < min_level) return;
    buf b;
    buf_init(&b);
    start_line(&b, level, "request");
    put_field(&b, "method", method);
    put_field(&b, "path", path);
    put_field(&b, "route", route);
    if (format == LOG_FORMAT_JSON)
        buf_printf(&b, ",\"status\":%d,\"ms\":%.3f", status, ms);
    else
        buf_printf(&b, " status=%d ms=%.3f", status, ms);
    put_field(&b, "request_id", request_id);
    end_line(&b);
}
