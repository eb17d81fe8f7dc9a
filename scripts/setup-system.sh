#!/usr/bin/env bash
# Install the system packages featurestream needs, only those that are missing.
#
# Usage: scripts/setup-system.sh [demo|test]
#   demo: redis-server (the embedded local stack's Redis)
#   test: also docker-compose (validates docker-compose.yml) and wrk (the serving
#         benchmark's load generator); the container engine
#         for the e2e tests is set up by scripts/container-runtime.sh
set -euo pipefail

want=(redis-server)
[[ ${1:-demo} == test ]] && want+=(docker-compose wrk)

missing=()
for cmd in "${want[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if ((${#missing[@]})); then
    SUDO=()
    [[ $(id -u) -ne 0 ]] && SUDO=(sudo)
    echo "setup-system: installing ${missing[*]}" >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
