/* fake_upstream.h: start tests/fakes/fake_upstream.py from a C unit test and talk to its admin API. */
#ifndef CTXD_FAKE_UPSTREAM_H
#define CTXD_FAKE_UPSTREAM_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "ctxd/llm.h"
#include <unistd.h>

typedef struct fake_upstream {
    pid_t pid;
    int port;
    char url[64]; /* http://127.0.0.1:<port> */
} fake_upstream;

/* The source tree: $CTXD_SOURCE_DIR, else derived from this file's path. */
static void fake_source_dir(char *out, size_t cap) {
    const char *env = getenv("CTXD_SOURCE_DIR");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    snprintf(out, cap, "%s", __FILE__);
    char *p = strstr(out, "/tests/"); /* __FILE__ may read tests/unit/../fakes */
    if (p)
        *p = '\0';
    else
        snprintf(out, cap, ".");
}

static void fake_stop(fake_upstream *f);
static fake_upstream *fake_running;
static void fake_stop_at_exit(void) {
    if (fake_running) fake_stop(fake_running);
}

/* Start the fake on a free port with the given extra arguments (NULL-ended
 * list, may be NULL); it is stopped at exit. Returns 0, or -1 with a
 * message on stderr. */
static int fake_start(fake_upstream *f, const char *const *extra) {
    char dir[512], script[600];
    int fds[2];
    fake_source_dir(dir, sizeof(dir));
    snprintf(script, sizeof(script), "%s/tests/fakes/fake_upstream.py", dir);
    if (pipe(fds)) return -1;
    f->pid = fork();
    if (f->pid < 0) return -1;
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the test */
        const char *argv[16] = {"/usr/bin/python3", script, "--port", "0"};
        int n = 4;
        for (int i = 0; extra && extra[i] && n < 15; i++) argv[n++] = extra[i];
        argv[n] = NULL;
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char line[64] = "";
    size_t len = 0;
    while (len + 1 < sizeof(line)) {
        ssize_t r = read(fds[0], line + len, 1);
        if (r <= 0 || line[len] == '\n') break;
        len++;
    }
    line[len] = '\0';
    close(fds[0]);
    if (sscanf(line, "PORT %d", &f->port) != 1) {
        fprintf(stderr, "fake_upstream did not start (%s): first line '%s'\n", script, line);
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        return -1;
    }
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->port);
    if (!fake_running) atexit(fake_stop_at_exit);
    fake_running = f;
    return 0;
}

static void fake_stop(fake_upstream *f) {
    if (fake_running == f) fake_running = NULL;
    if (f->pid > 0) {
        kill(f->pid, SIGTERM);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
}

/* One admin call (plain HTTP/1.0 over a socket). Returns the response body
 * (malloc'd, caller frees) or NULL. */
static char *fake_admin(const fake_upstream *f, const char *method, const char *path,
                        const char *body) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return NULL;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)f->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
        close(s);
        return NULL;
    }
    size_t bl = body ? strlen(body) : 0;
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: "
                      "application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, bl);
    if (write(s, head, (size_t)hl) != hl || (bl && write(s, body, bl) != (ssize_t)bl)) {
        close(s);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(s, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    close(s);
    if (!buf) return NULL;
    buf[len] = '\0';
    char *start = strstr(buf, "\r\n\r\n");
    if (!start) {
        free(buf);
        return NULL;
    }
    memmove(buf, start + 4, strlen(start + 4) + 1);
    return buf;
}

/* Queue behaviours (a JSON list). Returns 0 or -1. */
static int fake_script(const fake_upstream *f, const char *json) {
    char *r = fake_admin(f, "POST", "/_admin/script", json);
    free(r);
    return r ? 0 : -1;
}

static int fake_reset(const fake_upstream *f) {
    char *r = fake_admin(f, "POST", "/_admin/reset", "{}");
    free(r);
    return r ? 0 : -1;
}

/* The recorded requests as JSON text (caller frees). */
static char *fake_requests(const fake_upstream *f) {
    return fake_admin(f, "GET", "/_admin/requests", NULL);
}

/* How many model requests the fake has recorded since its last reset. */
static int fake_count_requests(const fake_upstream *f) {
    char *r = fake_requests(f);
    int n = 0;
    for (const char *p = r; p && (p = strstr(p, "\"method\"")); p++) n++;
    free(r);
    return n;
}

/* One llm_complete with a fresh client for cfg; resp is initialised here. */
static int fake_llm_call(ctxd_config *cfg, llm_request *req, llm_response *resp) {
    llm_client *c = llm_client_new(cfg);
    llm_response_init(resp);
    int rc = llm_complete(c, req, resp);
    llm_client_free(c);
    return rc;
}

#endif
