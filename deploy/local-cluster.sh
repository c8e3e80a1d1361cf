#!/usr/bin/env bash
# A SuperLink and N SuperNodes on loopback, each node with its own data file,
# driven through the same start-*.sh scripts as a real deployment.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/local-cluster.sh up|down|status [options]

  up       Start a SuperLink and N SuperNodes on 127.0.0.1 (starts only what is
           not already running, so a second `up` restarts crashed processes)
  down     Stop exactly the processes recorded in DIR/pids, with the process
           group each one leads (its superexec and apps), and wait for them
  status   Show which recorded processes are alive (exit 0 if all are, else 3)

Options (up):
  --nodes N          Number of SuperNodes (default: 2)
  --tls              Serve the SuperLink over TLS (certificates in DIR/certs)
  --auth             Also require node authentication: every node key is
                     registered with `flwr supernode register` first (implies --tls)
  --database         Keep SuperLink state in DIR/superlink/state.db, so runs and
                     registered nodes survive a SuperLink restart
  --port P           SuperLink port (default: 9093); SuperNode i uses P+1+i for
                     its local Runtime API
  --dataset NAME     Dataset to split across the nodes (default: digits)
  --partitioner P    iid, dirichlet, shard, pathological, natural (default: iid)
  --alpha A          Dirichlet concentration (default: 0.5)
  --seed S           Seed of the split; keep equal to the run config's seed (default: 42)
Options (all):
  --dir DIR          Cluster state directory (default: ./.local-cluster)
  -h, --help         Show this help and exit

After `up`, run the app from the project directory:
  FLWR_HOME=DIR/flwr-home flwr run . local-cluster --stream
Relative output-dir values resolve against the directory `up` was run from
(EDGEBLOOM_OUTPUT_ROOT, if set, wins).

Layout of DIR: pids, cluster.env, logs/, data/partition-<i>.npz, certs/,
flwr-home/config.toml (the `flwr` CLI's connection), superlink/ and node-<i>/
(each process's own FLWR_HOME, where Flower installs the app it runs).
EOF
}

die() { echo "local-cluster.sh: error: $*" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -gt 0 ]] || { usage >&2; exit 2; }
action=$1; shift
case "$action" in
    up|down|status) ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown action '$action' (use up, down or status)" ;;
esac

nodes=2 tls=0 auth=0 database=0 port=9093
dataset=digits partitioner=iid alpha=0.5 seed=42
dir=./.local-cluster
given=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) nodes=${2:?--nodes needs a number}; given+=(nodes); shift 2 ;;
        --tls) tls=1; given+=(tls); shift ;;
        --auth) auth=1; tls=1; given+=(auth tls); shift ;;
        --database) database=1; given+=(database); shift ;;
        --port) port=${2:?--port needs a number}; given+=(port); shift 2 ;;
        --dataset) dataset=${2:?--dataset needs a name}; shift 2 ;;
        --partitioner) partitioner=${2:?--partitioner needs a name}; shift 2 ;;
        --alpha) alpha=${2:?--alpha needs a number}; shift 2 ;;
        --seed) seed=${2:?--seed needs a number}; shift 2 ;;
        --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$nodes'"
[[ $port =~ ^[0-9]+$ && $port -ge 1024 && $((port + nodes)) -le 65535 ]] ||
    die "--port must leave room for $nodes node ports below 65536 and be >= 1024, got '$port'"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pids_file=$dir/pids
env_file=$dir/cluster.env

# ---------------------------------------------------------------- processes
# alive PID NAME: the PID runs and is still our Flower process (PIDs get reused);
# a zombie counts as gone.
alive() {
    local pid=$1 binary=$2 state
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    [[ -n $state && $state != Z* ]] || return 1
    ps -o args= -p "$pid" 2>/dev/null | grep -q -- "$binary"
}

binary_of() { [[ $1 == superlink ]] && echo flower-superlink || echo flower-supernode; }

