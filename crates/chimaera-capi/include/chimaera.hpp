// chimaera.hpp: a header-only C++17 wrapper of chimaera.h. Handles free
// themselves (RAII, move-only); failures throw chimaera::Error, which
// carries the library's status and message. Thread safety is chimaera.h's:
// a Client may be shared by threads; a Task may be waited on from several.
//
//     chimaera::Client client;                     // CHI_SERVER_CONF, /etc/chimaera, defaults
//     auto echo = client.call(CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, "hi");
//     chimaera::Task task = client.submit(pool, method, input);
//     chimaera::Output out = task.wait();          // out.data(), out.size(), out.str()
//
// Build: c++ -std=c++17 prog.cpp $(pkg-config --cflags --libs chimaera)
// Not generated: tests/capi.rs compiles it and runs examples/clients/cpp.

#ifndef CHIMAERA_HPP
#define CHIMAERA_HPP

#include <chimaera.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chimaera {

// A failed call: status() is the chimaera_status (CHIMAERA_ERR_...),
// what() the library's message, module_status() the module's own status
// for CHIMAERA_ERR_MODULE.
class Error : public std::runtime_error {
public:
    Error(chimaera_status status, const std::string &message, std::int32_t module_status = 0)
        : std::runtime_error(message), status_(status), module_status_(module_status) {}

    chimaera_status status() const noexcept { return status_; }
    std::int32_t module_status() const noexcept { return module_status_; }
    // "CHIMAERA_ERR_TIMED_OUT" and so on.
    const char *status_name() const noexcept { return chimaera_status_name(status_); }

    // The calling thread's last error, as the library recorded it.
    static Error last(chimaera_status status) {
        return Error(status, chimaera_last_error_message(), chimaera_last_module_status());
    }

private:
    chimaera_status status_;
    std::int32_t module_status_;
};

namespace detail {
inline void check(chimaera_status status) {
    if (status != CHIMAERA_OK)
        throw Error::last(status);
}
} // namespace detail

// A task's output, owned: freed with the object. Empty outputs have a
// null data().
class Output {
public:
    Output() noexcept : buf_{nullptr, 0} {}
    Output(Output &&o) noexcept : buf_(o.buf_) { o.buf_ = {nullptr, 0}; }
    Output &operator=(Output &&o) noexcept {
        if (this != &o) {
            chimaera_buffer_free(&buf_);
            buf_ = o.buf_;
            o.buf_ = {nullptr, 0};
        }
        return *this;
    }
    Output(const Output &) = delete;
    Output &operator=(const Output &) = delete;
    ~Output() { chimaera_buffer_free(&buf_); }

    const std::uint8_t *data() const noexcept { return buf_.data; }
    std::size_t size() const noexcept { return buf_.len; }
    bool empty() const noexcept { return buf_.len == 0; }
    const std::uint8_t *begin() const noexcept { return buf_.data; }
    const std::uint8_t *end() const noexcept { return buf_.data + buf_.len; }
    std::string_view view() const noexcept {
        return {reinterpret_cast<const char *>(buf_.data), buf_.len};
    }
    std::string str() const { return std::string(view()); }
    std::vector<std::uint8_t> bytes() const { return {begin(), end()}; }

    // For the wrapper: where the library writes.
    chimaera_buffer *raw() noexcept { return &buf_; }

private:
    chimaera_buffer buf_;
};

// A submitted task; freeing it (the destructor) gives up the result, the
// task still runs. Waiting does not consume it.
class Task {
public:
    explicit Task(chimaera_task *t) noexcept : t_(t) {}
    Task(Task &&o) noexcept : t_(std::exchange(o.t_, nullptr)) {}
    Task &operator=(Task &&o) noexcept {
        if (this != &o) {
            chimaera_task_free(t_);
            t_ = std::exchange(o.t_, nullptr);
        }
        return *this;
    }
    Task(const Task &) = delete;
    Task &operator=(const Task &) = delete;
    ~Task() { chimaera_task_free(t_); }

    // Waits for completion (bounded by the runtime's task_timeout and life).
    Output wait() const {
        Output out;
        detail::check(chimaera_task_wait(t_, out.raw()));
        return out;
    }

    // Waits at most `limit`; throws Error with CHIMAERA_ERR_TIMED_OUT after
    // it (the task still runs; wait again or let it go).
    Output wait_for(std::chrono::milliseconds limit) const {
        Output out;
        auto ms = limit.count() < 0 ? 0 : static_cast<std::uint64_t>(limit.count());
        detail::check(chimaera_task_wait_timeout(t_, ms, out.raw()));
        return out;
    }

