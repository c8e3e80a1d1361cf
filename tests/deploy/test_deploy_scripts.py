"""Fast checks of deploy/: help texts, bash syntax, flags against the installed flwr
CLIs, certificates and node keys, and the per-device dataset split. No Flower
process is started here (see test_local_cluster.py for that)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCRIPTS = [
    "gen-certs.sh",
    "start-superlink.sh",
    "start-supernode.sh",
    "register-nodes.sh",
    "local-cluster.sh",
]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def flwr_version() -> str:
    from flwr.supercore.version import package_version

    return package_version


def run(cmd: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def flags_of(command_line: str) -> tuple[str, set[str]]:
    """Program name and the ``--flags`` of a printed command line."""
    words = shlex.split(command_line)
    return Path(words[0]).name, {w.split("=")[0] for w in words[1:] if FLAG.fullmatch(w.split("=")[0])}


def load_split_module():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("split_dataset", DEPLOY / "split_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row_multiset(x: np.ndarray) -> Counter:
    return Counter(row.tobytes() for row in x.reshape(len(x), -1))


# ------------------------------------------------------------------ help, syntax
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help_and_valid_bash(script: str, tool_env) -> None:
    path = DEPLOY / script

    syntax = run(["bash", "-n", str(path)], tool_env())
    help_ = run([str(path), "--help"], tool_env())

    assert syntax.returncode == 0, syntax.stderr
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("Usage: deploy/" + script)
    assert "set -euo pipefail" in path.read_text()


def test_split_dataset_has_help(tool_env) -> None:
    proc = run([sys.executable, str(DEPLOY / "split_dataset.py"), "--help"], tool_env())

    assert proc.returncode == 0, proc.stderr
    assert "--num-partitions" in proc.stdout and "--test-fraction" in proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_reject_unknown_flags(script: str, tool_env) -> None:
    args = ["status", "--bogus"] if script == "local-cluster.sh" else ["--bogus"]

    proc = run([str(DEPLOY / script), *args], tool_env())

    assert proc.returncode == 2
    assert "--bogus" in proc.stderr


# ------------------------------------------------- flags against the installed CLIs
def test_start_superlink_flags_exist_in_flower_superlink(tmp_path: Path, tool_env, cli_flags) -> None:
    for name in ("ca.crt", "server.crt", "server.key"):
        (tmp_path / name).write_text("x")
    variants = [
        ["--insecure"],
        [
            "--host",
            "0.0.0.0",
            "--port",
            "9093",
            "--certs-dir",
            str(tmp_path),
            "--auth",
            "--database",
            str(tmp_path / "state.db"),
            "--log-file",
            str(tmp_path / "log"),
        ],
        ["--certs-dir", str(tmp_path), "--allow-runtime-deps"],
    ]
    seen: set[str] = set()
    for args in variants:
        proc = run([str(DEPLOY / "start-superlink.sh"), "--dry-run", *args], tool_env())
        assert proc.returncode == 0, proc.stderr
        program, flags = flags_of(proc.stdout)
        assert program == "flower-superlink"
        assert flags <= cli_flags("flower-superlink"), flags - cli_flags("flower-superlink")
        seen |= flags

    assert {"--enable-supernode-auth", "--database", "--ssl-certfile", "--insecure"} <= seen
    # Without --allow-runtime-deps the SuperLink must not `uv sync` the app (see README).
    assert "--disable-runtime-dependency-installation" in seen


def test_start_supernode_flags_exist_in_flower_supernode(tmp_path: Path, tool_env, cli_flags) -> None:
    for name in ("ca.crt", "node.key", "part.npz"):
        (tmp_path / name).write_text("x")
    args = [
        "--superlink",
        "10.0.0.1:9093",
        "--ca",
        str(tmp_path / "ca.crt"),
        "--auth-key",
        str(tmp_path / "node.key"),
        "--data-path",
        str(tmp_path / "part.npz"),
        "--node-config",
        "device-name='pi'",
        "--port",
        "9100",
        "--max-retries",
        "3",
        "--max-wait-time",
        "60",
    ]

    proc = run([str(DEPLOY / "start-supernode.sh"), "--dry-run", *args], tool_env())

    assert proc.returncode == 0, proc.stderr
    program, flags = flags_of(proc.stdout)
    assert program == "flower-supernode"
    assert flags <= cli_flags("flower-supernode"), flags - cli_flags("flower-supernode")
    words = shlex.split(proc.stdout)
    node_config = words[words.index("--node-config") + 1]
    assert node_config == f"data-path='{tmp_path / 'part.npz'}' device-name='pi'"


def test_register_nodes_flags_exist_in_flwr_supernode_register(tmp_path: Path, tool_env, cli_flags) -> None:
    (tmp_path / "node-0.pub").write_text("x")

    proc = run(
        [str(DEPLOY / "register-nodes.sh"), "--dry-run", "--connection", "lab", "--keys-dir", str(tmp_path)],
        tool_env(),
    )

    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout)
    assert words[:3] == ["flwr", "supernode", "register"] and words[4] == "lab"
    assert words[words.index("--name") + 1] == "node-0"
    _, flags = flags_of(proc.stdout)
    assert flags <= cli_flags("flwr", "supernode", "register")


def test_local_cluster_passes_only_flags_its_tools_accept(tool_env) -> None:
    text = (DEPLOY / "local-cluster.sh").read_text()
    body = text[text.index("# ---------------------------------------------------------------- processes") :]
    accepted: set[str] = set()
    for script in ("start-superlink.sh", "start-supernode.sh", "register-nodes.sh", "gen-certs.sh"):
        accepted |= set(FLAG.findall(run([str(DEPLOY / script), "--help"], tool_env()).stdout))
    accepted |= set(
        FLAG.findall(run([sys.executable, str(DEPLOY / "split_dataset.py"), "--help"], tool_env()).stdout)
    )
    own = set(FLAG.findall(run([str(DEPLOY / "local-cluster.sh"), "--help"], tool_env()).stdout))

    used = set(FLAG.findall(body)) - {"--parent-pid"}  # read from Flower's own superexec command lines

    assert used, "expected local-cluster.sh to call the other scripts with flags"
    assert used <= accepted | own | {"--format"}, used - accepted - own


def test_flwr_cli_commands_in_scripts_and_readme_exist(cli_flags) -> None:
    readme = (DEPLOY / "README.md").read_text()

    assert {"--stream", "--run-config"} <= cli_flags("flwr", "run")
    assert "--format" in cli_flags("flwr", "ls") and "--run-id" in cli_flags("flwr", "ls")
    assert "--format" in cli_flags("flwr", "supernode", "list")
    for command in ("flwr log", "flwr stop", "flwr ls", "flwr supernode list", "flwr config list"):
        assert command in readme
    for sub in (("log",), ("stop",), ("config", "list")):
        assert "--help" in cli_flags("flwr", *sub)


def test_compose_uses_official_images_at_the_installed_flwr_version_and_real_flags(cli_flags) -> None:
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yml").read_text())
    version = flwr_version()

    services = compose["services"]
    assert {"superlink", "supernode-0", "supernode-1"} <= set(services)
    for name, service in services.items():
        role = "superlink" if name == "superlink" else "supernode"
        assert service["build"]["args"]["BASE_IMAGE"] == f"flwr/{role}:{version}"
        flags = {w for w in service["command"] if w.startswith("--")}
        assert flags <= cli_flags(f"flower-{role}"), (name, flags - cli_flags(f"flower-{role}"))
    superlink = services["superlink"]
    assert {
        "--ssl-certfile",
        "--enable-supernode-auth",
        "--database",
        "--disable-runtime-dependency-installation",
    } <= set(superlink["command"])
    database = superlink["command"][superlink["command"].index("--database") + 1]
    assert any(v.endswith(":/app/" + str(Path(database).parent)) for v in superlink["volumes"])
    assert "superlink-state" in compose["volumes"]
    assert superlink["ports"] == ["9093:9093"]
    for node in ("supernode-0", "supernode-1"):
        command = services[node]["command"]
        assert "--root-certificates" in command and "--auth-supernode-private-key" in command
        assert command[command.index("--node-config") + 1].startswith("data-path=")


def test_dockerfile_builds_on_the_official_supernode_image_at_the_installed_version() -> None:
    text = (DEPLOY / "docker" / "Dockerfile.supernode").read_text()

    assert f"ARG BASE_IMAGE=flwr/supernode:{flwr_version()}" in text
    assert "FROM ${BASE_IMAGE}" in text
    assert "TORCH_INDEX_URL" in text and "cu1" in text  # CUDA variant documented
    pyproject = (REPO / "pyproject.toml").read_text()
    pin = re.search(r'"flwr\[simulation\]>=([\d.]+),<([\d.]+)"', pyproject)
    assert pin is not None and flwr_version().startswith(pin.group(1))


def test_systemd_unit_restarts_and_passes_real_flags(tmp_path: Path, tool_env, cli_flags) -> None:
    unit = (DEPLOY / "systemd" / "edgebloom-supernode.service").read_text()
    env_lines = (DEPLOY / "systemd" / "supernode.env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in env_lines if line and not line.startswith("#"))
    # Point the example's paths at files that exist, as on a configured device.
    for key in ("CA_CERT", "AUTH_KEY", "DATA_PATH"):
        env[key] = str(tmp_path / Path(env[key]).name)
        Path(env[key]).write_text("x")

    assert "Restart=on-failure" in unit
    assert "EnvironmentFile=/etc/edgebloom/supernode.env" in unit
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, flags=re.M | re.S).group(1).replace("\\\n", " ")
    words = shlex.split(exec_start)
    assert words[0].endswith("/deploy/start-supernode.sh")
    used_vars = set(re.findall(r"\$\{(\w+)\}", exec_start))
    assert used_vars <= set(env), used_vars - set(env)
    args = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w) for w in words[1:]]
    proc = run(
        [str(DEPLOY / "start-supernode.sh"), "--dry-run", *args], tool_env(FLWR_BIN_DIR=env["FLWR_BIN_DIR"])
    )
    assert proc.returncode == 0, proc.stderr
    program, flags = flags_of(proc.stdout)
    assert program == "flower-supernode"
    assert (
        {"--root-certificates", "--auth-supernode-private-key", "--node-config"}
        <= flags
        <= cli_flags("flower-supernode")
    )


# ------------------------------------------------- log files in a fresh clone
def stub_flower(bin_dir: Path, name: str) -> None:
    """A stand-in ``flower-*`` that, like the real one, opens ``--log-file`` (or logs to stdout)."""
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / name
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'while [[ $# -gt 0 ]]; do [[ $1 == --log-file ]] && { echo started >>"$2" || exit 1; }; shift; done\n'
        "echo started\n"
    )
    stub.chmod(0o755)


def test_start_superlink_creates_the_log_file_directory(tmp_path: Path, tool_env) -> None:
    # A fresh clone has no logs/: flower-superlink crashes opening logs/superlink.log.
    stub_flower(tmp_path / "bin", "flower-superlink")

    proc = run(
        [str(DEPLOY / "start-superlink.sh"), "--insecure", "--log-file", "logs/superlink.log"],
        tool_env(FLWR_BIN_DIR=str(tmp_path / "bin")),
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "logs" / "superlink.log").read_text() == "started\n"


def test_start_supernode_writes_its_output_to_a_log_file_in_a_new_directory(tmp_path: Path, tool_env) -> None:
    stub_flower(tmp_path / "bin", "flower-supernode")

    proc = run(
        [str(DEPLOY / "start-supernode.sh"), "--insecure", "--log-file", "logs/node-0.log"],
        tool_env(FLWR_BIN_DIR=str(tmp_path / "bin")),
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "logs" / "node-0.log").read_text() == "started\n"
    assert proc.stdout == ""


# ------------------------------------------------------------ certificates & keys
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    proc = subprocess.run(
        [
            str(DEPLOY / "gen-certs.sh"),
            "--out",
            str(out),
            "--dns",
            "superlink.lan,edge.example",
            "--ip",
            "192.168.1.10",
            "--nodes",
            "2",
            "--node",
            "pi-kitchen",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def test_server_certificate_names_the_requested_hosts_and_loopback(certs: Path) -> None:
    san = openssl("x509", "-in", str(certs / "server.crt"), "-noout", "-ext", "subjectAltName").stdout

    for entry in (
        "DNS:superlink.lan",
        "DNS:edge.example",
        "DNS:localhost",
        "IP Address:192.168.1.10",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ):
        assert entry in san


def test_server_certificate_verifies_against_the_ca_only(certs: Path, tmp_path: Path) -> None:
    good = openssl("verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.crt"))
    other = tmp_path / "other"
    subprocess.run(
        [str(DEPLOY / "gen-certs.sh"), "--out", str(other)], capture_output=True, timeout=120, check=True
    )
    bad = openssl("verify", "-CAfile", str(other / "ca.crt"), str(certs / "server.crt"))

    assert good.returncode == 0 and "OK" in good.stdout
    assert bad.returncode != 0


def test_tls_handshake_with_python_accepts_the_names_in_the_certificate(certs: Path) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    # Python >= 3.13 enables strict X.509 checks by default; apply them here too.
    context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(certs / "server.crt"), str(certs / "server.key"))

    for host, ok in (("superlink.lan", True), ("127.0.0.1", True), ("elsewhere.lan", False)):
        client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
        client = context.wrap_bio(client_in, client_out, server_hostname=host)
        srv = server.wrap_bio(server_in, server_out, server_side=True)
        error = None
        for _ in range(10):  # pump the handshake between the two in-memory ends
            for end in (client, srv):
                try:
                    end.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    error = exc
            server_in.write(client_out.read())
            client_in.write(server_out.read())
            if error:
                break
        assert (error is None) == ok, (host, error)


def test_node_keys_are_ecdsa_pairs_flower_accepts(certs: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key

    for name in ("node-0", "node-1", "pi-kitchen"):
        private = load_ssh_private_key((certs / "nodes" / f"{name}.key").read_bytes(), None)
        public = load_ssh_public_key((certs / "nodes" / f"{name}.pub").read_bytes())

        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        assert public.public_numbers() == private.public_key().public_numbers()
        assert try_load_public_key(certs / "nodes" / f"{name}.pub")  # what `flwr supernode register` reads
        assert (certs / "nodes" / f"{name}.key").stat().st_mode & 0o077 == 0


def test_rerunning_gen_certs_keeps_every_file_and_force_replaces_them(tmp_path: Path) -> None:
    cmd = [str(DEPLOY / "gen-certs.sh"), "--out", str(tmp_path), "--nodes", "1"]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)

    def digest() -> dict[str, str]:
        return {
            str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tmp_path.rglob("*"))
            if p.is_file()
        }

    before = digest()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    after_again = digest()
    forced = subprocess.run([*cmd, "--force"], capture_output=True, text=True, timeout=120)
    after_force = digest()

    assert again.returncode == 0 and after_again == before
    assert forced.returncode == 0 and set(after_force) == set(before)
    assert all(after_force[p] != before[p] for p in before)


def test_gen_certs_refuses_to_keep_a_certificate_without_a_requested_name(tmp_path: Path) -> None:
    subprocess.run(
        [str(DEPLOY / "gen-certs.sh"), "--out", str(tmp_path)], capture_output=True, timeout=120, check=True
    )

    proc = subprocess.run(
        [str(DEPLOY / "gen-certs.sh"), "--out", str(tmp_path), "--ip", "10.9.9.9"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 2
    assert "lacks IP:10.9.9.9" in proc.stderr


# ------------------------------------------------------------------ dataset split
def test_split_covers_the_training_rows_exactly_once_and_holds_out_a_tenth(tmp_path: Path) -> None:
    split = load_split_module()
    from tasks.data import load_arrays

    x_train, _, x_test, _ = load_arrays("digits", seed=42, test_fraction=0.2)

    devices = split.split_dataset("digits", partitioner="dirichlet", alpha=0.3, num_partitions=3, seed=42)
    split.write_devices(devices, tmp_path)

    files = sorted(tmp_path.glob("partition-*.npz"))
    assert [f.name for f in files] == ["partition-0.npz", "partition-1.npz", "partition-2.npz"]
    union: Counter = Counter()
    for path in files:
        with np.load(path) as npz:
            assert set(npz.files) == {"x_train", "y_train", "x_test", "y_test"}
            assert npz["x_train"].dtype == np.uint8 and npz["x_train"].shape[1:] == (8, 8)
            n = len(npz["y_train"]) + len(npz["y_test"])
            assert len(npz["y_test"]) == round(0.1 * n)
            union += row_multiset(npz["x_train"]) + row_multiset(npz["x_test"])
    assert union == row_multiset(x_train)
    # The server's central test rows never reach a device.
    test_only = set(row_multiset(x_test)) - set(row_multiset(x_train))
    assert len(test_only) > 100
    assert not test_only & set(union)


def test_device_files_equal_the_simulated_clients_data() -> None:
    split = load_split_module()
    from tasks.config import AppConfig
    from tasks.data import images_to_float
    from tasks.loading import client_data

    cfg = AppConfig.from_run_config({"partitioner": "shard", "seed": 7, "val-fraction": 0.1})

    devices = split.split_dataset("digits", partitioner="shard", num_partitions=4, seed=7, test_fraction=0.1)

    for i in (0, 3):
        simulated = client_data(cfg, i, 4)
        np.testing.assert_array_equal(images_to_float(devices[i]["x_train"]), simulated.x_train)
        np.testing.assert_array_equal(devices[i]["y_train"], simulated.y_train)
        np.testing.assert_array_equal(devices[i]["y_test"], simulated.y_val)


def test_synthetic_device_files_equal_the_simulated_devices() -> None:
    # Each Synthetic device is generated alone (tasks.data.synthetic_device) in both paths.
    split = load_split_module()
    from tasks.config import AppConfig
    from tasks.loading import client_data

    cfg = AppConfig.from_run_config(
        {"dataset": "synthetic", "synthetic-devices": 5, "seed": 3, "val-fraction": 0.1}
    )

    devices = split.split_dataset(
        "synthetic", partitioner="natural", num_partitions=5, seed=3, test_fraction=0.1
    )

    for i in (0, 4):
        simulated = client_data(cfg, i, 5)
        np.testing.assert_array_equal(devices[i]["x_train"], simulated.x_train)
        np.testing.assert_array_equal(devices[i]["y_test"], simulated.y_val)


def test_same_seed_gives_the_same_files_and_another_seed_does_not() -> None:
    split = load_split_module()

    a = split.split_dataset("digits", partitioner="iid", num_partitions=2, seed=1)
    b = split.split_dataset("digits", partitioner="iid", num_partitions=2, seed=1)
    c = split.split_dataset("digits", partitioner="iid", num_partitions=2, seed=2)

    np.testing.assert_array_equal(a[0]["y_train"], b[0]["y_train"])
    assert not np.array_equal(a[0]["x_train"], c[0]["x_train"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-partitions", "0"], "num-partitions=0 must be >= 1"),
        (["--num-partitions", "2", "--test-fraction", "1.0"], "test-fraction=1.0 must be in [0, 1)"),
        (
            ["--num-partitions", "2", "--partitioner", "natural"],
            "partitioner='natural' needs dataset='synthetic'",
        ),
        (["--num-partitions", "2", "--dataset", "nope"], "dataset='nope' is unknown"),
        (["--num-partitions", "2", "--partitioner", "zipf"], "invalid choice: 'zipf'"),
    ],
)
def test_split_cli_rejects_bad_flags_with_a_clear_message(
    args: list[str], message: str, tmp_path: Path, tool_env
) -> None:
    proc = run([sys.executable, str(DEPLOY / "split_dataset.py"), *args, "--out", str(tmp_path)], tool_env())

    assert proc.returncode == 2
    assert message in proc.stderr
    assert not list(tmp_path.glob("*.npz"))


def test_split_cli_writes_one_file_per_device(tmp_path: Path, tool_env) -> None:
    proc = run(
        [
            sys.executable,
            str(DEPLOY / "split_dataset.py"),
            "--dataset",
            "digits",
            "--partitioner",
            "dirichlet",
            "--alpha",
            "0.3",
            "--num-partitions",
            "3",
            "--seed",
            "42",
            "--out",
            str(tmp_path),
        ],
        tool_env(),
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == [f"partition-{i}.npz" for i in range(3)]
