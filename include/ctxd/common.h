/* Conventions shared by every ctxd module: return codes and small helpers. */
#ifndef CTXD_COMMON_H
#define CTXD_COMMON_H

#include <stddef.h>

/* Every int-returning ctxd function answers CTXD_OK or CTXD_ERR. */
#define CTXD_OK 0
#define CTXD_ERR -1

#define CTXD_ERRSTR_LEN 256

#define CTXD_UNUSED(x) ((void)(x))

#endif
