# Shared settings for the scripts; sourced, not run.
# Every value can be overridden from the environment.
BANDITORE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BANDITORE_STATE_DIR=${BANDITORE_STATE_DIR:-$BANDITORE_ROOT/.local}
BANDITORE_AMQP_PORT=${BANDITORE_AMQP_PORT:-5673}
BANDITORE_AMQP_DIST_PORT=${BANDITORE_AMQP_DIST_PORT:-25673}
BANDITORE_AMQP_MANAGEMENT_PORT=${BANDITORE_AMQP_MANAGEMENT_PORT:-15673}
BANDITORE_PG_PORT=${BANDITORE_PG_PORT:-5433}
BANDITORE_PG_DATABASE=${BANDITORE_PG_DATABASE:-banditore}
# The services' RabbitMQ virtual host; empty is the default one, "/". scripts/chaos runs in one of its own.
BANDITORE_AMQP_VHOST=${BANDITORE_AMQP_VHOST:-}
BANDITORE_RABBITMQ_NODE=${BANDITORE_RABBITMQ_NODE:-banditore-$BANDITORE_AMQP_PORT@localhost}

RABBITMQ_DIR=$BANDITORE_STATE_DIR/rabbitmq
PG_LINK=$BANDITORE_STATE_DIR/postgres
RABBITMQ_BIN=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}

export BANDITORE_AMQP_URL_DEFAULT="amqp://guest:guest@127.0.0.1:$BANDITORE_AMQP_PORT/"
export BANDITORE_DATABASE_URL_DEFAULT="postgres://postgres@127.0.0.1:$BANDITORE_PG_PORT/$BANDITORE_PG_DATABASE"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || die "PostgreSQL server binaries not found: run scripts/setup"
    echo "$dir"
}

# The account PostgreSQL runs as: it refuses root.
pg_user() {
    if [ "$(id -u)" != 0 ]; then id -un; return; fi
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/false postgres
    fi
    echo postgres
}

as_pg() {
    local user; user=$(pg_user)
    if [ "$user" = "$(id -un)" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}

# PostgreSQL's data folder: under .local when the postgres account can reach it, otherwise in /tmp behind a
# link in .local (a clone in a private folder, e.g. mktemp -d, is not reachable by other accounts).
pg_dir() {
    if [ -L "$PG_LINK" ] || [ -d "$PG_LINK" ]; then
        readlink -f "$PG_LINK"
        return
    fi
    mkdir -p "$BANDITORE_STATE_DIR"
    local dir=$PG_LINK
    mkdir -p "$dir"
    chown "$(pg_user)" "$dir" 2>/dev/null || true
    if ! as_pg test -w "$dir"; then
        rmdir "$dir"
        dir=$(mktemp -d /tmp/banditore-postgres.XXXXXX)
        chmod 755 "$dir"
        chown "$(pg_user)" "$dir" 2>/dev/null || true
        ln -s "$dir" "$PG_LINK"
    fi
    echo "$dir"
}

pg_running() {
    local dir; dir=$(pg_dir)
    [ -f "$dir/data/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

rabbit_env() {
    export HOME=$RABBITMQ_DIR/home
    export RABBITMQ_NODENAME=$BANDITORE_RABBITMQ_NODE
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$BANDITORE_AMQP_PORT
    export RABBITMQ_DIST_PORT=$BANDITORE_AMQP_DIST_PORT
    export RABBITMQ_MNESIA_BASE=$RABBITMQ_DIR/mnesia
    export RABBITMQ_LOG_BASE=$RABBITMQ_DIR/log
    export RABBITMQ_CONFIG_FILE=$RABBITMQ_DIR/rabbitmq
    export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBITMQ_DIR/enabled_plugins
    export RABBITMQ_CONF_ENV_FILE=$RABBITMQ_DIR/rabbitmq-env.conf
    export RABBITMQ_PID_FILE=$RABBITMQ_DIR/rabbitmq.pid
}

rabbit_running() {
    [ -f "$RABBITMQ_DIR/rabbitmq.pid" ] && kill -0 "$(cat "$RABBITMQ_DIR/rabbitmq.pid")" 2>/dev/null
}

# The release binaries a benchmark runs: built here, or another build's kept in $BANDITORE_BIN (to compare builds
# side by side in one sitting, run by run). Sets $bin.
release_bin() {
    if [ -n "${BANDITORE_BIN:-}" ]; then
        bin=$BANDITORE_BIN
        say "running the binaries in $bin"
    else
        say "building (release)"
        swift build -c release >/dev/null
        bin=$(swift build -c release --show-bin-path)
    fi
}
