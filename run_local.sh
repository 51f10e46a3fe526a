#!/usr/bin/env bash
# sql2tfrecord, locally, on a machine with only Python 3.10-3.12 and pip.
#
#   ./run_local.sh                  demo: embedded PostgreSQL + a generated 200k-row
#                                   table -> pipeline -> train -> summary
#   ./run_local.sh [pipeline flags] the same on your table, e.g.
#                                   DATABASE_URL=postgresql://me@db/prod ./run_local.sh \
#                                     --table events --label clicked --output_dir out/events
#   ./run_local.sh --mysql [pipeline flags]
#                                   the demo (or your flags) on a throwaway MariaDB
#                                   (mariadbd from the installed mariadb-server)
#                                   instead; also DEMO_DB=mariadb, or a
#                                   --db_url mysql://... of your own
#   ./run_local.sh test [pytest args]  the test suite
#
# Environment: DATABASE_URL (use this server instead of an embedded one),
# MYSQL_URL (with --mysql: use this server instead of a throwaway one),
# SAMPLE_ROWS (demo table size, default 200000), EPOCHS (default 3),
# VENV (virtualenv path, default .venv), PYTHON (interpreter to create it with).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sql2tfrecord.XXXXXX")
PG_STATE="$STATE_DIR/postgres.json"
MYSQL_STATE="$STATE_DIR/mariadb.json"

log() { printf '[run_local] %s\n' "$*" >&2; }

pick_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.11 python3.12 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
            'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' \
            2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    log "error: need Python 3.10, 3.11 or 3.12 (tensorflow-transform 1.21 supports no other)"
    exit 1
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        "$(pick_python)" -m venv "$VENV"
    fi
    local stamp="$VENV/.sql2tfrecord-installed" want
    want=$(cat setup.py pyproject.toml | sha1sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing sql2tfrecord and its pinned dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[local,test]"
        echo "$want" >"$stamp"
    fi
}

PY() { "$VENV/bin/python" "$@"; }

cleanup() {
    local status=$?
    if [ -f "$PG_STATE" ]; then
        PY -m localdev stop --pidfile "$PG_STATE" || log "warning: could not stop PostgreSQL"
    fi
    if [ -f "$MYSQL_STATE" ]; then
        PY -m localdev stop-mysql --pidfile "$MYSQL_STATE" || log "warning: could not stop MariaDB"
    fi
    rm -rf "$STATE_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_venv
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if [ "${1:-}" = "test" ]; then
    shift
    # The suite starts its own throwaway PostgreSQL when DATABASE_URL is unset.
    PY -m pytest "$@"
    exit $?
fi

DEMO_DB=${DEMO_DB:-postgres}
if [ "${1:-}" = "--mysql" ]; then
    shift
    DEMO_DB=mariadb
fi

args=("$@")
has_flag() {
    local flag
    for flag in "${args[@]}"; do
        case "$flag" in "$1" | "$1"=*) return 0 ;; esac
    done
    return 1
}
flag_value() {
    local i
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[$i]}" in
        "$1"=*) echo "${args[$i]#*=}"; return ;;
        "$1") echo "${args[$((i + 1))]:-}"; return ;;
        esac
    done
}

case "$(flag_value --db_url)" in mysql://* | mariadb://*) DEMO_DB=mariadb ;; esac
case "$DEMO_DB" in
postgres | postgresql)
    if [ -z "${DATABASE_URL:-}" ]; then
        log "starting an embedded, throwaway PostgreSQL"
        DATABASE_URL=$(PY -m localdev start --pidfile "$PG_STATE")
        export DATABASE_URL
    fi
    SAMPLE_URL=$DATABASE_URL
    ;;
mariadb | mysql)
    SAMPLE_URL=$(flag_value --db_url)
    if [ -z "$SAMPLE_URL" ]; then
        if [ -n "${MYSQL_URL:-}" ]; then
            SAMPLE_URL=$MYSQL_URL
        else
            log "starting a throwaway MariaDB"
            SAMPLE_URL=$(PY -m localdev start-mysql --pidfile "$MYSQL_STATE")
        fi
        args+=(--db_url "$SAMPLE_URL")
    fi
    ;;
*)
    log "error: DEMO_DB must be postgres or mariadb, got '$DEMO_DB'"
    exit 2
    ;;
esac

if ! has_flag --table && ! has_flag --query; then
    rows=${SAMPLE_ROWS:-200000}
    log "loading the sample table ($rows rows)"
    PY -m localdev sample --db_url "$SAMPLE_URL" --table sample --rows "$rows"
    args+=(--table sample --label label)
fi
if ! has_flag --output_dir; then
    args+=(--output_dir out/sample --overwrite)
fi
OUT=$(flag_value --output_dir)

log "running the pipeline"
PY -m pipeline "${args[@]}"

log "training a small model on $OUT"
METRICS="$STATE_DIR/metrics.json"
PY -m trainer --data_dir "$OUT" --epochs "${EPOCHS:-3}" --export_dir "$OUT.serving" |
    tee "$STATE_DIR/trainer.log"
tail -n 1 "$STATE_DIR/trainer.log" >"$METRICS"

PY - "$OUT" "$METRICS" <<'EOF'
import json, sys
out, metrics_path = sys.argv[1], sys.argv[2]
manifest = json.load(open(f"{out}/manifest.json"))
metrics = json.load(open(metrics_path))
rows = sum(s["rows"] for s in manifest["splits"].values())
print("\n== sql2tfrecord summary ==")
print(f"output            {out}  (serving model: {out}.serving)")
print("rows per split    " + ", ".join(f"{k}={v['rows']}" for k, v in manifest["splits"].items()))
print(f"dropped (NULL y)  {manifest['rows_dropped_null_label']}")
vocab = manifest.get("vocabularies") or {}
print("vocabulary sizes  " + (", ".join(f"{k}={v['size']}" for k, v in vocab.items()) or "-"))
secs = manifest["elapsed_seconds"]
print(f"pipeline          {secs:.1f} s, {rows / secs:,.0f} rows/s end to end")
print(f"eval AUC          {metrics['auc']:.4f}")
print(f"eval accuracy     {metrics['accuracy']:.4f} (majority baseline {metrics['baseline_accuracy']:.4f})")
if manifest.get("report"):
    print(f"report            {out}/{manifest['report']}  ({len(manifest['statistics']['anomalies'])} anomalies; open it in a browser)")
EOF
