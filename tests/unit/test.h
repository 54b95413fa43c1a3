/* test.h: a tiny unit-test harness; each TEST is run by name (one ctest entry). */
#ifndef CTXD_TEST_H
#define CTXD_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;

#define TEST(name) static void name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_ ? a_ : "(null)",   \
                    b_ ? b_ : "(null)");                                                           \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

#define T(fn)                                                                                      \
    { #fn, fn }

/* main: run the case named in argv[1], or every case. */
#define TEST_MAIN(...)                                                                             \
    int main(int argc, char **argv) {                                                              \
        static const test_case cases[] = {__VA_ARGS__};                                            \
        size_t n = sizeof(cases) / sizeof(cases[0]), ran = 0;                                      \
        for (size_t i = 0; i < n; i++) {                                                           \
            if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;                         \
            cases[i].fn();                                                                         \
            ran++;                                                                                 \
        }                                                                                          \
        if (!ran) {                                                                                \
            fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "");                        \
            return 2;                                                                              \
        }                                                                                          \
        return test_failures ? 1 : 0;                                                              \
    }

#endif