# Flower's daemons start flower-superexec, which starts the apps; each gets
# --parent-pid and exits once its parent is gone. But a dead parent that is a
# zombie still "exists" for them, so `down` waits for them and ends stragglers.
# A SuperNode's superexec and ClientApps stay in the SuperNode's process group
# (`up` starts each daemon as the leader of its own group), so `down` also ends
# what is left of that group: a ClientApp started after the listing below, or
# one orphaned when its SuperNode was killed, retries its SuperNode forever.
# (The pattern goes through the environment: in awk's arguments it would match awk.)
children_of() {
    ps -eo pid=,args= | P="--parent-pid $1" awk '{ i = index($0, ENVIRON["P"]) }
        i && substr($0, i + length(ENVIRON["P"]), 1) ~ /^( |)$/ { print $1 }'
}
descendants_of() {
    local child
    for child in $(children_of "$1"); do
        echo "$child"
        descendants_of "$child"
    done
}

stop_children() {  # PIDs...: wait up to 10 s for each, then SIGTERM
    local child
    for child in "$@"; do
        wait_gone "$child" "--parent-pid" 10 || kill -TERM "$child" 2>/dev/null || true
    done
}

# Live members of process group $1 that are Flower processes (a group ID is not
# reused while any member lives, so these are ours).
flower_group_members() {
    ps -eo pid=,pgid=,stat=,args= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ && /(flower-super|flwr-)/ { print $1 }'
}

stop_group() {  # PGID: SIGTERM what is left of the group, SIGKILL it after 10 s
    local pgid=$1 t
    [[ -n $(flower_group_members "$pgid") ]] || return 0
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for ((t = 0; t < 100; t++)); do
        [[ -n $(flower_group_members "$pgid") ]] || return 0
        sleep 0.1
    done
    echo "process group $pgid ignored SIGTERM for 10 s; sending SIGKILL" >&2
    kill -KILL -- "-$pgid" 2>/dev/null || true
}

wait_gone() {
    local pid=$1 binary=$2 secs=$3
    for ((t = 0; t < secs * 10; t++)); do
        alive "$pid" "$binary" || return 0
        sleep 0.1
    done
    return 1
}

stop_one() {
    local name=$1 pid=$2 binary children
    binary=$(binary_of "$name")
    # shellcheck disable=SC2207
    children=($(descendants_of "$pid"))
    if ! alive "$pid" "$binary"; then
        echo "$name (pid $pid) is not running"
        stop_children "${children[@]+"${children[@]}"}"
        stop_group "$pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$binary" 15; then
        echo "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" "$binary" 5 || true
    fi
    stop_children "${children[@]+"${children[@]}"}"
    stop_group "$pid"
    echo "stopped $name (pid $pid)"
}

do_down() {
    [[ -f $pids_file ]] || { echo "no cluster recorded in $dir (no pids file)"; return 0; }
    # Nodes first, so they do not spend the SuperLink's last seconds reconnecting.
    local name pid
    while read -r name pid; do
        [[ $name == superlink ]] || stop_one "$name" "$pid"
    done <"$pids_file"
    while read -r name pid; do
        [[ $name == superlink ]] && stop_one "$name" "$pid"
    done <"$pids_file"
    rm -f "$pids_file"
}

do_status() {
    [[ -f $pids_file ]] || { echo "no cluster recorded in $dir"; return 3; }
    local name pid all=0
    # shellcheck disable=SC1090
    source "$env_file"
    while read -r name pid; do
        if alive "$pid" "$(binary_of "$name")"; then
            printf '%-10s pid %-8s running\n' "$name" "$pid"
        else
            printf '%-10s pid %-8s stopped (log: %s)\n' "$name" "$pid" "$dir/logs/$name.log"
            all=3
        fi
    done <"$pids_file"
    echo "SuperLink: 127.0.0.1:$port ($([[ $tls == 1 ]] && echo TLS || echo insecure)$([[ $auth == 1 ]] && echo ', node auth'))"
    echo "CLI:       FLWR_HOME=$dir/flwr-home flwr run . local-cluster --stream"
    return "$all"
}

# -------------------------------------------------------------------- up
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PIDs recorded before this `up` (read once: `up` rewrites the file as it goes).
recorded_pid() { awk -v n="$1" '$1 == n {print $2}' <<<"$old_pids"; }

flwr_cli() { FLWR_HOME=$dir/flwr-home flwr "$@"; }

