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

HTTP is served by waitress (a maintained, pure-Python WSGI server: HTTP/1.1
keep-alive, chunked request bodies, a bounded pool of worker threads; it reads
a whole request body before handing the request to a worker, so a slow
upload holds no worker and no engine connection). This module is the WSGI
application: it parses ClickHouse's URL parameters, decompresses and spools
the body, and runs the statement on a pooled engine connection
(engine.py), one per request in flight, so requests run in parallel as on a
real ClickHouse server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from http import HTTPStatus
from typing import Any, BinaryIO, Callable, Iterable
from urllib.parse import parse_qsl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compression  # noqa: E402
from engine import REUSABLE_STATEMENTS, Engine, RequestState  # noqa: E402
from errors import FrontError  # noqa: E402

log = logging.getLogger("clickhouse_front")

SPOOL_IN_MEMORY = 8 << 20      # decompressed bodies above this go to a temp file
READ_CHUNK = 1 << 20           # bytes read from the request body at a time
MAX_INLINE_QUERY = 64 << 20    # largest body accepted as query text
DISPLAY_NAME = "clickhouse-front"

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

NO_SUMMARY = {"read_rows": 0, "read_bytes": 0, "written_rows": 0, "written_bytes": 0, "elapsed_ns": 0}


def strip_leading(sql: str) -> str:
    return sql[LEADING_RE.match(sql).end():]


def first_keyword(sql: str) -> str:
    m = FIRST_WORD_RE.match(strip_leading(sql))
    return m.group(0).upper() if m else ""


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


class Request:
    """ClickHouse's URL parameters of one request, sorted into their roles."""

    def __init__(self, query_string: str):
        self.url_query = ""
        self.database = "default"
        self.default_format = "TabSeparated"
        self.compress = self.decompress = False
        self.query_id = ""
        self.settings: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.has_query = False
        self.error: FrontError | None = None
        for k, v in parse_qsl(query_string, keep_blank_values=True):
            if k == "query":
                self.url_query = v
                self.has_query = True
            elif k == "database":
                self.database = v or "default"
            elif k == "default_format":
                self.default_format = v or self.default_format
            elif k == "compress":
                self.compress = v not in ("", "0", "false")
            elif k == "decompress":
                self.decompress = v not in ("", "0", "false")
            elif k == "query_id":
                self.query_id = v
            elif k.startswith("param_"):
                self.params[k[len("param_"):]] = v
            elif k in RESERVED_PARAMS or k.startswith("http_"):
                continue
            elif not IDENT_RE.match(k):
                self.error = self.error or FrontError(115, f"Unknown setting '{k}'", "UNKNOWN_SETTING")
            else:
                self.settings[k] = v
        for name in self.params:
            if not IDENT_RE.match(name):
                self.error = self.error or FrontError(36, f"Bad query parameter name '{name}'", "BAD_ARGUMENTS")
        self.query_id = self.query_id or str(uuid.uuid4())


class App:
    """The WSGI application. `engine` is set once the engine has started
    (the port is bound first, so a taken port fails fast)."""

    def __init__(self, tmp_dir: str, access_log: bool = False):
        self.tmp_dir = tmp_dir
        self.access_log = access_log
        self.engine: Engine | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO") or "/"
        req = Request(environ.get("QUERY_STRING", ""))
        body: BinaryIO = environ["wsgi.input"]
        if path in ("/ping", "/replicas_status") or (path == "/" and not req.has_query and method in ("GET", "HEAD")):
            return self._respond(start_response, 200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        if path not in ("/", "/query"):
            return self._respond(start_response, 404, f"There is no handle {path}\n".encode(), {})
        started = time.monotonic()
        try:
            if req.error:
                raise req.error
            status, data, headers = self._run(req, body)
        except FrontError as err:
            return self._error(start_response, err, req.query_id)
        except Exception as e:  # noqa: BLE001
            log.exception("query %s: unexpected error", req.query_id)
            return self._error(start_response, FrontError(1001, f"{type(e).__name__}: {e}", "STD_EXCEPTION"), req.query_id)
        if self.access_log:
            log.info("query %s: %d bytes in %.3fs", req.query_id, len(data), time.monotonic() - started)
        return self._respond(start_response, status, data, headers)

    # -- responses

    @staticmethod
    def _respond(start_response: Callable, status: int, body: bytes, headers: dict[str, str]) -> list[bytes]:
        headers = dict(headers)
        headers.setdefault("Content-Type", "text/plain; charset=UTF-8")
        headers["Content-Length"] = str(len(body))
        start_response(status_line(status), list(headers.items()))
        return [body]

    def _error(self, start_response: Callable, err: FrontError, query_id: str) -> list[bytes]:
        version = self.engine.version if self.engine else ""
        body = err.body(version).encode()
        log.warning("query %s failed: %s", query_id, body.decode(errors="replace").strip()[:500])
        return self._respond(start_response, err.status(), body, {
            "X-ClickHouse-Exception-Code": str(err.code),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
        })

    # -- statements

    def _run(self, req: Request, body: BinaryIO) -> tuple[int, bytes, dict[str, str]]:
        os.makedirs(self.tmp_dir, exist_ok=True)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=self.tmp_dir, prefix="body-") as spool:
            # Decompress the whole body before borrowing an engine connection.
            try:
                if req.decompress:
                    for block in compression.decompress_stream(_exact_reader(body)):
                        spool.write(block)
                else:
                    while chunk := body.read(READ_CHUNK):
                        spool.write(chunk)
            except compression.CompressionError as e:
                raise FrontError(e.code, str(e), "CHECKSUM_DOESNT_MATCH" if e.code == 40 else "CANNOT_DECOMPRESS") from None
            body_len = spool.tell()
            spool.seek(0)
            return self._execute(req, spool, body_len)

    def _execute(self, req: Request, spool: BinaryIO, body_len: int) -> tuple[int, bytes, dict[str, str]]:
        engine = self.engine
        assert engine is not None
        insert = None  # (head, fmt, data offset)
        sql = req.url_query
        if req.url_query and first_keyword(req.url_query) == "INSERT":
            m = TRAILING_FORMAT_RE.match(req.url_query)
            if m:
                insert = (m.group("head"), m.group("fmt"), 0)
            elif body_len:
                sql = req.url_query + "\n" + _body_text(spool, body_len)
        elif not req.url_query:
            head = spool.read(min(body_len, 1 << 20))
            spool.seek(0)
            if first_keyword(head.decode("utf-8", errors="replace")) == "INSERT":
                m = INLINE_INSERT_RE.search(head)
                if m:
                    insert = (head[:m.start()].decode("utf-8"), m.group("fmt").decode(), m.end())
            if insert is None:
                sql = _body_text(spool, body_len)
        elif body_len:
            sql = req.url_query + "\n" + _body_text(spool, body_len)

        if insert is not None:
            head, fmt, offset = insert
            spool.seek(offset)
            state = RequestState(req.database, req.settings, req.params)
            with engine.session(state) as lease:
                summary = lease.insert(head, fmt, spool, body_len - offset)
            data, fmt_out = b"", req.default_format
        else:
            if not sql.strip():
                raise FrontError(62, "Empty query", "SYNTAX_ERROR")
            kw = first_keyword(sql)
            if kw in ("SET", "USE"):
                # Sessionless HTTP: a SET/USE affects only its own request.
                data, summary = b"", dict(NO_SUMMARY)
            else:
                with engine.session(RequestState(req.database, req.settings)) as lease:
                    if kw not in REUSABLE_STATEMENTS:
                        lease.discard(f"a {kw or 'non-query'} statement may leave session state behind")
                    data, summary = lease.query(sql, req.default_format, req.params)
            m = SELECT_FORMAT_RE.search(sql)
            fmt_out = m.group(1) if m else req.default_format

        summary.update({"total_rows_to_read": 0, "result_rows": 0, "result_bytes": len(data)})
        headers = {
            "Content-Type": CONTENT_TYPES.get(fmt_out.lower(), "application/octet-stream") if not req.compress
            else "application/octet-stream",
            "X-ClickHouse-Format": fmt_out,
            "X-ClickHouse-Query-Id": req.query_id,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in summary.items()}, separators=(",", ":")),
        }
        if req.compress and data:
            data = b"".join(compression.compress(data))
        return 200, data, headers


