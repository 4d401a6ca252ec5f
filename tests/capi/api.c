/*
 * The C API against a real runtime, driven by tests/capi.rs:
 *
 *   api all CONFIG VERSION   every call, its errors and its threads
 *   api gone CONFIG          waits on a long task; the test kills the runtime
 *   api absent CONFIG        no runtime where CONFIG says; no such file
 *
 * Each check that fails prints its line and the library's last error, and
 * the program exits 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <chimaera.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "api.c:%d: check failed: %s\n  last error: %s: %s\n", __LINE__,       \
                    #cond, chimaera_status_name(chimaera_last_error_status()),                    \
                    chimaera_last_error_message());                                               \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

#define OK(call) CHECK((call) == CHIMAERA_OK)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void le64(uint64_t v, unsigned char out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(v >> (8 * i));
}

static chimaera_task *submit_sleep(const chimaera_client *c, uint64_t ms)
{
    unsigned char in[8];
    le64(ms, in);
    chimaera_task *t = NULL;
    OK(chimaera_submit(c, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_SLEEP, in, sizeof in, &t));
    CHECK(t != NULL);
    return t;
}

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static void null_arguments(void)
{
    CHECK(chimaera_connect(NULL) == CHIMAERA_ERR_INVALID_ARGUMENT);
    CHECK(chimaera_last_error_status() == CHIMAERA_ERR_INVALID_ARGUMENT);
    CHECK(contains(chimaera_last_error_message(), "NULL"));
    uint64_t rtt;
    CHECK(chimaera_ping(NULL, &rtt) == CHIMAERA_ERR_INVALID_ARGUMENT);
    chimaera_buffer out = {(uint8_t *)&rtt, 99};
    CHECK(chimaera_task_wait(NULL, &out) == CHIMAERA_ERR_INVALID_ARGUMENT);
    CHECK(out.data == NULL && out.len == 0);
    chimaera_task_free(NULL);
    chimaera_client_free(NULL);
    chimaera_buffer_free(NULL);
    chimaera_pool_free(NULL);
    chimaera_pool_list_free(NULL, 0);
    CHECK(strcmp(chimaera_status_name(CHIMAERA_ERR_TIMED_OUT), "CHIMAERA_ERR_TIMED_OUT") == 0);
    CHECK(strcmp(chimaera_status_name(12345), "(not a chimaera status)") == 0);
}

static void calls(const chimaera_client *c)
{
    uint64_t rtt = 0;
    OK(chimaera_ping(c, &rtt));
    CHECK(rtt > 0);

    /* A large echo, byte for byte; an empty one is an empty buffer. */
    size_t n = 100000;
    unsigned char *big = malloc(n);
    CHECK(big != NULL);
    for (size_t i = 0; i < n; i++)
        big[i] = (unsigned char)(i * 7 + 3);
    chimaera_buffer out = {0};
    OK(chimaera_call(c, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, big, n, &out));
    CHECK(out.len == n && memcmp(out.data, big, n) == 0);
    chimaera_buffer_free(&out);
    CHECK(out.data == NULL && out.len == 0);
    chimaera_buffer_free(&out);
    free(big);
    OK(chimaera_call(c, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, NULL, 0, &out));
    CHECK(out.data == NULL && out.len == 0);
    CHECK(chimaera_call(c, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, NULL, 5, &out) ==
          CHIMAERA_ERR_INVALID_ARGUMENT);

    /* The runtime's errors, each with its code and message. */
    CHECK(chimaera_call(c, 9999, 0, NULL, 0, &out) == CHIMAERA_ERR_NO_SUCH_POOL);
    CHECK(chimaera_last_error_status() == CHIMAERA_ERR_NO_SUCH_POOL);
    CHECK(contains(chimaera_last_error_message(), "9999"));
    CHECK(chimaera_call(c, CHIMAERA_ADMIN_POOL, 99, NULL, 0, &out) == CHIMAERA_ERR_MODULE);
    CHECK(chimaera_last_module_status() == 4); /* NO_SUCH_METHOD */
    CHECK(out.data == NULL && out.len == 0);
    /* A success leaves the last error as it was. */
    OK(chimaera_ping(c, &rtt));
    CHECK(chimaera_last_error_status() == CHIMAERA_ERR_MODULE);

    /* A call that outlasts its limit. */
    unsigned char in[8];
    le64(2000, in);
    uint64_t t0 = now_ms();
    CHECK(chimaera_call_timeout(c, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_SLEEP, in, sizeof in, 50,
                                &out) == CHIMAERA_ERR_TIMED_OUT);
    uint64_t took = now_ms() - t0;
    CHECK(took >= 50 && took < 1500);
    /* A limit past what the clock holds is no limit. */
    OK(chimaera_call_timeout(c, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_PING, NULL, 0, UINT64_MAX,
                             &out));
}

