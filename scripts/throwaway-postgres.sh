#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for one test run: nothing is assumed to be
# running, and nothing is left behind.
#
#   url=$(./scripts/throwaway-postgres.sh start DIR)   # initdb + start on a free port; prints the admin URL
#   url=$(./scripts/throwaway-postgres.sh start DIR --durable)   # the same, with PostgreSQL's durable defaults
#   ./scripts/throwaway-postgres.sh stop DIR           # stop it and delete DIR
#
# The cluster trusts local connections and runs without fsync: it holds
# test data only. `--durable` keeps fsync, full-page writes and synchronous
# commits on, as a production server has them: for benchmarks. PostgreSQL refuses to run as root, so as root it runs as
# the `postgres` user that Debian's package creates.
set -euo pipefail

bin=
for version in 17 16 15; do
    if [ -x "/usr/lib/postgresql/$version/bin/initdb" ]; then
        bin=/usr/lib/postgresql/$version/bin
        break
    fi
done
[ -n "$bin" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
    dir=${2:?usage: $0 start DIR [--durable]}
    durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    case "${3:-}" in
    "") ;;
    --durable) durability="" ;;
    *) echo "usage: $0 start DIR [--durable]" >&2; exit 2 ;;
    esac
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        chmod a+x "$(dirname "$dir")" # the postgres user must reach it
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" --auth=trust --username=postgres --encoding=UTF8 --no-sync -D "$dir/data" >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    # Many replicas and parallel tests at once; speed over durability; a cut
    # link noticed in seconds (see docs/scaling-out.md on keepalives).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start -o \
        "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=800 \
         $durability \
         -c tcp_keepalives_idle=1 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2" >/dev/null \
        || { cat "$dir/postgres.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=${2:?usage: $0 stop DIR}
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start DIR [--durable] | stop DIR" >&2
    exit 2
    ;;
esac