def _exact_reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """`read(n)` that returns exactly n bytes unless the stream ends first
    (what compression.decompress_stream expects)."""

    def read(n: int) -> bytes:
        parts, left = [], n
        while left > 0:
            chunk = stream.read(left)
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    return read


def _body_text(spool: BinaryIO, body_len: int) -> str:
    if body_len > MAX_INLINE_QUERY:
        raise FrontError(62, f"Query is too large ({body_len} bytes)", "SYNTAX_ERROR")
    spool.seek(0)
    try:
        return spool.read().decode("utf-8")
    except UnicodeDecodeError:
        raise FrontError(62, "Query is not valid UTF-8", "SYNTAX_ERROR") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ClickHouse HTTP front over chDB (local development stack).")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8123, help="listen port (default 8123)")
    ap.add_argument("--data-dir", default=".stack/data/clickhouse", help="engine data directory (default .stack/data/clickhouse)")
    ap.add_argument("--tmp-dir", default=None, help="spool directory for large request bodies (default: <data-dir>/../tmp)")
    ap.add_argument("--max-concurrent-queries", type=int, default=16,
                    help="requests executed at once, each on its own engine connection; more wait (default 16)")
    ap.add_argument("--access-log", action="store_true", help="log every request")
    args = ap.parse_args(argv)
    if args.max_concurrent_queries < 1:
        ap.error("--max-concurrent-queries must be at least 1")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # waitress warns at every request that has to wait for a worker thread
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
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
    # waitress spools large request bodies with `tempfile` too: keep them there
    tempfile.tempdir = tmp_dir

    from waitress.server import create_server

    app = App(tmp_dir, args.access_log)
    # Bind first, so a taken port fails fast without starting the engine.
    try:
        server = create_server(
            app, host=args.host, port=args.port,
            threads=args.max_concurrent_queries,
            # idle keep-alive connections are dropped after this many seconds;
            # well above the idle timeout of hyper's connection pool (90 s)
            channel_timeout=300,
            connection_limit=1000,
            # poll(), not select(): the engine keeps files of every table
            # open, so with many (test) databases the sockets' descriptors
            # pass 1023, which select() cannot watch (the front then died
            # with "filedescriptor out of range in select()").
            asyncore_use_poll=True,
            max_request_body_size=16 << 30,
            ident="ClickHouse-front",
        )
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, e)
        return 2
    t0 = time.monotonic()
    engine = Engine(data_dir, args.max_concurrent_queries)
    app.engine = engine
    log.info("ClickHouse %s (chDB) with data in %s, ready in %.1fs; listening on http://%s:%d (%d queries at once)",
             engine.version, data_dir, time.monotonic() - t0, args.host, args.port, args.max_concurrent_queries)

    def stop(signum, _frame):
        log.info("signal %d: shutting down", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()  # closes the listener and waits for its workers on SystemExit
    finally:
        server.close()
        engine.close()  # waits for requests in flight, then flushes and closes
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