static void tasks(const chimaera_client *c)
{
    chimaera_buffer out = {0};
    bool done = true;
    chimaera_task *t = submit_sleep(c, 300);
    OK(chimaera_task_done(t, &done));
    CHECK(!done);
    CHECK(chimaera_task_wait_timeout(t, 10, &out) == CHIMAERA_ERR_TIMED_OUT);
    OK(chimaera_task_wait(t, &out));
    OK(chimaera_task_done(t, &done));
    CHECK(done);
    OK(chimaera_task_wait(t, &out)); /* again: the same (empty) output */
    CHECK(out.len == 0);
    chimaera_task_free(t);

    /* Pipelined: a thousand echoes out at once, then waited in order. */
    enum { N = 1000 };
    static chimaera_task *ts[N];
    for (uint64_t i = 0; i < N; i++) {
        unsigned char v[8];
        le64(i * 2654435761u, v);
        OK(chimaera_submit(c, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, v, sizeof v, &ts[i]));
    }
    for (uint64_t i = 0; i < N; i++) {
        unsigned char v[8];
        le64(i * 2654435761u, v);
        OK(chimaera_task_wait(ts[i], &out));
        CHECK(out.len == 8 && memcmp(out.data, v, 8) == 0);
        chimaera_buffer_free(&out);
        chimaera_task_free(ts[i]);
    }

    /* try_submit refuses when the lanes are full: tasks that hold their
     * worker (SPIN) fill them within a few hundred submissions. */
    enum { MAX = 20000 };
    static chimaera_task *held[MAX];
    unsigned char spin[8];
    le64(20, spin);
    int n = 0;
    chimaera_status s = CHIMAERA_OK;
    while (n < MAX) {
        s = chimaera_try_submit(c, CHIMAERA_ADMIN_POOL, 9, spin, sizeof spin, &held[n]);
        if (s != CHIMAERA_OK)
            break;
        n++;
    }
    CHECK(s == CHIMAERA_ERR_QUEUE_FULL);
    CHECK(held[n] == NULL);
    CHECK(n > 0);
    for (int i = 0; i < n; i++) {
        OK(chimaera_task_wait(held[i], &out));
        chimaera_task_free(held[i]);
    }
    printf("try_submit: QUEUE_FULL after %d tasks\n", n);
}

static void pools(const chimaera_client *c)
{
    chimaera_pool p = {0};
    OK(chimaera_pool_create(c, "capi_ram", "bdev", "{\"kind\":\"ram\",\"size\":\"1M\"}", &p));
    CHECK(p.id > 0 && strcmp(p.name, "capi_ram") == 0 && strcmp(p.module, "bdev") == 0);
    uint32_t id = p.id;
    chimaera_pool_free(&p);
    CHECK(p.name == NULL && p.module == NULL);
    /* Get-or-create: the same name, module and params are the same pool. */
    OK(chimaera_pool_create(c, "capi_ram", "bdev", "{\"size\":\"1M\",\"kind\":\"ram\"}", &p));
    CHECK(p.id == id);
    chimaera_pool_free(&p);
    CHECK(chimaera_pool_create(c, "capi_ram", "bdev", "{\"kind\":\"ram\",\"size\":\"2M\"}", NULL) !=
          CHIMAERA_OK);
    CHECK(contains(chimaera_last_error_message(), "capi_ram"));
    CHECK(chimaera_pool_create(c, "bad name!", "bdev", NULL, NULL) != CHIMAERA_OK);
    CHECK(chimaera_pool_create(c, NULL, "bdev", NULL, NULL) == CHIMAERA_ERR_INVALID_ARGUMENT);

    chimaera_pool *list = NULL;
    size_t count = 0;
    OK(chimaera_pool_list(c, &list, &count));
    int seen = 0;
    CHECK(count >= 2 && list[0].id == 0 && strcmp(list[0].name, "admin") == 0);
    for (size_t i = 0; i < count; i++)
        seen += list[i].id == id && strcmp(list[i].name, "capi_ram") == 0;
    CHECK(seen == 1);
    chimaera_pool_list_free(list, count);

    OK(chimaera_pool_destroy(c, "capi_ram", &p));
    CHECK(p.id == id && strcmp(p.name, "capi_ram") == 0);
    chimaera_pool_free(&p);
    chimaera_status s = chimaera_pool_destroy_id(c, id, &p);
    /* The admin module refuses it (the runtime's NO_SUCH_POOL is for a
     * task addressed to a missing pool). */
    CHECK(s == CHIMAERA_ERR_MODULE && p.name == NULL);
    CHECK(contains(chimaera_last_error_message(), "no pool with id"));
    printf("destroying a destroyed pool: %s: %s\n", chimaera_status_name(s),
           chimaera_last_error_message());
}

