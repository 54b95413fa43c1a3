/* cli: the binary's subcommands (ctxd keys ...). */
#ifndef CTXD_CLI_H
#define CTXD_CLI_H

/* `ctxd keys create|list|revoke ...`, argv[0] being "keys". Settings come
 * from the environment (CTXD_REDIS_URL...). Returns the exit status: 0,
 * 1 when Redis or the key store failed, 2 for a usage error. */
int cli_keys(int argc, char **argv);

#endif
