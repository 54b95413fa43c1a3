/* redis_fixture.h: a private redis-server on a unix socket in a temp dir, for one test case. */
#ifndef CTXD_REDIS_FIXTURE_H
#define CTXD_REDIS_FIXTURE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctxd/config.h"

/* Like hiredis' own test.sh: no port, no persistence, one socket in a fresh
 * directory. Skips (exit 77) when redis-server is not installed; any other
 * start failure fails the case. */
typedef struct redis_fixture {
    pid_t pid;
    char dir[64];      /* mkdtemp */
    char sock[128];    /* <dir>/redis.sock */
    ctxd_config cfg;   /* config_load defaults, redis_url = unix://<sock> */
    redisContext *raw; /* a plain hiredis connection for checks */
} redis_fixture;

#define RF_SKIP 77

/* What exit must clean up if a case ends early (exit, a failed start). */
static pid_t rf_live_pid;
static char rf_live_dir[64];
static int rf_registered;

static inline int rf_in_path(const char *prog) {
    const char *path = getenv("PATH");
    char dirs[4096], file[4200], *save = NULL;
    snprintf(dirs, sizeof(dirs), "%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(file, sizeof(file), "%s/%s", d, prog);
        if (access(file, X_OK) == 0) return 1;
    }
    return 0;
}

/* Remove the files redis-server and the tests leave in dir, then dir. */
static inline void rf_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Kill the server (the dir stays: a restart may reuse it). */
static inline void rf_kill(redis_fixture *f) {
    if (f->raw) redisFree(f->raw);
    f->raw = NULL;
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
    rf_live_pid = 0;
    unlink(f->sock);
}

static inline void rf_at_exit(void) {
    if (rf_live_pid > 0) {
        kill(rf_live_pid, SIGKILL);
        waitpid(rf_live_pid, NULL, 0);
        rf_live_pid = 0;
    }
    if (rf_live_dir[0]) rf_rmdir(rf_live_dir);
    rf_live_dir[0] = '\0';
}

/* Print the server's log, for a start that failed. */
static inline void rf_dump_log(const redis_fixture *f) {
    char path[200], line[512];
    snprintf(path, sizeof(path), "%s/redis.log", f->dir);
    FILE *fp = fopen(path, "r");
    if (!fp) return;
    while (fgets(line, sizeof(line), fp)) fprintf(stderr, "  redis-server: %s", line);
    fclose(fp);
}

/* Start redis-server in f->dir and wait (up to 10 s) until it answers PING
 * on f->raw. Returns 0, or -1 with a message on stderr. */
static inline int rf_spawn(redis_fixture *f) {
    char log[200];
    snprintf(log, sizeof(log), "%s/redis.log", f->dir);
    pid_t parent = getpid();
    f->pid = fork();
    if (f->pid < 0) return -1;
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  /* never outlive the test */
        if (getppid() != parent) _exit(1); /* it died before prctl */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", f->sock,
               "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no",
               "--dir", f->dir, (char *)NULL);
        _exit(127);
    }
    rf_live_pid = f->pid;
    for (int i = 0; i < 1000; i++) {
        int status;
        if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
            fprintf(stderr, "redis-server exited at start (status %d)\n", status);
            rf_dump_log(f);
            f->pid = rf_live_pid = 0;
            return -1;
        }
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectUnixWithTimeout(f->sock, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            int up = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
            if (r) freeReplyObject(r);
            if (up) {
                f->raw = c;
                return 0;
            }
        }
        if (c) redisFree(c);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "redis-server at %s did not answer PING within 10 s\n", f->sock);
    rf_dump_log(f);
    rf_kill(f);
    return -1;
}

/* Drop the environment's say (CTXD_*, API keys) so config_load gives the
 * defaults with the echo provider. */
