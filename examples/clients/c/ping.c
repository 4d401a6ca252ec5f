/*
 * ping.c: the round trip of a C client to the chimaera runtime on this host.
 *
 *   cc ping.c $(pkg-config --cflags --libs chimaera) -o chimaera-ping-c
 *   ./chimaera-ping-c [-n COUNT] [--json] [--config FILE]
 *
 * Checks the runtime with an echo, then times COUNT synchronous admin pings
 * (chimaera_call, measured here around the call, so the C boundary is in
 * the figure) after a warm-up of 1000, and prints min, median, p99 and max;
 * --json prints them as one JSON object, in the same fields as
 * `chimaera ping --json` (count, min_ns, p50_ns, p99_ns, max_ns).
 *
 * Exit status: 0 on success, 69 when the runtime cannot be reached or a
 * call fails, 64 on a usage error.
 */
#define _POSIX_C_SOURCE 200809L

#include <chimaera.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EX_USAGE 64
#define EX_UNAVAILABLE 69
#define WARMUP 1000

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The sample at fraction p of the sorted samples (nearest rank), as
 * `chimaera ping` computes it. */
static uint64_t percentile(const uint64_t *sorted, size_t n, double p)
{
    size_t i = (size_t)((double)(n - 1) * p + 0.5);
    return sorted[i < n ? i : n - 1];
}

static int fail(const char *what, chimaera_status s)
{
    fprintf(stderr, "chimaera-ping-c: %s: %s (%s)\n", what, chimaera_last_error_message(),
            chimaera_status_name(s));
    return EX_UNAVAILABLE;
}

static int usage(void)
{
    fprintf(stderr, "usage: chimaera-ping-c [-n COUNT] [--json] [--config FILE]\n");
    return EX_USAGE;
}

int main(int argc, char **argv)
{
    long count = 10000;
    int json = 0;
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            char *end;
            count = strtol(argv[++i], &end, 10);
            if (*end != '\0' || count < 1)
                return usage();
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else {
            return usage();
        }
    }

    chimaera_client *client = NULL;
    chimaera_status s = chimaera_connect_config(config, &client);
    if (s != CHIMAERA_OK)
        return fail("cannot connect", s);

    int code = 0;
    chimaera_buffer out = {0};
    uint64_t *rtts = malloc((size_t)count * sizeof *rtts);
    if (rtts == NULL) {
        fprintf(stderr, "chimaera-ping-c: no memory for %ld samples\n", count);
        code = EX_UNAVAILABLE;
        goto done;
    }
    static const char hello[] = "hello from C";
    s = chimaera_call(client, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, hello, sizeof hello - 1,
                      &out);
    if (s != CHIMAERA_OK) {
        code = fail("echo", s);
        goto done;
    }
    if (out.len != sizeof hello - 1 || memcmp(out.data, hello, out.len) != 0) {
        fprintf(stderr, "chimaera-ping-c: the echo came back different\n");
        code = EX_UNAVAILABLE;
        goto done;
    }
    chimaera_buffer_free(&out);

    for (long i = -WARMUP; i < count; i++) {
        uint64_t t = now_ns();
        s = chimaera_call(client, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_PING, NULL, 0, &out);
        uint64_t dt = now_ns() - t;
        if (s != CHIMAERA_OK) {
            code = fail("ping", s);
            goto done;
        }
        chimaera_buffer_free(&out);
        if (i >= 0)
            rtts[i] = dt;
    }

    qsort(rtts, (size_t)count, sizeof *rtts, cmp_u64);
    size_t n = (size_t)count;
    uint64_t min = rtts[0], p50 = percentile(rtts, n, 0.5), p99 = percentile(rtts, n, 0.99),
             max = rtts[n - 1];
    if (json) {
        printf("{\"client\":\"c\",\"library\":\"%s\",\"count\":%ld,\"min_ns\":%llu,"
               "\"p50_ns\":%llu,\"p99_ns\":%llu,\"max_ns\":%llu}\n",
               chimaera_version(), count, (unsigned long long)min, (unsigned long long)p50,
               (unsigned long long)p99, (unsigned long long)max);
    } else {
        printf("%ld pings from C (libchimaera %s): min %.1f us, median %.1f us, p99 %.1f us, "
               "max %.1f us\n",
               count, chimaera_version(), min / 1e3, p50 / 1e3, p99 / 1e3, max / 1e3);
    }

done:
    chimaera_buffer_free(&out);
    free(rtts);
    chimaera_client_free(client);
    return code;
}
