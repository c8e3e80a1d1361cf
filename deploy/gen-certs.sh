#!/usr/bin/env bash
# Create the TLS material and SuperNode keys for an edgebloom deployment.
#
#   OUT/ca.crt, OUT/ca.key            certificate authority (keep ca.key offline)
#   OUT/server.crt, OUT/server.key    SuperLink certificate, signed by the CA
#   OUT/nodes/<name>.key, <name>.pub  one ECDSA key pair per SuperNode
#
# Re-running keeps every existing file; --force re-creates what this run covers.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/gen-certs.sh [options]

Create a CA, a SuperLink server certificate and per-SuperNode ECDSA key pairs.

Options:
  --out DIR        Output directory (default: ./certificates)
  --dns NAMES      Comma-separated DNS names of the SuperLink (default: localhost)
  --ip IPS         Comma-separated IP addresses of the SuperLink (default: 127.0.0.1,::1)
  --nodes N        Create key pairs node-0 .. node-<N-1> (default: 0)
  --node NAME      Create a key pair named NAME (repeatable; letters, digits, . _ -)
  --days DAYS      Certificate validity in days (default: 825)
  --force          Overwrite existing files instead of keeping them
  -h, --help       Show this help and exit

The server certificate always also covers localhost, 127.0.0.1 and ::1: the
SuperLink's own SuperExec reaches the SuperLink over loopback with TLS.

Node keys are OpenSSH ECDSA P-384 keys (ssh-keygen), the format that
`flwr supernode register <name>.pub` and
`flower-supernode --auth-supernode-private-key <name>.key` read.

Example (SuperLink reachable as superlink.lan and 192.168.1.10, three devices):
  deploy/gen-certs.sh --out certificates --dns superlink.lan --ip 192.168.1.10 --nodes 3
EOF
}

die() { echo "gen-certs.sh: error: $*" >&2; exit 2; }

out=./certificates
dns=localhost
ips=127.0.0.1,::1
num_nodes=0
node_names=()
days=825
force=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --dns) dns=${2?--dns needs a value}; shift 2 ;;
        --ip) ips=${2?--ip needs a value}; shift 2 ;;
        --nodes) num_nodes=${2:?--nodes needs a number}; shift 2 ;;
        --node) node_names+=("${2:?--node needs a name}"); shift 2 ;;
        --days) days=${2:?--days needs a number}; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

[[ $num_nodes =~ ^[0-9]+$ ]] || die "--nodes must be a non-negative integer, got '$num_nodes'"
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer, got '$days'"
for ((i = 0; i < num_nodes; i++)); do node_names+=("node-$i"); done
for name in "${node_names[@]+"${node_names[@]}"}"; do
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "--node '$name' may only use letters, digits, '.', '_' and '-'"
done
command -v openssl >/dev/null || die "openssl not found; install it (e.g. apt-get install openssl)"

# Loopback names are always included (see --help); user names come first so the
# certificate's CN is the name devices use.
san_dns=() san_ips=()
IFS=, read -r -a user_dns <<<"$dns"
IFS=, read -r -a user_ips <<<"$ips"
for name in "${user_dns[@]+"${user_dns[@]}"}" localhost; do
    if [[ -n $name && " ${san_dns[*]-} " != *" $name "* ]]; then san_dns+=("$name"); fi
done
for ip in "${user_ips[@]+"${user_ips[@]}"}" 127.0.0.1 ::1; do
    if [[ -n $ip && " ${san_ips[*]-} " != *" $ip "* ]]; then san_ips+=("$ip"); fi
done
san=""
for name in "${san_dns[@]}"; do san+="DNS:$name,"; done
for ip in "${san_ips[@]}"; do san+="IP:$ip,"; done
san=${san%,}

mkdir -p "$out/nodes"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Explicit extensions (not the system openssl.cnf) so the certificates pass the
# strict X.509 checks that Python >= 3.13 enables by default.
cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = edgebloom-ca
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = $san
EOF

new_ca=0
if [[ $force == 1 || ! -f $out/ca.key || ! -f $out/ca.crt ]]; then
    openssl ecparam -name secp384r1 -genkey -noout -out "$out/ca.key"
    openssl req -x509 -new -key "$out/ca.key" -sha384 -days "$days" \
        -config "$work/openssl.cnf" -extensions v3_ca -out "$out/ca.crt"
    new_ca=1
    echo "created $out/ca.crt and $out/ca.key"
else
    echo "kept    $out/ca.crt"
fi

if [[ $force == 1 || $new_ca == 1 || ! -f $out/server.key || ! -f $out/server.crt ]]; then
    openssl ecparam -name secp384r1 -genkey -noout -out "$out/server.key"
    openssl req -new -key "$out/server.key" -subj "/CN=${san_dns[0]}" -out "$work/server.csr"
    openssl x509 -req -in "$work/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha384 \
        -extfile "$work/openssl.cnf" -extensions v3_server -out "$out/server.crt"
    echo "created $out/server.crt (SAN: $san)"
else
    # Keeping a certificate that lacks a requested name would fail later with an
    # obscure TLS hostname error on the devices, so refuse here instead.
    have=$(openssl x509 -in "$out/server.crt" -noout -ext subjectAltName | tail -n 1)
    have=,$(echo "$have" | sed 's/IP Address:/IP:/g; s/0:0:0:0:0:0:0:1/::1/g; s/ //g'),
    for entry in ${san//,/ }; do
        [[ $have == *",$entry,"* ]] ||
            die "$out/server.crt exists but lacks $entry; delete $out/server.crt and $out/server.key and re-run to re-issue it from the same CA (devices keep trusting ca.crt)"
    done
    openssl verify -CAfile "$out/ca.crt" "$out/server.crt" >/dev/null ||
        die "$out/server.crt is not signed by $out/ca.crt; delete it and $out/server.key and re-run"
    echo "kept    $out/server.crt"
fi

for name in "${node_names[@]+"${node_names[@]}"}"; do
    key=$out/nodes/$name.key
    if [[ $force == 0 && -f $key && -f $out/nodes/$name.pub ]]; then
        echo "kept    $key"
        continue
    fi
    command -v ssh-keygen >/dev/null || die "ssh-keygen not found; install openssh-client"
    rm -f "$work/key" "$work/key.pub"
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "edgebloom $name" -f "$work/key"
    mv -f "$work/key" "$key"
    mv -f "$work/key.pub" "$out/nodes/$name.pub"
    echo "created $key and $out/nodes/$name.pub"
done

# Certificates and public keys are not secret; devices need to read them.
chmod 644 "$out/ca.crt" "$out/server.crt"
chmod 644 "$out"/nodes/*.pub 2>/dev/null || true
