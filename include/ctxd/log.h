/* log: one line per event on stderr (or a file), JSON lines, logfmt or text. */
#ifndef CTXD_LOG_H
#define CTXD_LOG_H

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };
enum { LOG_FORMAT_JSON = 0, LOG_FORMAT_LOGFMT = 1, LOG_FORMAT_TEXT = 2 };

/* Set the lowest level written and the line format (once at start, before
 * threads). */
void log_set_level(int level);
void log_set_format(int format);

/* Send the log to path (appending) instead of stderr; log_reopen opens it
 * again (after rotation, on SIGHUP). CTXD_ERR with errno set on failure. */
int log_open_file(const char *path);
int log_reopen(void);

/* Write one line. Never pass secrets or message bodies above LOG_DEBUG. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The access line of one request. */
void log_request(int level, const char *method, const char *path, const char *route, int status,
                 double ms, const char *request_id);

#endif
