/* config_addr.c: the address settings: where to listen, and where Redis is (never showing a password). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/config.h"

void config_redis_addr(const ctxd_config *cfg, char *out, size_t outlen) {
    if (cfg->redis_socket[0]) {
        snprintf(out, outlen, "%s", cfg->redis_socket);
    } else if (cfg->redis_sentinel_master[0]) {
        size_t n =
            (size_t)snprintf(out, outlen, "sentinel master %s via ", cfg->redis_sentinel_master);
        for (int i = 0; i < cfg->redis_n_sentinels && n < outlen; i++)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s:%d", i ? "," : "",
                                  cfg->redis_sentinels[i].host, cfg->redis_sentinels[i].port);
    } else {
        size_t n = 0;
        for (int i = 0; i < cfg->redis_n_seeds && n < outlen; i++)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s:%d", i ? "," : "",
                                  cfg->redis_seeds[i].host, cfg->redis_seeds[i].port);
        if (!cfg->redis_n_seeds) snprintf(out, outlen, "%s:%d", cfg->redis_host, cfg->redis_port);
    }
}

int config_parse_listen(const char *value, char *host, size_t hostlen, int *port, char *err,
                        size_t errlen) {
    const char *colon = strrchr(value, ':');
    if (!colon || colon == value || colon[1] == '\0') {
        snprintf(err, errlen, "CTXD_LISTEN=%s is not HOST:PORT (for example 127.0.0.1:61909)",
                 value);
        return CTXD_ERR;
    }
    size_t hl = (size_t)(colon - value);
    if (hl >= hostlen) {
        snprintf(err, errlen, "CTXD_LISTEN=%s: host part is too long", value);
        return CTXD_ERR;
    }
    const char *p = colon + 1;
    for (const char *q = p; *q; q++) {
        if (!isdigit((unsigned char)*q)) {
            snprintf(err, errlen,
                     "CTXD_LISTEN=%s: port '%s' is not a number between 1 and "
                     "65535",
                     value, p);
            return CTXD_ERR;
        }
    }
    errno = 0;
    long v = strlen(p) > 9 ? LONG_MAX : strtol(p, NULL, 10);
    if (v < 1 || v > 65535) {
        snprintf(err, errlen,
                 "CTXD_LISTEN=%s: port %s is out of range, TCP ports end at "
                 "65535 (the guides' 619009 is not a valid port; ctxd uses "
                 "61909)",
                 value, p);
        return CTXD_ERR;
    }
    memcpy(host, value, hl);
    host[hl] = '\0';
    /* IPv4 dotted quad or localhost only: the listener is IPv4. */
    if (strcmp(host, "localhost") == 0) {
        snprintf(host, hostlen, "127.0.0.1");
    } else {
        int dots = 0, digits = 0;
        for (const char *q = host; *q; q++) {
            if (*q == '.') {
                if (digits == 0) goto badhost;
                dots++;
                digits = 0;
            } else if (isdigit((unsigned char)*q) && digits < 3) {
                digits++;
            } else {
                goto badhost;
            }
        }
        if (dots != 3 || digits == 0) goto badhost;
    }
    *port = (int)v;
    return CTXD_OK;
badhost:
    snprintf(err, errlen,
             "CTXD_LISTEN=%s: host '%s' must be an IPv4 address such as "
             "127.0.0.1 or 0.0.0.0, or localhost",
             value, host);
    return CTXD_ERR;
}

static int parse_db(const char *s, int *db) {
    if (!*s) return CTXD_OK;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 65535) return CTXD_ERR;
    *db = (int)v;
    return CTXD_OK;
}

