#!/usr/bin/env bash
# Make RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) reachable for SAS Fleet.
#
#   bash deploy/services.sh        (from the repo root; works from any directory)
#
# For each service: if it already answers, say so and leave it alone.  Otherwise start it
# with Docker Compose when a Docker engine runs, else with the locally installed binary
# (installing it with apt-get first when it is missing and we are root), then wait, bounded,
# until it really answers: Redis must reply to PING, RabbitMQ must answer the AMQP 0-9-1
# protocol header with Connection.Start (the port alone opens before the broker is ready).
#
# Exit status: 0 when both answer, 1 otherwise (with a message saying what to do by hand).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Backing services only (no users, no fleet): compose.yaml is the whole secured fleet.
COMPOSE_FILE="${SCRIPT_DIR}/compose.services.yaml"

HOST=127.0.0.1
# Fixed ports.  The two _SASFLEET_* overrides exist only to exercise the local start path
# against a spare port in tests; the compose path always maps the standard ports.
AMQP_PORT="${_SASFLEET_SERVICES_AMQP_PORT:-5672}"
REDIS_PORT="${_SASFLEET_SERVICES_REDIS_PORT:-6379}"
RABBITMQ_TIMEOUT="${SASFLEET_SERVICES_RABBITMQ_TIMEOUT:-90}"
REDIS_TIMEOUT="${SASFLEET_SERVICES_REDIS_TIMEOUT:-15}"
STATE_DIR="${TMPDIR:-/tmp}/sasfleet-services-$(id -u)"

log() { printf '%s\n' "$*"; }
err() { printf '%s\n' "$*" >&2; }

# probe KIND PORT -> exit 0 when the service answers.
#   tcp:   the port accepts a connection
#   redis: "+PONG" (or "-NOAUTH": up, just password-protected) in reply to PING
#   amqp:  a METHOD frame (Connection.Start) in reply to the AMQP 0-9-1 header
probe() {
    local kind="$1" port="$2"
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$kind" "$HOST" "$port" <<'PY'
import socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with socket.create_connection((host, port), timeout=2) as s:
        if kind == "tcp":
            sys.exit(0)
        s.settimeout(5)
        if kind == "redis":
            s.sendall(b"PING\r\n")
            data = s.recv(64)
            sys.exit(0 if data.startswith((b"+PONG", b"-NOAUTH")) else 1)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        data = s.recv(7)
        # Frame type 1 = METHOD: the broker sent Connection.Start, so it is ready.
        sys.exit(0 if data[:1] == b"\x01" else 1)
except OSError:
    sys.exit(1)
PY
    else
        # No python3: fall back to a plain TCP connect (bash /dev/tcp).
        (exec 3<>"/dev/tcp/${HOST}/${port}") 2>/dev/null
    fi
}

# wait_for KIND PORT SECONDS
wait_for() {
    local kind="$1" port="$2" timeout="$3" start=$SECONDS
    while ((SECONDS - start < timeout)); do
        if probe "$kind" "$port"; then
            return 0
        fi
        sleep 1
    done
    return 1
}

docker_engine() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f "$COMPOSE_FILE" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -f "$COMPOSE_FILE" "$@"
    else
        err "docker compose is not installed (neither 'docker compose' nor 'docker-compose')"
        return 1
    fi
}

can_apt() {
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1
}

