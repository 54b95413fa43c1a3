/* log: leveled log lines to stderr, safe from any thread. */
#ifndef CTXD_LOG_H
#define CTXD_LOG_H

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Set the lowest level written (set once at start, before threads). */
void log_set_level(int level);
int log_enabled(int level);

/* Write one line: time, level, message. Never pass secrets or message
 * bodies above LOG_DEBUG. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
