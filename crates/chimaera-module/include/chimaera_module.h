/*
 * chimaera_module.h: the C ABI of a chimaera module library (a plugin).
 *
 * The daemon loads a module from a shared library named in its
 * configuration (`modules.load`). The library exports one function,
 * `chimaera_module_entry`, returning a pointer to a static
 * ChiModuleDescriptor: the ABI it was built for, the module's name and
 * version, and its functions. The daemon refuses a library whose
 * abi_version or layout_hash differ from its own, before anything runs.
 *
 * This header is the Rust crate chimaera-module's src/abi.rs for C and C++;
 * a test compiles it and compares every size, offset and constant with the
 * Rust definitions. Build a module against it with, e.g.,
 *
 *     cc -shared -fPIC -I<this directory> -o libmymod.so mymod.c
 *
 * and see examples/plugins/echo_c for a complete one.
 *
 * Conventions:
 *   - byte strings are pointer and length (ChiStr), never NUL-terminated;
 *     text is UTF-8;
 *   - nothing allocated on one side is freed on the other: a module writes
 *     error text into the host's ChiErrBuf, and what a host function returns
 *     stays valid until the task's `run` returns unless said otherwise;
 *   - `run` and `quick` may be called from several threads at once for the
 *     same container: a container guards its own state;
 *   - `run` may be suspended inside yield_now, wait or submit and resumed
 *     later on the same thread: hold no lock across those calls;
 *   - no C++ exception may leave an exported function (catch everything in
 *     `run` and return CHI_MODULE_ERROR);
 *   - a crash in a module is a crash of the daemon: the daemon contains Rust
 *     panics and checks the ABI, but native code runs in its process.
 */
#ifndef CHIMAERA_MODULE_H
#define CHIMAERA_MODULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes; the daemon loads only its own. */
#define CHI_MODULE_ABI_VERSION 1u
/* FNV-1a of every struct's size, alignment and field offsets (see abi.rs). */
#define CHI_MODULE_LAYOUT_HASH 0x1393410b3662ddf0ull
/* The chimaera-module SDK version this header belongs to. */
#define CHI_MODULE_SDK_VERSION "0.1.0"
/* The one symbol a module library exports. */
#define CHI_MODULE_ENTRY_SYMBOL "chimaera_module_entry"

/* Status codes: 0, or why a task (or a host call) did not succeed. They are
 * the task statuses a client sees. */
#define CHI_OK 0
#define CHI_TIMED_OUT 1
#define CHI_MODULE_ERROR 2
#define CHI_NO_SUCH_METHOD 4
#define CHI_BAD_INPUT 6

/* Log levels of ChiHostApi.log, most severe first. */
#define CHI_LOG_ERROR 0u
#define CHI_LOG_WARNING 1u
#define CHI_LOG_INFO 2u
#define CHI_LOG_DEBUG 3u
#define CHI_LOG_TRACE 4u

/* Bytes: `len` bytes at `ptr` (ptr may be NULL when len is 0). */
typedef struct ChiStr {
    const uint8_t *ptr;
    size_t len;
} ChiStr;

/* The host's buffer for a module's error text: write at most `cap` bytes at
 * `ptr`, then set `len`. */
typedef struct ChiErrBuf {
    uint8_t *ptr;
    size_t cap;
    size_t len;
} ChiErrBuf;

/* The pool a container is created for. */
typedef struct ChiPoolInfo {
    uint32_t id;
    uint32_t reserved;
    ChiStr name;
    ChiStr module;
} ChiPoolInfo;

/* The task `run` runs. */
typedef struct ChiTaskInfo {
    uint32_t pool_id;
    uint32_t method;
    uint32_t worker;      /* 0xffffffff: the network thread */
    uint32_t record;      /* the task's record, for diagnostics */
    uint64_t deadline_ns; /* CLOCK_MONOTONIC ns of the client's timeout */
} ChiTaskInfo;

/* The running task: only ever passed back to the host's functions. */
typedef struct ChiTask ChiTask;

/* The host's functions, handed to every `run`. Call them only during that
 * `run`, on its thread, with the task it was given. */
