"""deploy/README.md's two-machine path (Section 2), checked against its own text.

The fast tests read the guide: node keys land where Step 7 and the systemd unit
read them, every copy target is created first, the CLI connection goes to
``$FLWR_HOME/config.toml``, the first run is short, the CLI's misleading TLS
message has a troubleshooting row.

``test_guide_two_machine_path_on_loopback_from_a_fresh_clone`` (marker ``deploy``,
a few minutes) follows the guide command for command: it clones this repository's
HEAD once per "machine" (the SuperLink machine, devices node-0 and node-1, each
with its own HOME), runs every fenced block tagged ``guide:superlink`` /
``guide:device`` in order in that machine's shell (exports and the working
directory carry from block to block, as in a terminal), and starts the blocks
tagged ``background`` as processes it owns by PID. Only what loopback forces is
changed, and said here:

- ``ssh HOST CMD`` runs CMD in HOST's clone and ``scp`` is ``cp`` into HOST's
  clone (shell functions standing in for the real ones; ``/opt/edgebloom`` is the
  clone's path);
- ``superlink.lan:9093`` is ``127.0.0.1:<free port>``, ``--port 9093`` the same
  free port, ``--host 0.0.0.0`` is ``--host 127.0.0.1``;
- both SuperNodes run on one machine, so each gets a free Runtime API ``--port``
  (the guide's network table says why), and node-1 uses ``node-1``/``partition-1``
  as the text after Step 7 says;
- Step 1 (install) is this interpreter's environment with the clone on
  ``PYTHONPATH``, standing in for ``pip install -e .`` in the clone.

The shell that plays the SuperLink machine first runs Section 1's ``export``
lines, as a reader who tried the local cluster first in the same terminal would.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process_tree

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "deploy" / "README.md"
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"^```bash(?P<tags>[^\n]*)\n(?P<text>.*?)^```", re.M | re.S)
DEVICES = ("node-0", "node-1")


@dataclass(frozen=True)
class Block:
    """One fenced bash block of the guide and its tags (``guide:superlink background``)."""

    text: str
    tags: tuple[str, ...]

    @property
    def machine(self) -> str | None:
        return next((t.split(":", 1)[1] for t in self.tags if t.startswith("guide:")), None)

    @property
    def background(self) -> bool:
        return "background" in self.tags


def section(text: str, heading: str) -> str:
    """The text of the ``## `` section whose heading starts with ``heading``."""
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def bash_blocks(text: str) -> list[Block]:
    return [Block(m["text"], tuple(m["tags"].split())) for m in BLOCK.finditer(text)]


