# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_chimaera_global_optspecs
    string join \n c/config= set= h/help V/version
end

function __fish_chimaera_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_chimaera_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_chimaera_using_subcommand
    set -l cmd (__fish_chimaera_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c chimaera -n "__fish_chimaera_needs_command" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_needs_command" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_needs_command" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_needs_command" -s V -l version -d 'Print version'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "run" -d 'Run the runtime daemon in the foreground'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "stop" -d 'Stop the running runtime and wait until it is gone'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "reload" -d 'Make the runtime re-read its configuration (SIGHUP) and print what it applied, what needs a restart, or why it refused the new one'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "status" -d 'Tell whether the runtime runs (exit 0) or not (exit 3)'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "config" -d 'Check, show or list the configuration'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "bench" -d 'Measure the runtime against this machine\'s floor (starts its own daemon)'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "pool" -d 'Create, destroy or list the runtime\'s pools'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "completions" -d 'Print the shell completion script for bash, zsh or fish (the .deb installs them)'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "module" -d 'Plugin module libraries: check one as the daemon would load it'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "call" -d 'Run a method of a pool (any module\'s) and print its output'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "ping" -d 'Send admin no-op tasks to the runtime (or through it to other nodes) and print their round trips'
complete -c chimaera -n "__fish_chimaera_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand run" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand run" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand run" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand stop" -l timeout -d 'Seconds to wait for the runtime to finish' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand stop" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand stop" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand stop" -l json -d 'Print what was done as one JSON object'
complete -c chimaera -n "__fish_chimaera_using_subcommand stop" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand reload" -l timeout -d 'Seconds to wait for the runtime\'s report' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand reload" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand reload" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand reload" -l json -d 'Print the runtime\'s report as one JSON object'
complete -c chimaera -n "__fish_chimaera_using_subcommand reload" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand status" -l timeout -d 'Seconds to wait for the runtime\'s answer; exit 75 ("not responding") past them' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand status" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand status" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand status" -l json -d 'Print one JSON object'
complete -c chimaera -n "__fish_chimaera_using_subcommand status" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and not __fish_seen_subcommand_from check show keys help" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and not __fish_seen_subcommand_from check show keys help" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and not __fish_seen_subcommand_from check show keys help" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and not __fish_seen_subcommand_from check show keys help" -f -a "check" -d 'Validate exactly as the daemon does (file, CHI_* environment, /dev/shm); exit 78 on problems'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and not __fish_seen_subcommand_from check show keys help" -f -a "show" -d 'Print the effective configuration (after the environment) as YAML'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and not __fish_seen_subcommand_from check show keys help" -f -a "keys" -d 'List every key: name, environment variable, default, meaning (tab-separated)'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and not __fish_seen_subcommand_from check show keys help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from check" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from check" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from check" -l json -d 'Print the result as one JSON object: the summary, or the problems (key, origin, message)'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from show" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from show" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from show" -l json -d 'As one JSON object instead'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from keys" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from keys" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from keys" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Validate exactly as the daemon does (file, CHI_* environment, /dev/shm); exit 78 on problems'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "show" -d 'Print the effective configuration (after the environment) as YAML'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "keys" -d 'List every key: name, environment variable, default, meaning (tab-separated)'
complete -c chimaera -n "__fish_chimaera_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -f -a "local" -d 'Local tasks through shared memory: round trip, pipelined and multi-client rates'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -f -a "remote" -d 'Tasks routed to another node over loopback (two daemons of its own), against plain ZeroMQ sockets in the same run'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -f -a "bdev" -d 'Block I/O on a RAM bdev pool (4 KiB and 1 MiB writes and reads) against memcpy in the same run'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -f -a "cluster" -d 'N daemons on loopback ports, for each N: broadcast round trip against a single remote one, idle CPU per daemon, and how many heartbeats every other node takes to see one of them gone'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and not __fish_seen_subcommand_from local remote bdev cluster help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from local" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from local" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from local" -l json -d 'Print one JSON object instead of a line'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from local" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from remote" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from remote" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from remote" -l json -d 'Print one JSON object instead of a line'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from remote" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from bdev" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from bdev" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from bdev" -l json -d 'Print one JSON object instead of a line'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from bdev" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from cluster" -l nodes -d 'Cluster sizes, 2 to 16, comma-separated' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from cluster" -l heartbeat-ms -d 'Heartbeat interval of the daemons, ms' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from cluster" -l idle-secs -d 'Seconds the idle CPU is measured over' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from cluster" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from cluster" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from cluster" -l json -d 'Print one JSON object instead of lines'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from cluster" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "local" -d 'Local tasks through shared memory: round trip, pipelined and multi-client rates'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "remote" -d 'Tasks routed to another node over loopback (two daemons of its own), against plain ZeroMQ sockets in the same run'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "bdev" -d 'Block I/O on a RAM bdev pool (4 KiB and 1 MiB writes and reads) against memcpy in the same run'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "cluster" -d 'N daemons on loopback ports, for each N: broadcast round trip against a single remote one, idle CPU per daemon, and how many heartbeats every other node takes to see one of them gone'
complete -c chimaera -n "__fish_chimaera_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -l timeout -d 'Seconds to wait for the runtime\'s answer' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -f -a "list" -d 'List the pools: id, name, module'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -f -a "create" -d 'Create a pool, or find the one of that name, module and params (get-or-create)'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -f -a "destroy" -d 'Destroy a pool, named by name or by id'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and not __fish_seen_subcommand_from list create destroy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from list" -l timeout -d 'Seconds to wait for the runtime\'s answer' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from list" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from list" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON array'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from create" -l params -d 'The module\'s parameters, JSON (e.g. \'{"kind":"ram","size":"64M"}\' for bdev)' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from create" -l timeout -d 'Seconds to wait for the runtime\'s answer' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from create" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from create" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from create" -l json -d 'Print the pool as one JSON object'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from destroy" -l timeout -d 'Seconds to wait for the runtime\'s answer' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from destroy" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from destroy" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from destroy" -l json -d 'Print the destroyed pool as one JSON object'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from destroy" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the pools: id, name, module'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a pool, or find the one of that name, module and params (get-or-create)'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from help" -f -a "destroy" -d 'Destroy a pool, named by name or by id'
complete -c chimaera -n "__fish_chimaera_using_subcommand pool; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand completions" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand completions" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand completions" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and not __fish_seen_subcommand_from check help" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and not __fish_seen_subcommand_from check help" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and not __fish_seen_subcommand_from check help" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Load FILE as `modules.load` would; print its name, version and ABI, and whether this daemon can load it (exit 0) or why not (exit 78)'
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and __fish_seen_subcommand_from check" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and __fish_seen_subcommand_from check" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and __fish_seen_subcommand_from help" -f -a "check" -d 'Load FILE as `modules.load` would; print its name, version and ABI, and whether this daemon can load it (exit 0) or why not (exit 78)'
complete -c chimaera -n "__fish_chimaera_using_subcommand module; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand call" -l node -d 'Run it on node N of the cluster instead of here' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand call" -l timeout -d 'Seconds to wait for the output' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand call" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand call" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand call" -l hex -d 'Print the output as hex (the input, when given as text, is hex too)'
complete -c chimaera -n "__fish_chimaera_using_subcommand call" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -s n -l count -d 'How many pings (per node), at least 1' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -l node -d 'Ping node N of the hostfile, through the local runtime' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -l timeout -d 'Seconds each ping may take before it counts as lost' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -s c -l config -d 'Configuration file (default: $CHI_SERVER_CONF, else /etc/chimaera/chimaera_config.yaml when present, else built-in defaults)' -r -F
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -l set -d 'Override a key, highest precedence: --set workers.sched_threads=4. Every subcommand that reaches a runtime takes the --config and --set it was started with, to find it' -r
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -l all -d 'Ping every node of the hostfile, one after another'
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -l broadcast -d 'One broadcast ping to every node at once, answered by all of them'
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -l json -d 'Print one JSON object'
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -s q -l quiet -d 'Print only the summary'
complete -c chimaera -n "__fish_chimaera_using_subcommand ping" -s h -l help -d 'Print help'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "run" -d 'Run the runtime daemon in the foreground'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "stop" -d 'Stop the running runtime and wait until it is gone'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "reload" -d 'Make the runtime re-read its configuration (SIGHUP) and print what it applied, what needs a restart, or why it refused the new one'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "status" -d 'Tell whether the runtime runs (exit 0) or not (exit 3)'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "config" -d 'Check, show or list the configuration'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "bench" -d 'Measure the runtime against this machine\'s floor (starts its own daemon)'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "pool" -d 'Create, destroy or list the runtime\'s pools'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "completions" -d 'Print the shell completion script for bash, zsh or fish (the .deb installs them)'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "module" -d 'Plugin module libraries: check one as the daemon would load it'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "call" -d 'Run a method of a pool (any module\'s) and print its output'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "ping" -d 'Send admin no-op tasks to the runtime (or through it to other nodes) and print their round trips'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and not __fish_seen_subcommand_from run stop reload status config bench pool completions module call ping help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Validate exactly as the daemon does (file, CHI_* environment, /dev/shm); exit 78 on problems'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "show" -d 'Print the effective configuration (after the environment) as YAML'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "keys" -d 'List every key: name, environment variable, default, meaning (tab-separated)'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "local" -d 'Local tasks through shared memory: round trip, pipelined and multi-client rates'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "remote" -d 'Tasks routed to another node over loopback (two daemons of its own), against plain ZeroMQ sockets in the same run'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "bdev" -d 'Block I/O on a RAM bdev pool (4 KiB and 1 MiB writes and reads) against memcpy in the same run'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "cluster" -d 'N daemons on loopback ports, for each N: broadcast round trip against a single remote one, idle CPU per daemon, and how many heartbeats every other node takes to see one of them gone'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from pool" -f -a "list" -d 'List the pools: id, name, module'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from pool" -f -a "create" -d 'Create a pool, or find the one of that name, module and params (get-or-create)'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from pool" -f -a "destroy" -d 'Destroy a pool, named by name or by id'
complete -c chimaera -n "__fish_chimaera_using_subcommand help; and __fish_seen_subcommand_from module" -f -a "check" -d 'Load FILE as `modules.load` would; print its name, version and ABI, and whether this daemon can load it (exit 0) or why not (exit 78)'
