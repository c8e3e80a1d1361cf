#!/usr/bin/env bash
# Start a Flower SuperNode (flwr 1.41) on a device; the script execs into
# flower-supernode, so its PID is the SuperNode's PID (for systemd and pid files).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/start-supernode.sh [options] [-- extra flower-supernode flags]

Start a Flower SuperNode that connects to a SuperLink and runs edgebloom's
ClientApp on this device's own data file.

Options:
  --superlink HOST:PORT  SuperLink address (default: 127.0.0.1:8000)
  --ca FILE          CA certificate that signed the SuperLink's certificate
                     (certificates/ca.crt from gen-certs.sh)
  --insecure         Plain HTTP without TLS (loopback experiments only)
  --auth-key FILE    This node's private key (certificates/nodes/<name>.key);
                     needed when the SuperLink runs with --auth
  --data-path FILE   This device's .npz file (from deploy/split_dataset.py);
                     passed as node config data-path
  --node-config STR  More node config, e.g. "device-name='pi-4'"
  --port PORT        Port of this SuperNode's local Runtime API (default: 9094);
                     each SuperNode on one machine needs its own
  --max-retries N    Give up after N failed connection attempts (default: never)
  --max-wait-time S  Give up after S seconds without a connection (default: never)
  --log-file FILE    Append the SuperNode's output to FILE instead of the terminal
                     (its directory is created if missing); under systemd the
                     journal has it already
  --dry-run          Print the command instead of running it
  -h, --help         Show this help and exit

The Runtime API binds to 127.0.0.1 and is unauthenticated: never expose it.

Environment: FLWR_BIN_DIR  directory holding flower-supernode (default: from PATH)

Example:
  deploy/start-supernode.sh --superlink superlink.lan:9093 --ca certificates/ca.crt \
      --auth-key certificates/nodes/node-0.key --data-path data/partition-0.npz
EOF
}

die() { echo "start-supernode.sh: error: $*" >&2; exit 2; }

superlink=127.0.0.1:8000
ca=""
insecure=0
auth_key=""
data_path=""
node_config=""
port=9094
max_retries=""
max_wait=""
log_file=""
dry_run=0
extra=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --superlink) superlink=${2:?--superlink needs HOST:PORT}; shift 2 ;;
        --ca) ca=${2:?--ca needs a file}; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --auth-key) auth_key=${2:?--auth-key needs a file}; shift 2 ;;
        --data-path) data_path=${2:?--data-path needs a file}; shift 2 ;;
        --node-config) node_config=${2?--node-config needs a value}; shift 2 ;;
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --max-retries) max_retries=${2:?--max-retries needs a number}; shift 2 ;;
        --max-wait-time) max_wait=${2:?--max-wait-time needs seconds}; shift 2 ;;
        --log-file) log_file=${2:?--log-file needs a file}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

[[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]] || die "--port must be 1..65535, got '$port'"
[[ $superlink == *:* ]] || die "--superlink must be HOST:PORT, got '$superlink'"
if [[ -n ${FLWR_BIN_DIR:-} ]]; then
    # The SuperNode starts flower-superexec and flwr-clientapp by name.
    export PATH="$FLWR_BIN_DIR:$PATH"
fi

cmd=(flower-supernode --superlink "$superlink" --port "$port")
if [[ $insecure == 1 ]]; then
    [[ -z $ca ]] || die "--insecure and --ca exclude each other"
    cmd+=(--insecure)
else
    [[ -n $ca ]] || die "TLS needs --ca FILE (the CA certificate); use --insecure only on loopback"
    [[ -f $ca ]] || die "CA certificate not found: $ca"
    cmd+=(--root-certificates "$ca")
fi
if [[ -n $auth_key ]]; then
    [[ -f $auth_key ]] || die "private key not found: $auth_key (run deploy/gen-certs.sh --node NAME)"
    cmd+=(--auth-supernode-private-key "$auth_key")
fi

config=$node_config
if [[ -n $data_path ]]; then
    [[ -f $data_path ]] || die "data file not found: $data_path (make it with deploy/split_dataset.py)"
    # Absolute, because the ClientApp runs in another working directory.
    data_path=$(cd "$(dirname "$data_path")" && pwd)/$(basename "$data_path")
    [[ $data_path != *"'"* ]] || die "--data-path must not contain a single quote"
    config="data-path='$data_path'${config:+ $config}"
fi
[[ -n $config ]] && cmd+=(--node-config "$config")
[[ -n $max_retries ]] && cmd+=(--max-retries "$max_retries")
[[ -n $max_wait ]] && cmd+=(--max-wait-time "$max_wait")
cmd+=("${extra[@]+"${extra[@]}"}")

if [[ $dry_run == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
command -v flower-supernode >/dev/null ||
    die "flower-supernode not found; activate the environment where flwr is installed or set FLWR_BIN_DIR"
if [[ -n $log_file ]]; then
    # flower-supernode has no log-file flag: redirect its output (a fresh clone has no logs/).
    mkdir -p "$(dirname "$log_file")"
    exec >>"$log_file" 2>&1
fi
exec "${cmd[@]}"