def commands(text: str) -> list[str]:
    """Command lines of a block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def two_machine_blocks() -> list[Block]:
    return bash_blocks(section(GUIDE.read_text(), "2."))


# ------------------------------------------------------------ the guide's text
def copied_to_device() -> list[tuple[str, str]]:
    """(source, device path relative to the checkout) for every ``scp`` in Section 2, for node-0."""
    copies = []
    for block in two_machine_blocks():
        for line in commands(block.text):
            line = line.replace("$i", "0")
            for scp in re.findall(r"\bscp ([^;]+)", line):
                *sources, target = scp.split()
                rel = target.split(":", 1)[1].removeprefix("/opt/edgebloom/")
                copies += [(src, rel.rstrip("/") + "/" + Path(src).name) for src in sources]
    return copies


def test_guide_copies_the_files_where_step_7_and_the_systemd_steps_read_them() -> None:
    copied = {dest for _, dest in copied_to_device()}
    device_blocks = [
        b.text for b in two_machine_blocks() if "start-supernode.sh" in b.text or "systemctl" in b.text
    ]
    used = {
        p
        for text in device_blocks
        for p in re.findall(r"(?:certificates|data)/[\w./-]+\.(?:key|crt|npz)", text)
    }

    assert len(device_blocks) == 2 and used
    assert used <= copied, f"the device reads {used - copied}, but the guide copies {copied}"


def test_systemd_steps_install_the_files_where_the_unit_environment_points() -> None:
    (systemd,) = [b.text for b in two_machine_blocks() if "systemctl" in b.text]
    env_lines = (REPO / "deploy" / "systemd" / "supernode.env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in env_lines if line and not line.startswith("#"))
    installed = {line.split()[-1] for line in commands(systemd) if re.match(r"sudo (cp|install) ", line)}

    assert {env["CA_CERT"], env["AUTH_KEY"], env["DATA_PATH"]} <= installed


def test_guide_creates_every_copy_target_directory_before_copying() -> None:
    made: set[str] = set()
    for block in two_machine_blocks():
        for line in commands(block.text):
            line = line.replace("$i", "0")
            for mkdir in re.findall(r"\bmkdir -p ([^;]+)", line):
                for d in mkdir.split():
                    parts = Path(d).parts
                    made |= {str(Path(*parts[: i + 1])) for i in range(len(parts))}
            for scp in re.findall(r"\bscp ([^;]+)", line):
                target = scp.split()[-1].split(":", 1)[1].rstrip("/")
                assert target in made, f"`scp ... {target}/` before any `mkdir -p {target}`: {line}"
    assert made


def test_guide_writes_cli_connections_to_flwr_home_not_a_fixed_path() -> None:
    blocks = [b.text for b in bash_blocks(GUIDE.read_text()) if "config.toml" in b.text]
    writes = [line for text in blocks for line in commands(text) if re.search(r">>?\s*\S*config\.toml", line)]

    assert writes, "expected the guide to write CLI connections into config.toml"
    for text in blocks:
        assert not re.search(r">>?\s*~/\.flwr", text), text
    for line in writes:
        assert '>> "$FLWR_HOME/config.toml"' in line, line
    for text in blocks:
        if ">>" in text:  # the same shell might not have FLWR_HOME set: default it first
            assert text.index("FLWR_HOME=${FLWR_HOME:-$HOME/.flwr}") < text.index(">>"), text


def test_guide_first_run_is_a_short_one() -> None:
    runs = [line for b in two_machine_blocks() for line in commands(b.text) if line.startswith("flwr run ")]

    assert runs and "local-epochs=1" in runs[0], runs


def test_troubleshooting_explains_the_cli_message_for_a_missing_ca() -> None:
    from flwr.cli.utils import SUPERLINK_UNAVAILABLE_MESSAGE

    rows = [line for line in section(GUIDE.read_text(), "2.").splitlines() if line.startswith("| ")]
    (row,) = [r for r in rows if SUPERLINK_UNAVAILABLE_MESSAGE in r]

    assert "root-certificates" in row


def test_guide_blocks_for_the_test_are_well_formed() -> None:
    tagged = [b for b in two_machine_blocks() if b.machine]

    assert {b.machine for b in tagged} == {"superlink", "device"}
    for block in tagged:
        if block.background:  # started with `exec`, so its PID is the daemon's
            assert len(commands(block.text)) == 1, block.text


# ------------------------------------------------------- the path, on loopback
# Stand-ins for ssh/scp: HOST's /opt/edgebloom is $MACHINES/HOST (the host name up to its first dot).
PRELUDE = r"""
ssh() {
    local host=${1#*@}; host=${host%%.*}; shift
    (cd "$MACHINES/$host" && "${@//\/opt\/edgebloom/$MACHINES/$host}")
}
scp() {
    local args=() a host
    for a in "$@"; do
        if [[ $a == *@*:* ]]; then
            host=${a#*@}; host=${host%%:*}; host=${host%%.*}
            a=${a#*:}; a=$MACHINES/$host${a#/opt/edgebloom}
        fi
        args+=("$a")
    done
    cp "${args[@]}"
}
"""


@dataclass
class Machine:
    """One machine's shell: its clone, HOME, environment and the state carried between blocks."""

    name: str
    root: Path
    env: dict[str, str]

    @property
    def state(self) -> Path:
        return self.root.parent / f"{self.name}.state"

    def script(self, text: str, *, background: bool = False) -> str:
        head = f'source {self.state}\ncd "$GUIDE_CWD"\n{PRELUDE}\n'
        if background:
            return head + "exec " + text
        # After the block, keep its exports and working directory for the next one.
        return f"set -euo pipefail\n{head}{text}\nexport GUIDE_CWD=$PWD\nexport -p > {self.state}\n"

    def run(self, text: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.script(text)], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, text: str, log: Path) -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", "-c", self.script(text, background=True)],
            env=self.env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown ends its children too
        )

    def shell_env(self) -> dict[str, str]:
        """The exported environment after the last block (``FLWR_HOME`` from Step 5 included)."""
        out = subprocess.run(
            ["bash", "-c", f"source {self.state}; env -0"], env=self.env, capture_output=True, text=True
        ).stdout
        return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def make_machine(name: str, machines: Path, tool_env) -> Machine:  # noqa: ANN001
    root = machines / name
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root)], check=True, timeout=120)
    home = machines / f"{name}-home"
    home.mkdir()
    env = tool_env(
        HOME=str(home),
        MACHINES=str(machines),
        GUIDE_CWD=str(root),
        PYTHONPATH=str(root),  # Step 1's `pip install -e .` in this clone
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
    )
    for inherited in ("FLWR_HOME", "EDGEBLOOM_OUTPUT_ROOT"):
        env.pop(inherited, None)
    machine = Machine(name, root, env)
    machine.state.write_text("")
    return machine