    bool done() const {
        bool d = false;
        detail::check(chimaera_task_done(t_, &d));
        return d;
    }

private:
    chimaera_task *t_;
};

struct PoolInfo {
    std::uint32_t id;
    std::string name;
    std::string module;
};

// A connection to the runtime on this host.
class Client {
public:
    // CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml, else the
    // defaults; CHI_* variables override.
    Client() { detail::check(chimaera_connect(&c_)); }
    // The configuration file `config_path` (CHI_* variables still override).
    explicit Client(const std::string &config_path) {
        detail::check(chimaera_connect_config(config_path.c_str(), &c_));
    }
    Client(Client &&o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    Client &operator=(Client &&o) noexcept {
        if (this != &o) {
            chimaera_client_free(c_);
            c_ = std::exchange(o.c_, nullptr);
        }
        return *this;
    }
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;
    ~Client() { chimaera_client_free(c_); }

    // An admin ping's round trip.
    std::chrono::nanoseconds ping() const {
        std::uint64_t ns = 0;
        detail::check(chimaera_ping(c_, &ns));
        return std::chrono::nanoseconds(ns);
    }

    Output call(std::uint32_t pool, std::uint32_t method, const void *input,
                std::size_t len) const {
        Output out;
        detail::check(chimaera_call(c_, pool, method, input, len, out.raw()));
        return out;
    }
    Output call(std::uint32_t pool, std::uint32_t method, std::string_view input = {}) const {
        return call(pool, method, input.data(), input.size());
    }

    // Throws Error with CHIMAERA_ERR_TIMED_OUT when `limit` passes first.
    Output call_for(std::uint32_t pool, std::uint32_t method, std::string_view input,
                    std::chrono::milliseconds limit) const {
        Output out;
        auto ms = limit.count() < 0 ? 0 : static_cast<std::uint64_t>(limit.count());
        detail::check(chimaera_call_timeout(c_, pool, method, input.data(), input.size(), ms,
                                            out.raw()));
        return out;
    }

    // Waits while the lane is full (back-pressure).
    Task submit(std::uint32_t pool, std::uint32_t method, std::string_view input = {}) const {
        chimaera_task *t = nullptr;
        detail::check(chimaera_submit(c_, pool, method, input.data(), input.size(), &t));
        return Task(t);
    }

    // No task when the lane is full (CHIMAERA_ERR_QUEUE_FULL); any other
    // failure throws.
    std::optional<Task> try_submit(std::uint32_t pool, std::uint32_t method,
                                   std::string_view input = {}) const {
        chimaera_task *t = nullptr;
        chimaera_status s = chimaera_try_submit(c_, pool, method, input.data(), input.size(), &t);
        if (s == CHIMAERA_ERR_QUEUE_FULL)
            return std::nullopt;
        detail::check(s);
        return Task(t);
    }

    // Get-or-create: the pool of that name, module and params.
    PoolInfo create_pool(const std::string &name, const std::string &module,
                         const std::string &params = "") const {
        chimaera_pool p{};
        detail::check(
            chimaera_pool_create(c_, name.c_str(), module.c_str(), params.c_str(), &p));
        return take(p);
    }

    PoolInfo destroy_pool(const std::string &name) const {
        chimaera_pool p{};
        detail::check(chimaera_pool_destroy(c_, name.c_str(), &p));
        return take(p);
    }

    PoolInfo destroy_pool(std::uint32_t id) const {
        chimaera_pool p{};
        detail::check(chimaera_pool_destroy_id(c_, id, &p));
        return take(p);
    }

    std::vector<PoolInfo> list_pools() const {
        chimaera_pool *list = nullptr;
        std::size_t n = 0;
        detail::check(chimaera_pool_list(c_, &list, &n));
        std::vector<PoolInfo> out;
        try {
            out.reserve(n);
            for (std::size_t i = 0; i < n; i++)
                out.push_back({list[i].id, list[i].name, list[i].module});
        } catch (...) {
            chimaera_pool_list_free(list, n);
            throw;
        }
        chimaera_pool_list_free(list, n);
        return out;
    }

    // The C handle, for calls the wrapper does not have.
    const chimaera_client *get() const noexcept { return c_; }

private:
    static PoolInfo take(chimaera_pool &p) {
        struct Free {
            chimaera_pool &p;
            ~Free() { chimaera_pool_free(&p); }
        } guard{p};
        return PoolInfo{p.id, p.name, p.module};
    }

    chimaera_client *c_ = nullptr;
};

// The library's version ("0.1.0").
inline std::string version() { return chimaera_version(); }

} // namespace chimaera

#endif // CHIMAERA_HPP
