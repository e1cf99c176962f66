"""A small ClickHouse HTTP front over chDB (the ClickHouse engine in-process).

It implements the part of ClickHouse's HTTP interface that the Rust
`clickhouse` crate (and curl users) rely on:

* `GET /ping`, `GET /` -> `Ok.\n`
* the query in the `query` URL parameter and/or the body (URL query + "\n" +
  body, as ClickHouse does), `database`, `default_format`, `param_<name>`
  server-side query parameters, every other URL parameter applied as a
  ClickHouse setting for that one query;
* `INSERT ... FORMAT <fmt>` with the data in the body (Content-Length or
  chunked), `decompress=1` (ClickHouse's LZ4 block format, checksums verified),
  `compress=1` responses in the same format;
* errors as HTTP 4xx/5xx with `X-ClickHouse-Exception-Code` and a
  `Code: N. DB::Exception: ...` body.

chDB runs one engine per process with one session; its session state (current
database, settings) is shared, so queries are serialised with one lock.
Request bodies are read, decompressed and spooled (to memory, or to a file
under the temp dir when large) before the lock is taken, so a slow upload does
not hold up other clients.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compression  # noqa: E402

log = logging.getLogger("clickhouse_front")

SPOOL_IN_MEMORY = 8 << 20      # bodies above this go to a temp file
FEED_CHUNK = 1 << 20           # bytes handed to the engine per append
MAX_INLINE_QUERY = 64 << 20    # largest body accepted as query text

# URL parameters that the ClickHouse HTTP handler consumes itself (never settings).
RESERVED_PARAMS = {
    "query", "database", "default_format", "compress", "decompress",
    "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "close_session", "stacktrace",
    "role", "buffer_size", "wait_end_of_query", "client_protocol_version",
    "enable_http_compression", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress",
    # a sessionless request cannot make the shared engine session read-only
    "readonly",
}
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Leading whitespace and comments before the first keyword.
LEADING_RE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
FIRST_WORD_RE = re.compile(r"[A-Za-z]+")
# `... FORMAT <name>` at the very end of an INSERT statement.
TRAILING_FORMAT_RE = re.compile(r"^(?P<head>.*?)\bFORMAT\s+(?P<fmt>[A-Za-z0-9_]+)\s*;?\s*$", re.S | re.I)
# `INSERT ... FORMAT <name>` followed by inline data, at the start of a body.
INLINE_INSERT_RE = re.compile(rb"\bFORMAT\s+(?P<fmt>[A-Za-z0-9_]+)(?P<sep>[ \t]*(?:\r?\n)|\s+|$)", re.I)
SELECT_FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I)
CODE_RE = re.compile(r"Code: (\d+)\. (DB::Exception: .*)", re.S)

BAD_REQUEST_CODES = {6, 25, 26, 27, 38, 41, 53, 62, 72, 117, 167, 168, 376, 441}
NOT_FOUND_CODES = {46, 47, 50, 56, 60, 63, 73, 81, 115, 336}
STATUS_FOR_CODE = {48: 501, 159: 408, 209: 503, 76: 503}

CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedraw": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnames": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnamesandtypes": "text/tab-separated-values; charset=UTF-8",
    "tsvwithnames": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "jsoncompacteachrow": "application/x-ndjson; charset=UTF-8",
    "jsonstrings": "application/json; charset=UTF-8",
    "pretty": "text/plain; charset=UTF-8",
    "prettycompact": "text/plain; charset=UTF-8",
    "values": "text/plain; charset=UTF-8",
    "vertical": "text/plain; charset=UTF-8",
}


class FrontError(Exception):
    """An error reported to the client like a ClickHouse exception."""

    def __init__(self, code: int, message: str, name: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = name

    def body(self, version: str) -> str:
        text = self.message
        if self.name and f"({self.name})" not in text:
            text += f" ({self.name})"
        if "(version " not in text:
            text += f" (version {version})"
        return f"Code: {self.code}. DB::Exception: {text}\n"

    def status(self) -> int:
        if self.code in BAD_REQUEST_CODES:
            return 400
        if self.code in NOT_FOUND_CODES:
            return 404
        return STATUS_FOR_CODE.get(self.code, 500)


def engine_error(exc: BaseException) -> FrontError:
    text = str(exc)
    m = CODE_RE.search(text)
    if not m:
        return FrontError(1001, text.strip() or type(exc).__name__, "STD_EXCEPTION")
    message = m.group(2)[len("DB::Exception: "):].rstrip()
    return FrontError(int(m.group(1)), message)


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def strip_leading(sql: str) -> str:
    return sql[LEADING_RE.match(sql).end():]


def first_keyword(sql: str) -> str:
    m = FIRST_WORD_RE.match(strip_leading(sql))
    return m.group(0).upper() if m else ""


# ---------------------------------------------------------------- engine

class Engine:
    """The chDB session and the lock that serialises its use."""

    def __init__(self, data_dir: str):
        from chdb import _chdb

        # chDB would otherwise install its own process-wide signal handlers;
        # the front handles SIGTERM/SIGINT itself.
        _chdb.set_signal_handlers_enabled(0)
        from chdb.state import connect

        os.makedirs(data_dir, exist_ok=True)
        self.conn = connect(data_dir)
        self.lock = threading.Lock()
        self.version = bytes(self.conn.query("SELECT version()", "TabSeparated").bytes()).decode().strip()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def _prepare(self, database: str, settings: dict[str, str], params_as_settings: dict[str, str]) -> list[str]:
        """Runs under the lock: switch database and apply per-query settings.
        Returns the setting names to reset afterwards."""
        conn = self.conn
        try:
            conn.query(f"USE {quote_ident(database)}", "TabSeparated")
        except Exception as e:  # noqa: BLE001
            raise engine_error(e) from None
        applied: list[str] = []
        if settings:
            assignments = ", ".join(f"{k} = {quote_string(v)}" for k, v in settings.items())
            try:
                conn.query(f"SET {assignments}", "TabSeparated")
            except Exception as e:  # noqa: BLE001
                raise engine_error(e) from None
            applied = list(settings)
        if params_as_settings:
            assignments = ", ".join(f"param_{k} = {quote_string(v)}" for k, v in params_as_settings.items())
            try:
                conn.query(f"SET {assignments}", "TabSeparated")
            except Exception as e:  # noqa: BLE001
                raise engine_error(e) from None
        return applied

    def _reset(self, applied: list[str]) -> None:
        if not applied:
            return
        try:
            self.conn.query("SET " + ", ".join(f"{k} = DEFAULT" for k in applied), "TabSeparated")
        except Exception:  # noqa: BLE001
            log.exception("could not reset settings %s", applied)

    def query(self, sql: str, fmt: str, database: str, settings: dict[str, str], params: dict[str, str]):
        with self.lock:
            applied = self._prepare(database, settings, {})
            try:
                res = self.conn.query(sql, fmt, params=params)
            except Exception as e:  # noqa: BLE001
                raise engine_error(e) from None
            finally:
                self._reset(applied)
            data = res.bytes()
            summary = {
                "read_rows": res.rows_read(), "read_bytes": res.bytes_read(),
                "written_rows": 0, "written_bytes": 0,
                "elapsed_ns": int(res.elapsed() * 1e9),
            }
            return data, summary

    def insert(self, head: str, fmt: str, database: str, settings: dict[str, str], params: dict[str, str],
               source, length: int | None = None):
        """`head` is the INSERT statement without its FORMAT clause; the
        data is read from the file object `source` (up to `length` bytes)."""
        with self.lock:
            applied = self._prepare(database, settings, params)
            try:
                with self.conn.send_insert(head, fmt) as ins:
                    remaining = length
                    while remaining is None or remaining > 0:
                        n = FEED_CHUNK if remaining is None else min(FEED_CHUNK, remaining)
                        chunk = source.read(n)
                        if not chunk:
                            break
                        if remaining is not None:
                            remaining -= len(chunk)
                        ins.append(chunk)
                    res = ins.finish()
            except FrontError:
                raise
            except Exception as e:  # noqa: BLE001
                raise engine_error(e) from None
            finally:
                self._reset(applied)
            summary = {
                "read_rows": 0, "read_bytes": 0,
                "written_rows": res.rows_written, "written_bytes": res.bytes_written,
                "elapsed_ns": int(res.elapsed * 1e9),
            }
            return b"", summary


# ---------------------------------------------------------------- request bodies

class BodyReader:
    """`read(n)` returns exactly n bytes unless the body ends first."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        te = (headers.get("Transfer-Encoding") or "").lower()
        self.chunked = "chunked" in te
        self.remaining = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        self.chunk_left = 0
        self.done = not self.chunked and self.remaining == 0

    def _read_chunked(self, n: int) -> bytes:
        out = []
        while n > 0 and not self.done:
            if self.chunk_left == 0:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("connection closed inside a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers up to an empty line
                    while True:
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    self.done = True
                    break
                self.chunk_left = size
            take = min(n, self.chunk_left)
            data = self.rfile.read(take)
            if len(data) < take:
                raise ConnectionError("connection closed inside a chunk")
            out.append(data)
            n -= take
            self.chunk_left -= take
            if self.chunk_left == 0:
                self.rfile.readline(3)  # CRLF after the chunk
        return b"".join(out)

    def read(self, n: int) -> bytes:
        if self.done or n <= 0:
            return b""
        if self.chunked:
            return self._read_chunked(n)
        take = min(n, self.remaining)
        data = self.rfile.read(take)
        if len(data) < take:
            raise ConnectionError("connection closed inside the body")
        self.remaining -= take
        if self.remaining == 0:
            self.done = True
        return data

    def drain(self) -> None:
        while not self.done:
            self.read(FEED_CHUNK)


# ---------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-front"
    sys_version = ""

    # Idle keep-alive connections (and stalled uploads) are dropped after this
    # many seconds; well above the idle timeout of hyper's connection pool.
    timeout = 300

    engine: Engine
    tmp_dir: str
    access_log: bool = False

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002
        if self.access_log:
            log.info("%s %s", self.address_string(), format % args)

    # -- responses

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        headers = dict(headers)
        headers.setdefault("Content-Type", "text/plain; charset=UTF-8")
        headers["Content-Length"] = str(len(body))
        headers["Date"] = self.date_time_string()
        if self.close_connection:
            headers["Connection"] = "close"
        else:
            headers["Connection"] = "Keep-Alive"
            headers["Keep-Alive"] = f"timeout={self.timeout}"
        for k, v in headers.items():
            lines.append(f"{k}: {v}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command == "HEAD":
            body = b""
        if len(body) <= 65536:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
        self.log_request(status, len(body))

    def _send_error(self, err: FrontError, query_id: str) -> None:
        body = err.body(self.engine.version).encode()
        log.warning("query %s failed: %s", query_id, body.decode(errors="replace").strip()[:500])
        self._send(err.status(), body, {
            "X-ClickHouse-Exception-Code": str(err.code),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": "clickhouse-front",
        })

    # -- methods

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def _handle(self):
        url = urlsplit(self.path)
        path = url.path
        params = parse_qsl(url.query, keep_blank_values=True)
        has_query = any(k == "query" for k, _ in params)
        reader = BodyReader(self.rfile, self.headers)
        if path in ("/ping", "/replicas_status") or (path == "/" and not has_query and self.command in ("GET", "HEAD")):
            reader.drain()
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        if path not in ("/", "/query"):
            reader.drain()
            self._send(404, f"There is no handle {path}\n".encode(), {})
            return
        query_id = ""
        try:
            query_id = next((v for k, v in params if k == "query_id"), "") or str(uuid.uuid4())
            self._run(params, reader, query_id)
        except FrontError as err:
            if not reader.done:
                self.close_connection = True
            self._send_error(err, query_id)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001
            log.exception("query %s: unexpected error", query_id)
            self.close_connection = True
            try:
                self._send_error(FrontError(1001, f"{type(e).__name__}: {e}", "STD_EXCEPTION"), query_id)
            except OSError:
                pass

    def _run(self, params: list[tuple[str, str]], reader: BodyReader, query_id: str) -> None:
        url_query = ""
        database = "default"
        default_format = "TabSeparated"
        compress = decompress = False
        settings: dict[str, str] = {}
        qparams: dict[str, str] = {}
        for k, v in params:
            if k == "query":
                url_query = v
            elif k == "database":
                database = v or "default"
            elif k == "default_format":
                default_format = v or default_format
            elif k == "compress":
                compress = v not in ("", "0", "false")
            elif k == "decompress":
                decompress = v not in ("", "0", "false")
            elif k.startswith("param_"):
                qparams[k[len("param_"):]] = v
            elif k in RESERVED_PARAMS or k.startswith("http_"):
                continue
            else:
                if not IDENT_RE.match(k):
                    raise FrontError(115, f"Unknown setting '{k}'", "UNKNOWN_SETTING")
                settings[k] = v
        for name in qparams:
            if not IDENT_RE.match(name):
                raise FrontError(36, f"Bad query parameter name '{name}'", "BAD_ARGUMENTS")

        os.makedirs(self.tmp_dir, exist_ok=True)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=self.tmp_dir, prefix="body-") as spool:
            # Read (and decompress) the whole body before touching the engine.
            try:
                if decompress:
                    for block in compression.decompress_stream(reader.read):
                        spool.write(block)
                else:
                    while True:
                        chunk = reader.read(FEED_CHUNK)
                        if not chunk:
                            break
                        spool.write(chunk)
            except compression.CompressionError as e:
                raise FrontError(e.code, str(e), "CHECKSUM_DOESNT_MATCH" if e.code == 40 else "CANNOT_DECOMPRESS") from None
            body_len = spool.tell()
            spool.seek(0)
            self._execute(url_query, spool, body_len, database, default_format, settings, qparams, compress, query_id)

    def _execute(self, url_query, spool, body_len, database, default_format, settings, qparams, compress, query_id):
        engine = self.engine
        insert = None  # (head, fmt, data offset)
        sql = url_query
        if url_query and first_keyword(url_query) == "INSERT":
            m = TRAILING_FORMAT_RE.match(url_query)
            if m:
                insert = (m.group("head"), m.group("fmt"), 0)
            elif body_len:
                sql = url_query + "\n" + self._body_text(spool, body_len)
        elif not url_query:
            head = spool.read(min(body_len, 1 << 20))
            spool.seek(0)
            text_head = head.decode("utf-8", errors="replace")
            if first_keyword(text_head) == "INSERT":
                m = INLINE_INSERT_RE.search(head)
                if m:
                    insert = (head[:m.start()].decode("utf-8"), m.group("fmt").decode(), m.end())
            if insert is None:
                sql = self._body_text(spool, body_len)
        elif body_len:
            sql = url_query + "\n" + self._body_text(spool, body_len)

        if insert is not None:
            head, fmt, offset = insert
            spool.seek(offset)
            data, summary = engine.insert(head, fmt, database, settings, qparams, spool, body_len - offset)
            fmt_out = default_format
        else:
            if not sql.strip():
                raise FrontError(62, "Empty query", "SYNTAX_ERROR")
            kw = first_keyword(sql)
            if kw in ("SET", "USE"):
                # Sessionless HTTP: a SET/USE affects only its own request.
                data, summary = b"", {"read_rows": 0, "read_bytes": 0, "written_rows": 0, "written_bytes": 0, "elapsed_ns": 0}
            else:
                data, summary = engine.query(sql, default_format, database, settings, qparams)
            m = SELECT_FORMAT_RE.search(sql)
            fmt_out = m.group(1) if m else default_format

        summary.update({"total_rows_to_read": 0, "result_rows": 0, "result_bytes": len(data)})
        headers = {
            "Content-Type": CONTENT_TYPES.get(fmt_out.lower(), "application/octet-stream") if not compress
            else "application/octet-stream",
            "X-ClickHouse-Format": fmt_out,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": "clickhouse-front",
            "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in summary.items()}, separators=(",", ":")),
        }
        if compress and data:
            data = b"".join(compression.compress(data))
        self._send(200, data, headers)

    @staticmethod
    def _body_text(spool, body_len: int) -> str:
        if body_len > MAX_INLINE_QUERY:
            raise FrontError(62, f"Query is too large ({body_len} bytes)", "SYNTAX_ERROR")
        spool.seek(0)
        try:
            return spool.read().decode("utf-8")
        except UnicodeDecodeError:
            raise FrontError(62, "Query is not valid UTF-8", "SYNTAX_ERROR") from None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ClickHouse HTTP front over chDB (local development stack).")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8123, help="listen port (default 8123)")
    ap.add_argument("--data-dir", default=".stack/data/clickhouse", help="engine data directory (default .stack/data/clickhouse)")
    ap.add_argument("--tmp-dir", default=None, help="spool directory for large request bodies (default: <data-dir>/../tmp)")
    ap.add_argument("--access-log", action="store_true", help="log every request")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = os.path.abspath(args.data_dir)
    tmp_dir = os.path.abspath(args.tmp_dir or os.path.join(os.path.dirname(data_dir), "tmp"))
    os.makedirs(tmp_dir, exist_ok=True)
    # leftovers of a previous crash
    for name in os.listdir(tmp_dir):
        if name.startswith("body-") or name.startswith("tmp"):
            try:
                os.unlink(os.path.join(tmp_dir, name))
            except OSError:
                pass

    # Bind first, so a taken port fails fast without starting the engine.
    Handler.tmp_dir = tmp_dir
    Handler.access_log = args.access_log
    try:
        server = Server((args.host, args.port), Handler)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, e)
        return 2
    t0 = time.monotonic()
    engine = Engine(data_dir)
    Handler.engine = engine
    log.info("ClickHouse %s (chDB) with data in %s, ready in %.1fs; listening on http://%s:%d",
             engine.version, data_dir, time.monotonic() - t0, args.host, args.port)

    def stop(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()  # waits for a running query, then flushes and closes
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
