#!/usr/bin/env bash
# Start a Flower SuperLink (flwr 1.41) for edgebloom; the script execs into
# flower-superlink, so its PID is the SuperLink's PID (for systemd and pid files).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/start-superlink.sh [options] [-- extra flower-superlink flags]

Start a Flower SuperLink. In flwr 1.41 one HTTP(S) port serves the Fleet API
(SuperNodes connect here), the Control API (`flwr run`, `flwr ls`, ...) and the
Runtime API (the SuperLink's own ServerApp processes).

Options:
  --host HOST        Address to bind (default: 127.0.0.1; 0.0.0.0 for remote devices)
  --port PORT        Port of the SuperLink API (default: 8000)
  --certs-dir DIR    Use DIR/ca.crt, DIR/server.crt, DIR/server.key (from gen-certs.sh)
  --ca FILE          CA certificate (overrides DIR/ca.crt)
  --cert FILE        Server certificate (overrides DIR/server.crt)
  --key FILE         Server private key (overrides DIR/server.key)
  --insecure         Plain HTTP without TLS (loopback experiments only)
  --auth             Only let registered SuperNodes connect (--enable-supernode-auth;
                     needs TLS). Register keys with deploy/register-nodes.sh.
  --database FILE    SQLite file for runs, nodes and registrations, so they survive
                     a restart (default: in memory, lost on exit)
  --log-file FILE    Also write the SuperLink log to FILE (rotated daily); its
                     directory is created if missing
  --allow-runtime-deps
                     Let the SuperLink `uv sync` each app's dependencies at run
                     time (flwr's default). Off here: edgebloom's dependencies
                     (torch, ...) are installed once, next to flwr.
  --dry-run          Print the command instead of running it
  -h, --help         Show this help and exit

Environment: FLWR_BIN_DIR  directory holding flower-superlink (default: from PATH)

Examples:
  deploy/start-superlink.sh --insecure --port 9093
  deploy/start-superlink.sh --host 0.0.0.0 --certs-dir certificates --auth \
      --database state/superlink.db --log-file logs/superlink.log
EOF
}

die() { echo "start-superlink.sh: error: $*" >&2; exit 2; }

host=127.0.0.1
port=8000
certs_dir=""
ca="" cert="" key=""
insecure=0
auth=0
database=""
log_file=""
runtime_deps=0
dry_run=0
extra=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --host) host=${2:?--host needs a value}; shift 2 ;;
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --certs-dir) certs_dir=${2:?--certs-dir needs a directory}; shift 2 ;;
        --ca) ca=${2:?--ca needs a file}; shift 2 ;;
        --cert) cert=${2:?--cert needs a file}; shift 2 ;;
        --key) key=${2:?--key needs a file}; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --auth) auth=1; shift ;;
        --database) database=${2:?--database needs a file}; shift 2 ;;
        --log-file) log_file=${2:?--log-file needs a file}; shift 2 ;;
        --allow-runtime-deps) runtime_deps=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

[[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]] || die "--port must be 1..65535, got '$port'"

if [[ -n ${FLWR_BIN_DIR:-} ]]; then
    # The SuperLink starts flower-superexec and flwr-serverapp by name.
    export PATH="$FLWR_BIN_DIR:$PATH"
fi
cmd=(flower-superlink --host "$host" --port "$port")

if [[ $insecure == 1 ]]; then
    [[ $auth == 0 ]] || die "--auth needs TLS; drop --insecure and pass --certs-dir"
    cmd+=(--insecure)
else
    [[ -n $certs_dir ]] && { ca=${ca:-$certs_dir/ca.crt}; cert=${cert:-$certs_dir/server.crt}; key=${key:-$certs_dir/server.key}; }
    [[ -n $ca && -n $cert && -n $key ]] ||
        die "TLS needs --certs-dir (or --ca, --cert and --key); use --insecure only on loopback"
    for f in "$ca" "$cert" "$key"; do [[ -f $f ]] || die "file not found: $f (run deploy/gen-certs.sh)"; done
    cmd+=(--ssl-ca-certfile "$ca" --ssl-certfile "$cert" --ssl-keyfile "$key")
fi
[[ $auth == 1 ]] && cmd+=(--enable-supernode-auth)
[[ -n $database ]] && cmd+=(--database "$database")
[[ -n $log_file ]] && cmd+=(--log-file "$log_file")
[[ $runtime_deps == 0 ]] && cmd+=(--disable-runtime-dependency-installation)
cmd+=("${extra[@]+"${extra[@]}"}")

if [[ $dry_run == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
command -v flower-superlink >/dev/null ||
    die "flower-superlink not found; activate the environment where flwr is installed or set FLWR_BIN_DIR"
# Flower opens these files but not their directories (a fresh clone has no logs/ or state/).
[[ -n $database ]] && mkdir -p "$(dirname "$database")"
[[ -n $log_file ]] && mkdir -p "$(dirname "$log_file")"
exec "${cmd[@]}"
