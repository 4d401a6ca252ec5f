// ping.cpp: the C++ wrapper (chimaera.hpp) against the runtime on this host.
//
//   c++ -std=c++17 ping.cpp $(pkg-config --cflags --libs chimaera) -o chimaera-ping-cpp
//   ./chimaera-ping-cpp [-n COUNT] [--config FILE]
//
// Runs an echo, a pipelined batch, a refused call (caught as
// chimaera::Error), the pool list, then times COUNT admin pings and prints
// min, median, p99 and max. Exit status: 0 on success, 69 when the runtime
// cannot be reached or a call fails, 64 on a usage error.

#include <chimaera.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

int usage() {
    std::fprintf(stderr, "usage: chimaera-ping-cpp [-n COUNT] [--config FILE]\n");
    return 64;
}

// Fails the example with a message unless `ok`.
void expect(bool ok, const char *what) {
    if (!ok)
        throw std::runtime_error(std::string("check failed: ") + what);
}

void wrapper_checks(chimaera::Client &client) {
    auto echo = client.call(CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, "hello from C++");
    expect(echo.str() == "hello from C++", "echo");

    std::vector<chimaera::Task> batch;
    for (int i = 0; i < 100; i++)
        batch.push_back(client.submit(CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_ECHO, std::to_string(i)));
    for (int i = 0; i < 100; i++)
        expect(batch[i].wait().str() == std::to_string(i), "batch echo");
    expect(batch[0].done(), "done after wait");

    try {
        client.call(4242, 0);
        expect(false, "a call to no pool throws");
    } catch (const chimaera::Error &e) {
        expect(e.status() == CHIMAERA_ERR_NO_SUCH_POOL, "NO_SUCH_POOL");
        expect(std::strstr(e.what(), "4242") != nullptr, "the message names the pool");
    }

    // A sleeping task outlasts a short wait, then completes.
    std::string ms(8, '\0');
    ms[0] = static_cast<char>(200);
    chimaera::Task slow = client.submit(CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_SLEEP, ms);
    try {
        slow.wait_for(std::chrono::milliseconds(5));
        expect(false, "a short wait times out");
    } catch (const chimaera::Error &e) {
        expect(e.status() == CHIMAERA_ERR_TIMED_OUT, "TIMED_OUT");
    }
    expect(slow.wait().empty(), "sleep has no output");

    if (auto t = client.try_submit(CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_PING))
        t->wait();

    auto pools = client.list_pools();
    expect(!pools.empty() && pools[0].name == "admin", "the admin pool is listed first");

    // Handles move; a moved-from client refuses calls instead of crashing.
    chimaera::Client moved = std::move(client);
    expect(moved.ping().count() > 0, "a moved client works");
    try {
        client.ping();
        expect(false, "a moved-from client throws");
    } catch (const chimaera::Error &e) {
        expect(e.status() == CHIMAERA_ERR_INVALID_ARGUMENT, "INVALID_ARGUMENT");
    }
    client = std::move(moved);
}

} // namespace

int main(int argc, char **argv) {
    long count = 10000;
    std::string config;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            char *end;
            count = std::strtol(argv[++i], &end, 10);
            if (*end != '\0' || count < 1)
                return usage();
        } else if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else {
            return usage();
        }
    }
    try {
        chimaera::Client client = config.empty() ? chimaera::Client() : chimaera::Client(config);
        wrapper_checks(client);

        using clock = std::chrono::steady_clock;
        std::vector<std::uint64_t> rtts;
        rtts.reserve(static_cast<std::size_t>(count));
        for (long i = -1000; i < count; i++) {
            auto t = clock::now();
            client.call(CHIMAERA_ADMIN_POOL, CHIMAERA_ADMIN_PING);
            auto dt = std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t);
            if (i >= 0)
                rtts.push_back(static_cast<std::uint64_t>(dt.count()));
        }
        std::sort(rtts.begin(), rtts.end());
        auto at = [&](double p) {
            auto i = static_cast<std::size_t>(static_cast<double>(rtts.size() - 1) * p + 0.5);
            return static_cast<double>(rtts[std::min(i, rtts.size() - 1)]) / 1e3;
        };
        std::printf("%ld pings from C++ (libchimaera %s): min %.1f us, median %.1f us, "
                    "p99 %.1f us, max %.1f us\n",
                    count, chimaera::version().c_str(), at(0), at(0.5), at(0.99), at(1));
        std::printf("wrapper checks passed\n");
        return 0;
    } catch (const chimaera::Error &e) {
        std::fprintf(stderr, "chimaera-ping-cpp: %s (%s)\n", e.what(), e.status_name());
        return 69;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "chimaera-ping-cpp: %s\n", e.what());
        return 69;
    }
}
