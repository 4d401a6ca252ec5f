/*
 * echo_c: a chimaera module written in C, loaded by the daemon as a plugin
 * (modules.load: [echo_c] with modules.path naming this directory).
 *
 * Methods:
 *   0 ECHO     output = input
 *   1 REVERSE  output = input reversed, written in place (output_buffer)
 *   2 UPPER    output = input with ASCII letters upper-cased; refuses input
 *              that is not 7-bit text (CHI_BAD_INPUT)
 *   3 CALLS    output = how many tasks this pool ran, u64 little-endian
 *   4 RELAY    submits ECHO of the input to this pool as a subtask, waits
 *              (the task is suspended meanwhile) and outputs its output
 *
 * A pool's parameters may be {"prefix": "..."}: ECHO then prepends it. Any
 * other non-empty parameters are refused, so a typo shows at pool creation.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "chimaera_module.h"

enum { ECHO = 0, REVERSE = 1, UPPER = 2, CALLS = 3, RELAY = 4 };

typedef struct Echo {
    atomic_uint_fast64_t calls; /* run from several workers at once */
    size_t prefix_len;
    uint8_t prefix[64];
} Echo;

static void set_error(ChiErrBuf *err, const char *msg) {
    size_t n = strlen(msg);
    if (n > err->cap)
        n = err->cap;
    memcpy(err->ptr, msg, n);
    err->len = n;
}

/* Reads {"prefix": "..."} (no escapes), or nothing. */
static int parse_params(const uint8_t *p, size_t len, Echo *e) {
    static const char key[] = "{\"prefix\":";
    size_t i = 0, start;
    if (len == 0)
        return 0;
    /* Drop the spaces JSON writers put around ':' and the object, but not
     * those inside the string. */
    char buf[128];
    size_t n = 0;
    int quoted = 0;
    for (i = 0; i < len && n < sizeof(buf) - 1; i++) {
        if (p[i] == '"')
            quoted = !quoted;
        if (quoted || (p[i] != ' ' && p[i] != '\n'))
            buf[n++] = (char)p[i];
    }
    if (i < len)
        return -1;
    buf[n] = 0;
    if (strncmp(buf, key, sizeof(key) - 1) != 0)
        return -1;
    i = sizeof(key) - 1;
    if (buf[i] != '"')
        return -1;
    start = ++i;
    while (i < n && buf[i] != '"' && buf[i] != '\\')
        i++;
    if (i >= n || buf[i] != '"' || strcmp(buf + i, "\"}") != 0)
        return -1;
    if (i - start > sizeof(e->prefix))
        return -1;
    memcpy(e->prefix, buf + start, i - start);
    e->prefix_len = i - start;
    return 0;
}

static int32_t echo_create(const ChiPoolInfo *pool, const uint8_t *params,
                           size_t params_len, void **container,
                           ChiErrBuf *err) {
    (void)pool;
    Echo *e = calloc(1, sizeof(Echo));
    if (!e) {
        set_error(err, "out of memory");
        return CHI_MODULE_ERROR;
    }
    if (parse_params(params, params_len, e) != 0) {
        free(e);
        set_error(err, "echo_c takes no parameters but {\"prefix\": \"...\"} "
                       "(at most 64 bytes, no escapes)");
        return CHI_MODULE_ERROR;
    }
    atomic_init(&e->calls, 0);
    *container = e;
    return CHI_OK;
}

static int32_t echo_run(void *container, const ChiTaskInfo *info,
                        ChiTask *task, const ChiHostApi *host,
                        ChiErrBuf *err) {
    Echo *e = container;
    size_t len = 0;
    const uint8_t *in = host->input(task, &len);
    atomic_fetch_add(&e->calls, 1);
    switch (info->method) {
    case ECHO: {
        uint8_t *out = host->output_buffer(task, e->prefix_len + len);
        if (!out)
            break;
        memcpy(out, e->prefix, e->prefix_len);
        if (len)
            memcpy(out + e->prefix_len, in, len);
        return CHI_OK;
    }
    case REVERSE: {
        uint8_t *out = host->output_buffer(task, len);
        if (!out)
            break;
        for (size_t i = 0; i < len; i++)
            out[i] = in[len - 1 - i];
        return CHI_OK;
    }
    case UPPER: {
        uint8_t *out = host->output_buffer(task, len);
        if (!out)
            break;
        for (size_t i = 0; i < len; i++) {
            if (in[i] > 127) {
                set_error(err, "UPPER takes 7-bit ASCII text");
                return CHI_BAD_INPUT;
            }
            out[i] = (in[i] >= 'a' && in[i] <= 'z') ? in[i] - 32 : in[i];
        }
        return CHI_OK;
    }
    case CALLS: {
        uint64_t n = atomic_load(&e->calls);
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)(n >> (8 * i));
        return host->set_output(task, le, sizeof(le)) == CHI_OK ? CHI_OK
                                                                : CHI_MODULE_ERROR;
    }
    case RELAY: {
        uint32_t sub = 0;
        const uint8_t *out = NULL;
        size_t out_len = 0;
        static const char note[] = "echo_c relays a task to its own pool";
        host->log(task, CHI_LOG_DEBUG, (const uint8_t *)note, sizeof(note) - 1);
        int32_t s = host->submit(task, info->pool_id, ECHO, in, len, 1, &sub);
        if (s != CHI_OK)
            break;
        s = host->wait(task, sub, &out, &out_len);
        if (s != CHI_OK) {
            size_t n = out_len < err->cap ? out_len : err->cap;
            memcpy(err->ptr, out, n);
            err->len = n;
            return s;
        }
        return host->set_output(task, out, out_len);
    }
    default:
        return CHI_NO_SUCH_METHOD;
    }
    /* A host call failed: pass its reason on. */
    size_t n = 0;
    const uint8_t *why = host->last_error(task, &n);
    if (n > err->cap)
        n = err->cap;
    memcpy(err->ptr, why, n);
    err->len = n;
    return CHI_MODULE_ERROR;
}

static uint32_t echo_quick(void *container, uint32_t method) {
    (void)container;
    /* Everything but RELAY is a few bytes of work. */
    return method != RELAY;
}

static void echo_destroy(void *container) { free(container); }

static const ChiModuleDescriptor DESCRIPTOR = {
    .abi_version = CHI_MODULE_ABI_VERSION,
    .descriptor_size = sizeof(ChiModuleDescriptor),
    .layout_hash = CHI_MODULE_LAYOUT_HASH,
    .name = CHI_STR("echo_c"),
    .version = CHI_STR("1.0.0"),
    .sdk_version = CHI_STR(CHI_MODULE_SDK_VERSION),
    .create = echo_create,
    .run = echo_run,
    .quick = echo_quick,
    .destroy = echo_destroy,
};

const ChiModuleDescriptor *chimaera_module_entry(void) { return &DESCRIPTOR; }
