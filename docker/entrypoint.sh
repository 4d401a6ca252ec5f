#!/bin/sh
# chimaera-entrypoint: container entry point of chimaera-runtime.
#
# 1. The effective configuration is built by the binary itself: the packaged
#    (or mounted) /etc/chimaera/chimaera_config.yaml, or $CHI_SERVER_CONF,
#    overlaid with the CHI_* variables of the container.
# 2. `chimaera config check` validates it with exactly the daemon's rules,
#    including the three segments against the size and free space of
#    /dev/shm (docker run --shm-size / compose shm_size). No rule is repeated
#    here: a bad setting ends the container with the binary's one line per
#    problem and its exit status (78 bad config, 69 resource missing).
#    Files named by the configuration are read and checked there too, the
#    same way whether named in the YAML or by CHI_*: the hostfile
#    (CHI_HOSTFILE, and which of its lines is this container) and the cluster
#    key (CHI_CLUSTER_KEY_FILE: at least 32 bytes, owned by this container's
#    user with mode 0600 or 0400; see docker-compose.yml).
# 3. The daemon is exec'd, so it is PID 1 and receives `docker stop`'s
#    SIGTERM directly.
#
# Any other command is run as given, e.g. `docker run IMAGE chimaera config keys`.
set -eu

say() { printf 'chimaera-entrypoint: %s\n' "$*" >&2; }

# No arguments, or only options: run the daemon with them.
if [ "$#" -eq 0 ]; then
    set -- chimaera run
else
    case "$1" in
    -*) set -- chimaera run "$@" ;;
    esac
fi

is_daemon=no
case "$1" in
chimaera_start_runtime) is_daemon=yes ;;
chimaera | /usr/bin/chimaera) [ "${2:-}" = run ] && is_daemon=yes ;;
esac
if [ "$is_daemon" = no ]; then
    exec "$@"
fi

# Find --config FILE / --config=FILE among the daemon's options so that the
# check reads the same file as the daemon.
config=""
prev=""
for arg in "$@"; do
    case "$prev" in --config) config="$arg" ;; esac
    case "$arg" in --config=*) config="${arg#--config=}" ;; esac
    prev="$arg"
done

say "checking configuration${config:+ $config} (CHI_* variables applied) and /dev/shm"
status=0
if [ -n "$config" ]; then
    chimaera config check "$config" || status=$?
else
    chimaera config check || status=$?
fi
if [ "$status" -ne 0 ]; then
    say "configuration rejected (exit $status); not starting the daemon"
    exit "$status"
fi
say "effective configuration:"
if [ -n "$config" ]; then
    chimaera config show --config "$config" >&2
else
    chimaera config show >&2
fi

say "starting: $*"
exec "$@"
