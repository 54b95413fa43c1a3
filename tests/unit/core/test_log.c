/* test_log.c: log lines in each format, one write each, levels filtered. */
#include "../../../src/core/log.c"

#include <fcntl.h>
#include <stdlib.h>

#include "../test.h"

/* Run fn with stderr sent to a temp file; return what it wrote (free it). */
static char *capture(void (*fn)(void)) {
    char path[] = "/tmp/ctxd-log-XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)n + 1);
    if (pread(fd, out, (size_t)n, 0) < 0) out[0] = '\0';
    close(fd);
    unlink(path);
    return out;
}

static void write_lines(void) {
    log_msg(LOG_DEBUG, "hidden %d", 1);
    log_msg(LOG_WARN, "quote \" and\nnewline");
    log_request(LOG_INFO, "POST", "/mcp/context", "/mcp/context", 201, 1.5, "rid-1");
}

TEST(test_log_json_lines) {
    log_set_level(LOG_INFO);
    log_set_format(LOG_FORMAT_JSON);
    char *out = capture(write_lines);
    CHECK(strstr(out, "hidden") == NULL);
    CHECK(strstr(out, "\"level\":\"warn\",\"msg\":\"quote \\\" and\\nnewline\"}\n") != NULL);
    CHECK(strstr(out, "\"msg\":\"request\",\"method\":\"POST\",\"path\":\"/mcp/context\","
                      "\"route\":\"/mcp/context\",\"status\":201,\"ms\":1.500,"
                      "\"request_id\":\"rid-1\"}\n") != NULL);
    free(out);
}

TEST(test_log_logfmt_and_text) {
    log_set_level(LOG_DEBUG);
    log_set_format(LOG_FORMAT_LOGFMT);
    char *out = capture(write_lines);
    CHECK(strstr(out, "level=debug msg=\"hidden 1\"\n") != NULL);
    CHECK(strstr(out, "msg=\"quote \\\" and\\nnewline\"") != NULL);
    CHECK(strstr(out, " status=201 ms=1.500 request_id=\"rid-1\"\n") != NULL);
    free(out);
    log_set_format(LOG_FORMAT_TEXT);
    out = capture(write_lines);
    CHECK(strstr(out, "warn  quote \" and\nnewline\n") != NULL);
    free(out);
}

TEST_MAIN(T(test_log_json_lines), T(test_log_logfmt_and_text))