online_nodes() {
    flwr_cli supernode list local-cluster --format json 2>/dev/null | grep -c '"status": "online"' || true
}

start_daemon() {  # name script args...: start detached, record the PID
    local name=$1; shift
    local home=$dir/$name
    mkdir -p "$home"
    # Each process gets its own FLWR_HOME: Flower installs the app there per run.
    # Job control on: the daemon leads its own process group (PGID = its PID), which
    # its superexec and apps join, so `down` can end them all and a Ctrl-C in the
    # terminal of `up` does not reach it.
    set -m
    FLWR_HOME=$home EDGEBLOOM_OUTPUT_ROOT=$output_root \
        nohup "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
    set +m
    keep_pid "$name" $!
    echo "started $name (pid $!, log $dir/logs/$name.log)"
}

# Record at once, keeping live entries of the previous `up` not yet revisited:
# a failure later in `up` must still let `down` find every process.
keep_pid() {
    new_pids+=("$1 $2")
    local names=" ${new_pids[*]%% *} " name pid
    {
        printf '%s\n' "${new_pids[@]}"
        while read -r name pid; do
            [[ -n $name && $names != *" $name "* ]] || continue
            if alive "$pid" "$(binary_of "$name")"; then echo "$name $pid"; fi
        done <<<"$old_pids"
    } >"$pids_file"
}

