#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 cluster on a free 127.0.0.1 port and prints its URL.
#
#   url=$(crates/consent-server/scripts/pg-test-cluster.sh start /tmp/consent-pg)
#   CONSENT_TEST_POSTGRES_URL=$url cargo nextest run -p consent-server
#   crates/consent-server/scripts/pg-test-cluster.sh stop /tmp/consent-pg
#
# The first stdout line of `start` is the postgres:// URL; everything else goes to stderr.
# initdb refuses to run as root, so as root the cluster runs as the `postgres` user (which the
# Debian package postgresql-15 creates). PG_BIN overrides /usr/lib/postgresql/15/bin.
set -euo pipefail

cmd=${1:-start}
dir=${2:-}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/consent-pg.XXXXXX); fi
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; chmod 700 "$dir"; fi
    # A free port: a random one in the dynamic range that nothing answers on.
    port=
    for _ in $(seq 1 50); do
        candidate=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
            port=$candidate
            break
        fi
    done
    [ -n "$port" ] || { echo "no free port found" >&2; exit 1; }
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >&2
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >&2
    echo "$port" >"$dir/port"
    echo "cluster in $dir; stop it with: $0 stop $dir" >&2
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    [ -n "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start [DIR] | stop DIR" >&2
    exit 2
    ;;
esac
