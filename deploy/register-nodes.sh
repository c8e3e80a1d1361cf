#!/usr/bin/env bash
# Register SuperNode public keys with a SuperLink that runs with node
# authentication (--enable-supernode-auth). Keys already registered are skipped.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/register-nodes.sh [options] [PUBLIC_KEY.pub ...]

Register each SuperNode public key with `flwr supernode register`, so that the
SuperNode holding the matching private key may connect. A key that is already
registered is reported and skipped, so re-running is safe.

Options:
  --connection NAME  SuperLink connection in $FLWR_HOME/config.toml
                     (default: the connection marked default there)
  --keys-dir DIR     Register every DIR/*.pub (e.g. certificates/nodes)
  --dry-run          Print the commands instead of running them
  -h, --help         Show this help and exit

Each node is registered under its key's file name (node-0.pub -> node-0).
The SuperLink answers with the node ID it assigned; list them later with
`flwr supernode list NAME`.

Environment: FLWR_HOME (default ~/.flwr), FLWR_BIN_DIR (directory holding flwr)

Example:
  deploy/register-nodes.sh --connection edgebloom --keys-dir certificates/nodes
EOF
}

die() { echo "register-nodes.sh: error: $*" >&2; exit 2; }

connection=""
keys=()
dry_run=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --connection) connection=${2:?--connection needs a name}; shift 2 ;;
        --keys-dir)
            dir=${2:?--keys-dir needs a directory}; shift 2
            [[ -d $dir ]] || die "--keys-dir $dir is not a directory"
            found=0
            for f in "$dir"/*.pub; do [[ -f $f ]] && { keys+=("$f"); found=1; }; done
            [[ $found == 1 ]] || die "no *.pub files in $dir (run deploy/gen-certs.sh --nodes N)"
            ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option '$1'" ;;
        *) keys+=("$1"); shift ;;
    esac
done
[[ ${#keys[@]} -gt 0 ]] || { usage >&2; die "give public key files or --keys-dir"; }
[[ -n ${FLWR_BIN_DIR:-} ]] && export PATH="$FLWR_BIN_DIR:$PATH"

failed=0
for key in "${keys[@]}"; do
    [[ -f $key ]] || die "public key not found: $key"
    name=$(basename "$key" .pub)
    cmd=(flwr supernode register "$key" ${connection:+"$connection"} --name "$name" --format json)
    if [[ $dry_run == 1 ]]; then
        printf '%q ' "${cmd[@]}"
        echo
        continue
    fi
    # flwr exits 0 even when the JSON says "success": false, so read the JSON.
    reply=$("${cmd[@]}" 2>&1) || true
    if node_id=$(grep -o '"node-id": *[0-9]*' <<<"$reply" | grep -o '[0-9]*$'); then
        echo "registered $name as node $node_id"
    elif grep -q "already in use" <<<"$reply"; then
        echo "skipped    $name: already registered"
    else
        echo "failed     $name: $reply" >&2
        failed=1
    fi
done
exit "$failed"
