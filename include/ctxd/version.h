/* ctxd version: the one place the version number lives (CMake reads it). */
#ifndef CTXD_VERSION_H
#define CTXD_VERSION_H

#define CTXD_VERSION_MAJOR 0
#define CTXD_VERSION_MINOR 4
#define CTXD_VERSION_PATCH 0
#define CTXD_VERSION "0.4.0"

#endif