def loopback(text: str, port: int) -> str:
    """The guide's network names and ports, on 127.0.0.1 (each one must still be in the guide)."""
    for old, new in (
        ("superlink.lan:9093", f"127.0.0.1:{port}"),
        ("--port 9093", f"--port {port}"),
        ("--host 0.0.0.0", "--host 127.0.0.1"),
    ):
        text = text.replace(old, new)
    return text


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition, what: str, procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(1)
    tails = "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"{what} did not happen within {timeout:.0f} s{tails}")


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.deploy
def test_guide_two_machine_path_on_loopback_from_a_fresh_clone(tmp_path: Path, tool_env) -> None:
    text = GUIDE.read_text()
    port = free_port()
    tagged = [b for b in bash_blocks(section(text, "2.")) if b.machine]
    assert all(old in text for old in ("superlink.lan:9093", "--port 9093", "--host 0.0.0.0"))
    machines = tmp_path / "machines"
    machines.mkdir()
    superlink = make_machine("superlink", machines, tool_env)
    devices = {name: make_machine(name, machines, tool_env) for name in DEVICES}
    exports = [line for line in section(text, "1.").splitlines() if line.startswith("export ")]
    assert exports, "Section 1 exports FLWR_HOME for the local cluster"
    ok(superlink.run("\n".join(exports)))
    started: list[subprocess.Popen] = []
    logs: list[Path] = []
    run_output = ""
    try:
        for block in tagged:
            body = loopback(block.text, port)
            if block.machine == "superlink" and block.background:
                log = machines / "superlink.log"
                logs.append(log)
                started.append(superlink.start(body, log))
                wait_for(lambda: port_open(port), "the SuperLink opening its port", started, logs, 120)
            elif block.machine == "superlink":
                if "flwr run " in body:  # Step 8: the nodes started in Step 7 must be online first
                    wait_for(
                        lambda: online_nodes(superlink) == 2, "both SuperNodes online", started, logs, 180
                    )
                output = ok(superlink.run(body, timeout=600))
                run_output = output if "flwr run " in body else run_output
            else:
                for name, device in devices.items():
                    device_body = body.replace("node-0", name).replace(
                        "partition-0", name.replace("node", "partition")
                    )
                    if block.background:
                        # Two SuperNodes on one machine need two Runtime API ports.
                        device_body = device_body.rstrip() + f" --port {free_port()}"
                        log = machines / f"{name}.log"
                        logs.append(log)
                        started.append(device.start(device_body, log))
                    else:
                        ok(device.run(device_body))

        assert run_output, "the guide's Step 8 runs `flwr run`"
        # Step 4's log file, in a clone that had no logs/ directory.
        assert "Starting Flower SuperLink" in (superlink.root / "logs" / "superlink.log").read_text()
        # Step 5 wrote the connection where FLWR_HOME (Section 1's) points, not to ~/.flwr.
        flwr_home = Path(superlink.shell_env()["FLWR_HOME"])
        assert flwr_home == superlink.root / ".local-cluster" / "flwr-home"
        assert "[superlink.edgebloom]" in (flwr_home / "config.toml").read_text()
        assert not (machines / "superlink-home" / ".flwr" / "config.toml").exists()
        # Step 8: a finished run whose every round had both devices, with accuracy.
        (metrics_file,) = (superlink.root / "outputs").glob("*/metrics.json")
        metrics = json.loads(metrics_file.read_text())
        assert metrics["status"] == "completed", run_output
        rounds = {r["round"]: r for r in metrics["rounds"]}
        assert sorted(rounds) == [0, 1, 2]
        assert all(isinstance(r["central_accuracy"], float) for r in rounds.values())
        assert all(rounds[n]["succeeded"] == 2 and rounds[n]["failed"] == 0 for n in (1, 2))
        # Each device trained on its own file; the ServerApp's node table lists both, "ok".
        for name in DEVICES:
            node_id = re.search(r"SuperNode ID: (\d+)", (machines / f"{name}.log").read_text())
            assert node_id, f"{name} never got a node ID"
            assert re.search(rf"{node_id.group(1)}\s+ok\b", run_output), run_output

        # Troubleshooting: a connection without root-certificates gets the CLI's misleading message.
        no_ca = tmp_path / "no-ca-home"
        no_ca.mkdir()
        (no_ca / "config.toml").write_text(f'[superlink.no-ca]\naddress = "127.0.0.1:{port}"\n')
        cli = subprocess.run(
            [str(BIN / "flwr"), "ls", "no-ca"],
            env={**superlink.env, "FLWR_HOME": str(no_ca)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode != 0
        assert "check your network connection and 'address'" in cli.stdout + cli.stderr
    finally:
        for proc in reversed(started):  # SuperNodes first, then the SuperLink
            stop_process_tree(proc.pid)
            proc.wait(timeout=30)


def online_nodes(machine: Machine) -> int:
    proc = subprocess.run(
        [str(BIN / "flwr"), "supernode", "list", "edgebloom", "--format", "json"],
        env={**machine.env, **machine.shell_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.count('"status": "online"')