/* Decode %XX in place (passwords may hold reserved characters). */
static void percent_decode(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            char hex[3] = {r[1], r[2], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* url with any password replaced by "***", for messages. */
static const char *redact_url(const char *url, char *out, size_t cap) {
    snprintf(out, cap, "%s", url);
    char *scheme = strstr(out, "://");
    char *at = scheme ? strrchr(scheme, '@') : NULL;
    char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    if (at && colon && colon < at) {
        char tail[512];
        snprintf(tail, sizeof(tail), "%s", at);
        snprintf(colon + 1, cap - (size_t)(colon + 1 - out), "***%s", tail);
    }
    char *pw = strstr(out, "password=");
    if (pw) {
        char *end = strchr(pw, '&');
        char tail[512];
        snprintf(tail, sizeof(tail), "%s", end ? end : "");
        snprintf(pw + 9, cap - (size_t)(pw + 9 - out), "***%s", tail);
    }
    return out;
}

/* A port of 1..65535 from s. */
static int parse_port(const char *s, int *port) {
    char *end;
    errno = 0;
    long p = strtol(s, &end, 10);
    if (errno || *end || !*s || !isdigit((unsigned char)*s) || p < 1 || p > 65535) return CTXD_ERR;
    *port = (int)p;
    return CTXD_OK;
}

/* "[user]:password@" before the last '@' of buf, if any, into cfg; *rest
 * gets what follows it. */
static int parse_userinfo(ctxd_config *cfg, char *buf, char **rest) {
    char *at = strrchr(buf, '@');
    *rest = buf;
    if (!at) return CTXD_OK;
    *at = '\0';
    *rest = at + 1;
    char *colon = strchr(buf, ':');
    if (!colon) return CTXD_ERR;
    *colon = '\0';
    if (strlen(buf) >= sizeof(cfg->redis_user) || strlen(colon + 1) >= sizeof(cfg->redis_password))
        return CTXD_ERR;
    memcpy(cfg->redis_user, buf, strlen(buf) + 1);
    memcpy(cfg->redis_password, colon + 1, strlen(colon + 1) + 1);
    percent_decode(cfg->redis_user);
    percent_decode(cfg->redis_password);
    return CTXD_OK;
}

/* "host[:port],host[:port]..." (default_port when none) into hosts (room
 * for max), their number in *n. 1 when a port is out of range, 2 when there
 * are too many, -1 when the list is malformed. */
static int parse_hosts(char *list, int default_port, ctxd_hostport *hosts, int max, int *n) {
    *n = 0;
    for (char *p = list;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (*n == max) return 2;
        ctxd_hostport *hp = &hosts[(*n)++];
        hp->port = default_port;
        char *colon = strrchr(p, ':');
        if (colon) {
            *colon = '\0';
            if (parse_port(colon + 1, &hp->port)) return 1;
        }
        if (!*p || strlen(p) >= sizeof(hp->host)) return -1;
        memcpy(hp->host, p, strlen(p) + 1);
        if (!comma) return 0;
        p = comma + 1;
    }
}

/* redis+sentinel://[[user]:password@]s1[:port][,s2[:port]...]/master[/db]
 * [?sentinel_password=P]: buf is what follows the scheme. 0; 1 with a
 * sentence in err; -1 when malformed (the caller says what is allowed). */
static int parse_sentinel_url(ctxd_config *cfg, char *buf, const char *shown, char *err,
                              size_t errlen) {
    char *q = strchr(buf, '?'), *save = NULL, *hosts, *name;
    if (q) *q++ = '\0';
    for (char *p = q ? strtok_r(q, "&", &save) : NULL; p; p = strtok_r(NULL, "&", &save)) {
        if (strncmp(p, "sentinel_password=", 18) ||
            strlen(p + 18) >= sizeof(cfg->redis_sentinel_password))
            return CTXD_ERR;
        memcpy(cfg->redis_sentinel_password, p + 18, strlen(p + 18) + 1);
        percent_decode(cfg->redis_sentinel_password);
    }
    if (parse_userinfo(cfg, buf, &hosts)) return CTXD_ERR;
    if (!(name = strchr(hosts, '/'))) return CTXD_ERR;
    *name++ = '\0';
    char *db = strchr(name, '/');
    if (db) {
        *db++ = '\0';
        if (!*db || parse_db(db, &cfg->redis_db)) return CTXD_ERR;
    }
    if (!*name || strlen(name) >= sizeof(cfg->redis_sentinel_master)) return CTXD_ERR;
    memcpy(cfg->redis_sentinel_master, name, strlen(name) + 1);
    percent_decode(cfg->redis_sentinel_master);
    int rc = parse_hosts(hosts, 26379, cfg->redis_sentinels, CTXD_SENTINELS_MAX,
                         &cfg->redis_n_sentinels);
    if (rc == 1)
        snprintf(err, errlen, "CTXD_REDIS_URL=%s: a Sentinel's port must be between 1 and 65535",
                 shown);
    else if (rc == 2)
        snprintf(err, errlen, "CTXD_REDIS_URL=%s names more than %d Sentinels", shown,
                 CTXD_SENTINELS_MAX);
    if (rc > 0) return 1;
    return rc ? CTXD_ERR : CTXD_OK;
}

int config_parse_redis_url(ctxd_config *cfg, const char *url, char *err, size_t errlen) {
    char buf[512], shown[600];
    const char *allowed = "redis://[[user]:password@]host[:port][,host[:port]...][/db], "
                          "unix:///path/to/redis.sock[?db=N][&password=P] or "
                          "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]"
                          "/master-name[/db][?sentinel_password=P]";
    if (strlen(url) >= sizeof(buf)) {
        snprintf(err, errlen, "CTXD_REDIS_URL is too long (max %zu bytes)", sizeof(buf) - 1);
        return CTXD_ERR;
    }
    snprintf(cfg->redis_url, sizeof(cfg->redis_url), "%s", url);
    cfg->redis_host[0] = cfg->redis_socket[0] = '\0';
    cfg->redis_user[0] = cfg->redis_password[0] = '\0';
    cfg->redis_sentinel_master[0] = cfg->redis_sentinel_password[0] = '\0';
    cfg->redis_n_sentinels = cfg->redis_n_seeds = 0;
    cfg->redis_port = 6379;
    cfg->redis_db = 0;

    if (strncmp(url, "redis+sentinel://", 17) == 0) {
        snprintf(buf, sizeof(buf), "%s", url + 17);
        int rc = parse_sentinel_url(cfg, buf, redact_url(url, shown, sizeof(shown)), err, errlen);
        cfg->redis_port = 0;
        if (rc == 0) return CTXD_OK;
        cfg->redis_sentinel_master[0] = '\0';
        if (rc == 1) return CTXD_ERR; /* err says why */
        goto bad;
    }

    if (strncmp(url, "unix://", 7) == 0 || strncmp(url, "redis+unix://", 13) == 0) {
        snprintf(buf, sizeof(buf), "%s", strstr(url, "://") + 3);
        char *q = strchr(buf, '?'), *save = NULL;
        if (q) *q++ = '\0';
        for (char *p = q ? strtok_r(q, "&", &save) : NULL; p; p = strtok_r(NULL, "&", &save)) {
            if (!strncmp(p, "db=", 3)) {
                if (parse_db(p + 3, &cfg->redis_db)) goto bad;
            } else if (!strncmp(p, "password=", 9) && strlen(p + 9) < sizeof(cfg->redis_password)) {
                memcpy(cfg->redis_password, p + 9, strlen(p + 9) + 1);
                percent_decode(cfg->redis_password);
            } else {
                goto bad;
            }
        }
        if (buf[0] != '/' || strlen(buf) >= sizeof(cfg->redis_socket)) goto bad;
        memcpy(cfg->redis_socket, buf, strlen(buf) + 1);
        return CTXD_OK;
    }
    if (strncmp(url, "redis://", 8) != 0) goto bad;
    snprintf(buf, sizeof(buf), "%s", url + 8);

    char *hostpart;
    if (parse_userinfo(cfg, buf, &hostpart)) goto bad;
    char *slash = strchr(hostpart, '/');
    if (slash) {
        *slash = '\0';
        if (parse_db(slash + 1, &cfg->redis_db)) goto bad;
    }
    /* One node, or seed nodes of a Redis Cluster: "h1:p1,h2:p2". */
    int rc = parse_hosts(hostpart, 6379, cfg->redis_seeds, CTXD_SEEDS_MAX, &cfg->redis_n_seeds);
    if (rc == 1) {
        snprintf(err, errlen, "CTXD_REDIS_URL=%s: port must be between 1 and 65535",
                 redact_url(url, shown, sizeof(shown)));
        return CTXD_ERR;
    }
    if (rc == 2) {
        snprintf(err, errlen, "CTXD_REDIS_URL=%s names more than %d nodes",
                 redact_url(url, shown, sizeof(shown)), CTXD_SEEDS_MAX);
        return CTXD_ERR;
    }
    if (rc) goto bad;
    memcpy(cfg->redis_host, cfg->redis_seeds[0].host, sizeof(cfg->redis_host));
    cfg->redis_port = cfg->redis_seeds[0].port;
    return CTXD_OK;
bad:
    snprintf(err, errlen, "CTXD_REDIS_URL=%s is not valid; use %s",
             redact_url(url, shown, sizeof(shown)), allowed);
    return CTXD_ERR;
}