typedef struct ChiHostApi {
    size_t struct_size;
    /* The input (length in *len); valid until `run` returns. */
    const uint8_t *(*input)(ChiTask *task, size_t *len);
    /* The input's length, without copying it. */
    size_t (*input_len)(ChiTask *task);
    /* Copies input bytes from `at` into dst (at most cap); returns how many. */
    size_t (*read_input)(ChiTask *task, size_t at, uint8_t *dst, size_t cap);
    /* Sets the output (replacing any set before): CHI_OK or a status, the
     * reason in last_error. */
    int32_t (*set_output)(ChiTask *task, const uint8_t *ptr, size_t len);
    /* A zeroed output of len bytes to fill in place, the output if `run`
     * returns CHI_OK; valid until the next set_output/output_buffer. NULL,
     * the reason in last_error, if refused. */
    uint8_t *(*output_buffer)(ChiTask *task, size_t len);
    /* Lets other tasks run; this one goes on at its worker's next pass. */
    void (*yield_now)(ChiTask *task);
    /* Submits a subtask (to this worker's lane if local != 0); its id in
     * *sub. CHI_OK or a status, the reason in last_error. */
    int32_t (*submit)(ChiTask *task, uint32_t pool, uint32_t method,
                      const uint8_t *input, size_t len, uint32_t local,
                      uint32_t *sub);
    /* Suspends the task until subtask `sub` completes: CHI_OK and its
     * output in *out and *out_len, or a status and the reason there. Valid
     * until `run` returns. */
    int32_t (*wait)(ChiTask *task, uint32_t sub, const uint8_t **out,
                    size_t *out_len);
    /* CLOCK_MONOTONIC ns after which the client gets a timeout. */
    uint64_t (*deadline_ns)(ChiTask *task);
    /* A line in the daemon's log at a CHI_LOG_* level. */
    void (*log)(ChiTask *task, uint32_t level, const uint8_t *msg, size_t len);
    /* Why the last failed host call failed; valid until the next call. */
    const uint8_t *(*last_error)(ChiTask *task, size_t *len);
} ChiHostApi;

/* Makes the container of a new pool; *container is what `run` gets (may be
 * NULL). CHI_OK, or a status with the reason written into err. */
typedef int32_t (*ChiCreateFn)(const ChiPoolInfo *pool, const uint8_t *params,
                               size_t params_len, void **container,
                               ChiErrBuf *err);
/* Runs a task: CHI_OK, or a status with the reason written into err. */
typedef int32_t (*ChiRunFn)(void *container, const ChiTaskInfo *info,
                            ChiTask *task, const ChiHostApi *host,
                            ChiErrBuf *err);
/* Non-zero if `method` never blocks its thread; NULL: never. */
typedef uint32_t (*ChiQuickFn)(void *container, uint32_t method);
/* Frees a container, once, after its pool is gone and its last task
 * returned; NULL: nothing to free. */
typedef void (*ChiDestroyFn)(void *container);

/* What chimaera_module_entry returns: static, read once. */
typedef struct ChiModuleDescriptor {
    uint32_t abi_version;     /* CHI_MODULE_ABI_VERSION */
    uint32_t descriptor_size; /* sizeof(ChiModuleDescriptor) */
    uint64_t layout_hash;     /* CHI_MODULE_LAYOUT_HASH */
    ChiStr name;              /* the module's name, as pools name it */
    ChiStr version;           /* the module's own version */
    ChiStr sdk_version;       /* CHI_MODULE_SDK_VERSION */
    ChiCreateFn create;       /* required */
    ChiRunFn run;             /* required */
    ChiQuickFn quick;         /* optional */
    ChiDestroyFn destroy;     /* optional */
} ChiModuleDescriptor;

typedef const ChiModuleDescriptor *(*ChiModuleEntryFn)(void);

/* Writes a C string literal as a ChiStr. */
#define CHI_STR(literal) \
    { (const uint8_t *)(literal), sizeof(literal) - 1 }

/* Exported even from a library built with -fvisibility=hidden. */
#if defined(__GNUC__) || defined(__clang__)
#define CHI_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define CHI_MODULE_EXPORT
#endif

/* The entry function a module library defines:
 *     const ChiModuleDescriptor *chimaera_module_entry(void) { ... } */
CHI_MODULE_EXPORT const ChiModuleDescriptor *chimaera_module_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* CHIMAERA_MODULE_H */