do_up() {
    if [[ -f $env_file ]]; then
        local want_nodes=$nodes want_tls=$tls want_auth=$auth want_db=$database want_port=$port
        # shellcheck disable=SC1090
        source "$env_file"
        # A running cluster keeps its shape; flags given now must agree with it.
        if [[ -f $pids_file ]]; then
            for key in "${given[@]+"${given[@]}"}"; do
                case $key in
                    nodes) [[ $want_nodes == "$nodes" ]] ;; tls) [[ $want_tls == "$tls" ]] ;;
                    auth) [[ $want_auth == "$auth" ]] ;; database) [[ $want_db == "$database" ]] ;;
                    port) [[ $want_port == "$port" ]] ;;
                esac || die "a cluster with other settings is recorded in $dir ($(tr '\n' ' ' <"$env_file")); run 'down' first"
            done
        else
            nodes=$want_nodes tls=$want_tls auth=$want_auth database=$want_db port=$want_port
        fi
    fi
    printf 'nodes=%s\ntls=%s\nauth=%s\ndatabase=%s\nport=%s\n' "$nodes" "$tls" "$auth" "$database" "$port" >"$env_file"

    command -v flower-superlink >/dev/null || [[ -n ${FLWR_BIN_DIR:-} ]] ||
        die "flower-superlink not found; activate the environment where flwr is installed or set FLWR_BIN_DIR"
    export FLWR_BIN_DIR=${FLWR_BIN_DIR:-$(dirname "$(command -v flower-superlink)")}
    export PATH="$FLWR_BIN_DIR:$PATH"
    local python=${PYTHON:-$FLWR_BIN_DIR/python}
    [[ -x $python ]] || python=python3
    output_root=${EDGEBLOOM_OUTPUT_ROOT:-$PWD}
    mkdir -p "$dir/logs" "$dir/flwr-home"

    # Data: one file per node, re-split only when a file is missing or the split changed.
    local i missing=0
    local split_args=(--dataset "$dataset" --partitioner "$partitioner" --alpha "$alpha" --seed "$seed"
        --num-partitions "$nodes")
    for ((i = 0; i < nodes; i++)); do [[ -f $dir/data/partition-$i.npz ]] || missing=1; done
    [[ "$(cat "$dir/data/split-args" 2>/dev/null)" == "${split_args[*]}" ]] || missing=1
    if [[ $missing == 1 ]]; then
        rm -f "$dir"/data/partition-*.npz
        "$python" "$here/split_dataset.py" "${split_args[@]}" --out "$dir/data"
        echo "${split_args[*]}" >"$dir/data/split-args"
    fi

    local superlink_tls=(--insecure) node_tls=(--insecure)
    if [[ $tls == 1 ]]; then
        "$here/gen-certs.sh" --out "$dir/certs" --nodes "$nodes" >/dev/null
        superlink_tls=(--certs-dir "$dir/certs")
        node_tls=(--ca "$dir/certs/ca.crt")
    fi

    # The `flwr` CLI reads connections from $FLWR_HOME/config.toml.
    {
        echo '[superlink]'
        echo 'default = "local-cluster"'
        echo
        echo '[superlink.local-cluster]'
        echo "address = \"127.0.0.1:$port\""
        if [[ $tls == 1 ]]; then
            echo "root-certificates = \"$dir/certs/ca.crt\""
        else
            echo 'insecure = true'
        fi
    } >"$dir/flwr-home/config.toml"

    old_pids=$(cat "$pids_file" 2>/dev/null || true)
    new_pids=()
    local pid superlink_started=0
    pid=$(recorded_pid superlink)
    if [[ -n $pid ]] && alive "$pid" flower-superlink; then
        keep_pid superlink "$pid"
        echo "superlink already running (pid $pid)"
    else
        port_busy "$port" && die "port $port is in use; pick another with --port"
        local extra=()
        [[ $auth == 1 ]] && extra+=(--auth)
        [[ $database == 1 ]] && extra+=(--database "$dir/superlink/state.db")
        start_daemon superlink "$here/start-superlink.sh" --port "$port" "${superlink_tls[@]}" \
            "${extra[@]+"${extra[@]}"}"
        superlink_started=1
    fi

    local t
    for ((t = 0; t < 300; t++)); do
        port_busy "$port" && break
        alive "${new_pids[0]#superlink }" flower-superlink ||
            die "the SuperLink exited; see $dir/logs/superlink.log"
        sleep 0.1
    done
    port_busy "$port" || die "the SuperLink did not open port $port within 30 s; see $dir/logs/superlink.log"

    if [[ $auth == 1 && $superlink_started == 1 ]]; then
        local keys=()
        for ((i = 0; i < nodes; i++)); do keys+=("$dir/certs/nodes/node-$i.pub"); done
        FLWR_HOME=$dir/flwr-home "$here/register-nodes.sh" --connection local-cluster "${keys[@]}"
    fi

    for ((i = 0; i < nodes; i++)); do
        local name=node-$i
        pid=$(recorded_pid "$name")
        if [[ -n $pid ]] && alive "$pid" flower-supernode; then
            keep_pid "$name" "$pid"
            echo "$name already running (pid $pid)"
            continue
        fi
        port_busy $((port + 1 + i)) && die "port $((port + 1 + i)) (Runtime API of $name) is in use"
        local auth_args=()
        [[ $auth == 1 ]] && auth_args=(--auth-key "$dir/certs/nodes/$name.key")
        start_daemon "$name" "$here/start-supernode.sh" --superlink "127.0.0.1:$port" \
            --port $((port + 1 + i)) "${node_tls[@]}" "${auth_args[@]+"${auth_args[@]}"}" \
            --data-path "$dir/data/partition-$i.npz"
    done

    # Ready when the SuperLink lists every node online.
    local online=0
    for ((t = 0; t < 90; t++)); do
        online=$(online_nodes)
        [[ $online -ge $nodes ]] && break
        for entry in "${new_pids[@]}"; do
            read -r name pid <<<"$entry"
            alive "$pid" "$(binary_of "$name")" || die "$name exited; see $dir/logs/$name.log"
        done
        sleep 1
    done
    [[ $online -ge $nodes ]] || die "only $online of $nodes SuperNodes came online within 90 s; see $dir/logs/"

    cat <<EOF

Local cluster up: SuperLink 127.0.0.1:$port$([[ $tls == 1 ]] && echo " (TLS)")$([[ $auth == 1 ]] && echo " with node authentication"), $nodes SuperNodes online.
Run the app from the project directory:
  FLWR_HOME=$dir/flwr-home flwr run . local-cluster --stream
Follow and stop runs:
  FLWR_HOME=$dir/flwr-home flwr ls local-cluster
  FLWR_HOME=$dir/flwr-home flwr log <run-id> local-cluster
  FLWR_HOME=$dir/flwr-home flwr stop <run-id> local-cluster
Stop the cluster:
  $0 down --dir $dir
EOF
}

case "$action" in
    up) do_up ;;
    down) do_down ;;
    status) do_status ;;
esac
