"""Fixtures for the ClickHouse HTTP front tests.

Each test session starts its own front on a free port with a temporary data
directory, so the tests never touch (and can run beside) the real local stack.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest

DEV = Path(__file__).resolve().parent.parent
SERVER = DEV / "clickhouse_front" / "server.py"
sys.path.insert(0, str(DEV / "clickhouse_front"))

import compression  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    @property
    def code(self) -> str | None:
        return self.headers.get("x-clickhouse-exception-code")

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Front:
    port: int
    data_dir: Path
    tmp_dir: Path
    proc: subprocess.Popen
    log_path: Path
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def request(self, method="POST", body=None, conn=None, headers=None, **params) -> Response:
        """One request; URL parameters as keyword arguments. `body` may be
        bytes, str, or an iterable of bytes (sent chunked)."""
        own = conn is None
        conn = conn or self.connection()
        try:
            path = "/?" + urlencode(params) if params else "/"
            if isinstance(body, str):
                body = body.encode()
            hdrs = dict(headers or {})
            chunked = body is not None and not isinstance(body, (bytes, bytearray))
            conn.request(method, path, body=body, headers=hdrs, encode_chunked=chunked)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            if own:
                conn.close()

    def query(self, sql: str, **params) -> Response:
        return self.request(body=sql, **params)

    def ok(self, sql: str, **params) -> bytes:
        r = self.query(sql, **params)
        assert r.status == 200, r.text
        return r.body


def start_front(data_dir: Path, tmp_dir: Path, log_path: Path, *extra_args: str, pass_fds=()) -> Front:
    port = free_port()
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port), "--data-dir", str(data_dir), "--tmp-dir", str(tmp_dir),
         *extra_args],
        stdout=log, stderr=subprocess.STDOUT, pass_fds=pass_fds,
    )
    front = Front(port, data_dir, tmp_dir, proc, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"front exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if front.request("GET").body == b"Ok.\n":
                return front
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"front did not answer within 60s:\n{log_path.read_text()}")


def stop_front(front: Front) -> int:
    if front.proc.poll() is None:
        front.proc.send_signal(signal.SIGTERM)
        try:
            return front.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            front.proc.kill()
            front.proc.wait()
            raise
    return front.proc.returncode


@pytest.fixture(scope="session")
def front(tmp_path_factory):
    base = tmp_path_factory.mktemp("front")
    f = start_front(base / "clickhouse", base / "tmp", base / "front.log")
    yield f
    stop_front(f)


@pytest.fixture()
def db(front):
    """A fresh database for one test, dropped afterwards."""
    name = f"agentmeter_test_{uuid.uuid4().hex[:12]}"
    front.ok(f"CREATE DATABASE {name}")
    yield name
    front.query(f"DROP DATABASE IF EXISTS {name}")


# ---------------------------------------------------------------- RowBinary helpers

def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def rb_string(s: bytes | str) -> bytes:
    if isinstance(s, str):
        s = s.encode()
    return leb128(len(s)) + s


def read_leb128(buf: bytes, pos: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def read_rb_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_leb128(buf, pos)
    return buf[pos:pos + n], pos + n


def lz4_body(data: bytes, block: int = 1 << 20) -> bytes:
    return b"".join(compression.compress(data, block))