apt_updated=0
apt_install() {
    if ((apt_updated == 0)); then
        apt-get update
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------
redis_manual_hint() {
    err "  Start Redis by hand, then re-run this script:"
    err "    docker compose -f deploy/compose.services.yaml up -d redis"
    err "  or: apt-get install -y redis-server && redis-server --daemonize yes --bind ${HOST} --port ${REDIS_PORT}"
}

ensure_redis() {
    local name="redis" port="$REDIS_PORT"
    if probe redis "$port"; then
        log "${name}: already up"
        return 0
    fi
    if probe tcp "$port"; then
        log "${name}: port ${port} open but no PING answer yet; waiting up to ${REDIS_TIMEOUT}s"
    elif docker_engine; then
        log "${name}: starting with docker compose"
        compose up -d redis || { err "${name}: docker compose up failed"; redis_manual_hint; return 1; }
    else
        if ! command -v redis-server >/dev/null 2>&1; then
            if can_apt; then
                log "${name}: redis-server not installed; installing it with apt-get"
                apt_install redis-server || { err "${name}: apt-get install redis-server failed"; redis_manual_hint; return 1; }
            else
                err "${name}: not reachable on ${HOST}:${port}, no Docker engine, and redis-server is not installed (and we cannot apt-get install it: not root or no apt-get)."
                redis_manual_hint
                return 1
            fi
        fi
        if probe redis "$port"; then   # the package's postinst may have started it
            log "${name}: up (started by its package)"
            return 0
        fi
        local dir="${STATE_DIR}/redis-${port}"
        mkdir -p "$dir" || { err "${name}: cannot create ${dir}"; return 1; }
        log "${name}: starting redis-server on ${HOST}:${port} (data and log in ${dir})"
        redis-server --daemonize yes --bind "$HOST" --port "$port" \
            --dir "$dir" --logfile "${dir}/redis.log" \
            --appendonly yes --appendfsync everysec \
            || { err "${name}: redis-server failed to start"; redis_manual_hint; return 1; }
    fi
    if wait_for redis "$port" "$REDIS_TIMEOUT"; then
        log "${name}: up on ${HOST}:${port}"
        return 0
    fi
    err "${name}: did not answer PING on ${HOST}:${port} within ${REDIS_TIMEOUT}s"
    [[ -f "${STATE_DIR}/redis-${port}/redis.log" ]] && tail -n 20 "${STATE_DIR}/redis-${port}/redis.log" >&2
    redis_manual_hint
    return 1
}

# ---------------------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------------------
rabbitmq_manual_hint() {
    err "  Start RabbitMQ by hand, then re-run this script:"
    err "    docker compose -f deploy/compose.services.yaml up -d rabbitmq"
    err "  or: apt-get install -y rabbitmq-server && rabbitmq-server -detached"
}

ensure_rabbitmq() {
    local name="rabbitmq" port="$AMQP_PORT"
    if probe amqp "$port"; then
        log "${name}: already up"
        return 0
    fi
    if probe tcp "$port"; then
        log "${name}: port ${port} open but AMQP not ready yet; waiting up to ${RABBITMQ_TIMEOUT}s"
    elif docker_engine; then
        log "${name}: starting with docker compose"
        compose up -d rabbitmq || { err "${name}: docker compose up failed"; rabbitmq_manual_hint; return 1; }
    else
        if ! command -v rabbitmq-server >/dev/null 2>&1; then
            if can_apt; then
                log "${name}: rabbitmq-server not installed; installing it with apt-get"
                apt_install rabbitmq-server || { err "${name}: apt-get install rabbitmq-server failed"; rabbitmq_manual_hint; return 1; }
            else
                err "${name}: not reachable on ${HOST}:${port}, no Docker engine, and rabbitmq-server is not installed (and we cannot apt-get install it: not root or no apt-get)."
                rabbitmq_manual_hint
                return 1
            fi
        fi
        if wait_for amqp "$port" 3; then   # the package's postinst may have started it
            log "${name}: up (started by its package)"
            return 0
        fi
        mkdir -p "$STATE_DIR" || { err "${name}: cannot create ${STATE_DIR}"; return 1; }
        log "${name}: starting rabbitmq-server -detached (output in ${STATE_DIR}/rabbitmq-start.log)"
        # A node that is already booting makes this fail; the wait below is the real test.
        rabbitmq-server -detached >"${STATE_DIR}/rabbitmq-start.log" 2>&1 \
            || log "${name}: rabbitmq-server -detached exited non-zero (a node may already be booting); waiting anyway"
    fi
    if wait_for amqp "$port" "$RABBITMQ_TIMEOUT"; then
        log "${name}: up on ${HOST}:${port}"
        return 0
    fi
    err "${name}: did not answer AMQP on ${HOST}:${port} within ${RABBITMQ_TIMEOUT}s"
    [[ -s "${STATE_DIR}/rabbitmq-start.log" ]] && tail -n 20 "${STATE_DIR}/rabbitmq-start.log" >&2
    rabbitmq_manual_hint
    return 1
}

status=0
ensure_rabbitmq || status=1
ensure_redis || status=1
exit "$status"