static inline void rf_clear_env(void) {
    extern char **environ;
    char names[64][128];
    int n;
    do {
        n = 0;
        for (char **e = environ; *e && n < 64; e++) {
            const char *eq = strchr(*e, '=');
            if (!eq || (size_t)(eq - *e) >= sizeof(names[0])) continue;
            if (strncmp(*e, "CTXD_", 5) && strncmp(*e, "ANTHROPIC_", 10) &&
                strncmp(*e, "OPENAI_", 7))
                continue;
            snprintf(names[n++], sizeof(names[0]), "%.*s", (int)(eq - *e), *e);
        }
        for (int i = 0; i < n; i++) unsetenv(names[i]);
    } while (n == 64);
}

/* Start a server for this case and fill f->cfg for it. Exits 77 when
 * redis-server is not installed, 1 when it would not start. Stop it with
 * rf_stop (else it is stopped at exit). */
static inline void rf_start(redis_fixture *f) {
    char err[512] = "", url[200];
    int exit_now = 0;
    char *argv[] = {(char *)"ctxd", NULL};
    memset(f, 0, sizeof(*f));
    signal(SIGPIPE, SIG_IGN); /* as main.c: a dead server is an error, not a signal */
    if (!rf_in_path("redis-server")) {
        fprintf(stderr, "skipped: redis-server is not installed (not found in PATH)\n");
        exit(RF_SKIP);
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/ctxd-unit-redis-XXXXXX");
    if (!mkdtemp(f->dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        exit(1);
    }
    snprintf(f->sock, sizeof(f->sock), "%s/redis.sock", f->dir);
    rf_at_exit(); /* an earlier case's, if it did not stop it */
    snprintf(rf_live_dir, sizeof(rf_live_dir), "%s", f->dir);
    if (!rf_registered++) atexit(rf_at_exit);
    if (rf_spawn(f)) exit(1);
    rf_clear_env();
    if (config_load(&f->cfg, 1, argv, err, sizeof(err), &exit_now)) {
        fprintf(stderr, "config_load: %s\n", err);
        exit(1);
    }
    snprintf(url, sizeof(url), "unix://%s", f->sock);
    if (config_parse_redis_url(&f->cfg, url, err, sizeof(err))) {
        fprintf(stderr, "config_parse_redis_url: %s\n", err);
        exit(1);
    }
    f->cfg.redis_timeout_ms = 2000;
}

/* Kill the server and start a new one on the same socket (same config). */
static inline void rf_restart(redis_fixture *f) {
    rf_kill(f);
    if (rf_spawn(f)) exit(1);
}

static inline void rf_stop(redis_fixture *f) {
    rf_kill(f);
    rf_rmdir(f->dir);
    config_free(&f->cfg);
    rf_live_dir[0] = '\0';
}

/* ---- Raw checks, straight to Redis (not through the store) ---- */

/* A command's reply (caller frees), or NULL after printing why. */
static inline redisReply *rf_cmd(redis_fixture *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->raw, fmt, ap);
    va_end(ap);
    if (!r) fprintf(stderr, "raw redis command failed: %s\n", f->raw->errstr);
    return r;
}

/* An integer reply, or RF_NOT_INT for anything else. */
#define RF_NOT_INT LLONG_MIN
static inline long long rf_int(redis_fixture *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->raw, fmt, ap);
    va_end(ap);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : RF_NOT_INT;
    if (r) freeReplyObject(r);
    return v;
}

/* A string reply copied into out ("" for nil or anything else); returns 1
 * when it was a string. */
static inline int rf_str(redis_fixture *f, char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->raw, fmt, ap);
    va_end(ap);
    int ok = r && r->type == REDIS_REPLY_STRING;
    snprintf(out, cap, "%s", ok ? r->str : "");
    if (r) freeReplyObject(r);
    return ok;
}

/* How many keys match pattern. */
static inline long long rf_count_keys(redis_fixture *f, const char *pattern) {
    redisReply *r = rf_cmd(f, "KEYS %s", pattern);
    long long n = r && r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : -1;
    if (r) freeReplyObject(r);
    return n;
}

#endif