struct worker {
    const chimaera_client *client;
    const chimaera_task *shared;
    int index;
    int ok;
    chimaera_status last_before, last_after;
};

static void *echo_worker(void *arg)
{
    struct worker *w = arg;
    w->last_before = chimaera_last_error_status();
    for (int i = 0; i < 2000; i++) {
        char msg[64];
        int len = snprintf(msg, sizeof msg, "thread %d call %d", w->index, i);
        chimaera_buffer out = {0};
        if (chimaera_call(w->client, CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, msg, (size_t)len,
                          &out) != CHIMAERA_OK ||
            out.len != (size_t)len || memcmp(out.data, msg, out.len) != 0)
            return NULL;
        chimaera_buffer_free(&out);
    }
    /* Two threads wait on one task at once. */
    chimaera_buffer out = {0};
    if (chimaera_task_wait(w->shared, &out) != CHIMAERA_OK)
        return NULL;
    /* This thread's own last error. */
    chimaera_call(w->client, 4242, 0, NULL, 0, &out);
    w->last_after = chimaera_last_error_status();
    w->ok = 1;
    return NULL;
}

static void threads(const chimaera_client *c)
{
    enum { T = 4 };
    pthread_t th[T];
    struct worker w[T];
    chimaera_task *shared = submit_sleep(c, 100);
    chimaera_buffer out = {0};
    CHECK(chimaera_call(c, CHIMAERA_ADMIN_POOL, 99, NULL, 0, &out) == CHIMAERA_ERR_MODULE);
    for (int i = 0; i < T; i++) {
        w[i] = (struct worker){c, shared, i, 0, 0, 0};
        CHECK(pthread_create(&th[i], NULL, echo_worker, &w[i]) == 0);
    }
    for (int i = 0; i < T; i++) {
        CHECK(pthread_join(th[i], NULL) == 0);
        CHECK(w[i].ok);
        CHECK(w[i].last_before == CHIMAERA_OK);
        CHECK(w[i].last_after == CHIMAERA_ERR_NO_SUCH_POOL);
    }
    CHECK(chimaera_last_error_status() == CHIMAERA_ERR_MODULE);
    chimaera_task_free(shared);
}

static int all(const char *config, const char *version)
{
    CHECK(strcmp(chimaera_version(), version) == 0);
    null_arguments();
    chimaera_client *c = NULL;
    OK(chimaera_connect_config(config, &c));
    CHECK(c != NULL);
    calls(c);
    tasks(c);
    pools(c);
    threads(c);
    /* A task keeps its connection: the client may go first. */
    chimaera_task *t = submit_sleep(c, 50);
    chimaera_client_free(c);
    chimaera_buffer out = {0};
    OK(chimaera_task_wait(t, &out));
    chimaera_task_free(t);
    printf("all checks passed\n");
    return 0;
}

static int gone(const char *config)
{
    chimaera_client *c = NULL;
    OK(chimaera_connect_config(config, &c));
    chimaera_task *t = submit_sleep(c, 60000);
    printf("waiting\n");
    fflush(stdout);
    chimaera_buffer out = {0};
    chimaera_status s = chimaera_task_wait(t, &out);
    printf("%s: %s\n", chimaera_status_name(s), chimaera_last_error_message());
    chimaera_task_free(t);
    chimaera_client_free(c);
    return s == CHIMAERA_ERR_RUNTIME_GONE ? 0 : 1;
}

static int absent(const char *config)
{
    chimaera_client *c = (chimaera_client *)&c;
    CHECK(chimaera_connect_config(config, &c) == CHIMAERA_ERR_NOT_RUNNING);
    CHECK(c == NULL);
    CHECK(contains(chimaera_last_error_message(), "not running"));
    CHECK(chimaera_connect_config("/nonexistent/chimaera.yaml", &c) == CHIMAERA_ERR_CONFIG);
    CHECK(contains(chimaera_last_error_message(), "/nonexistent/chimaera.yaml"));
    printf("absent checks passed\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "all") == 0)
        return all(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "gone") == 0)
        return gone(argv[2]);
    if (argc == 3 && strcmp(argv[1], "absent") == 0)
        return absent(argv[2]);
    fprintf(stderr, "usage: api all CONFIG VERSION | api gone CONFIG | api absent CONFIG\n");
    return 64;
}
