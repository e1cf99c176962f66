"""The chDB engine and a bounded pool of connections to it, one per request
in flight, with the per-request state applied in one place.

chDB hosts one ClickHouse engine per process; any number of connections to
its data path run queries in parallel, and each connection keeps its own
session (current database, settings). A request borrows a connection for its
whole life (`Engine.session`), which

1. brings the connection to the request's state: `USE <database>` when the
   connection is on another database, `SET <name> = DEFAULT` for each setting
   an earlier request left that this one does not send, `SET` of each setting
   whose value differs (and, for streamed inserts, its `param_*` values:
   chDB's streaming insert takes no query parameters, so they are set as
   `param_<name>` settings);
2. runs the request's statement;
3. gives the connection back with the state it now has on record.

Each pooled connection carries the state last applied to it (`Applied`), so
a request with the same database and settings as the one before runs no
statement but its own. Each of those statements costs the engine about half
a millisecond: applying and resetting everything around every request was
about 1.5 ms of each request's floor, which a ClickHouse server, taking the
database and the settings with the query, does not pay.

Fail-closed: a connection goes back to the pool only if all of these hold,
otherwise it is closed and the next request gets a fresh one (opening one
costs about a millisecond):

* applying the request's state succeeded (a half-applied `SET` is not
  guessed at). A reused connection that fails to drop the state of an
  earlier request is closed and the request retried on a fresh connection,
  whose state is known (the default database, no settings);
* no `param_*` setting was set: `SET param_x = DEFAULT` does not unset a
  query parameter, it sets it to the text `DEFAULT`, and nothing else removes
  one from a session;
* the statement was a read or an insert (see REUSABLE_STATEMENTS): other
  statements can leave session state behind that no reset undoes, e.g.
  `CREATE TEMPORARY TABLE`;
* the request did not end with an unexpected (non-engine) error.

One extra connection (the anchor) stays open for the life of the process and
serves no request: chDB shuts the engine down when its last connection
closes, and discarding a pooled connection must never do that.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator

from errors import FrontError, engine_error

log = logging.getLogger("clickhouse_front.engine")

FEED_CHUNK = 1 << 20  # bytes handed to the engine per append

# First keywords of statements after which a connection may be reused.
REUSABLE_STATEMENTS = {"SELECT", "WITH", "INSERT", "SHOW", "EXISTS", "DESCRIBE", "DESC", "EXPLAIN"}


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class RequestState:
    """Everything a request sets on the connection it borrows. Setting and
    parameter names are checked identifiers (see server.py)."""

    database: str = "default"
    settings: dict[str, str] = field(default_factory=dict)
    # `param_<name>` values for a streamed insert (queries pass theirs to the
    # engine per query instead, which leaves no session state).
    insert_params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """The session state a connection has on record: its current database
    and the settings set on it (name -> value as sent). A fresh connection
    is on `default` with no settings."""

    database: str = "default"
    settings: dict[str, str] = field(default_factory=dict)


FRESH = Applied()


class Lease:
    """One pooled connection, borrowed for one request, with the state it
    has on record."""

    def __init__(self, conn: Any, applied: Applied):
        self.conn = conn
        self.applied = applied
        self.discard_reason: str | None = None

    def discard(self, reason: str) -> None:
        """Close this connection when the request ends instead of pooling it."""
        if self.discard_reason is None:
            self.discard_reason = reason

    def query(self, sql: str, fmt: str, params: dict[str, str]) -> tuple[bytes, dict[str, int]]:
        try:
            res = self.conn.query(sql, fmt, params=params)
        except Exception as e:  # noqa: BLE001
            raise engine_error(e) from None
        data = bytes(res.bytes())
        return data, {
            "read_rows": res.rows_read(), "read_bytes": res.bytes_read(),
            "written_rows": 0, "written_bytes": 0,
            "elapsed_ns": int(res.elapsed() * 1e9),
        }

    def insert(self, head: str, fmt: str, source: BinaryIO, length: int) -> dict[str, int]:
        """`head` is the INSERT statement without its FORMAT clause; the data
        is read from `source` (`length` bytes) and fed in FEED_CHUNK pieces."""
        try:
            with self.conn.send_insert(head, fmt) as ins:
                remaining = length
                while remaining > 0:
                    chunk = source.read(min(FEED_CHUNK, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    ins.append(chunk)
                res = ins.finish()
        except Exception as e:  # noqa: BLE001
            raise engine_error(e) from None
        return {
            "read_rows": 0, "read_bytes": 0,
            "written_rows": res.rows_written, "written_bytes": res.bytes_written,
            "elapsed_ns": int(res.elapsed * 1e9),
        }


class Engine:
    """The engine, its anchor connection and the pool of request connections."""

    def __init__(self, data_dir: str, max_connections: int, wrap: Callable[[Any], Any] | None = None):
        """`wrap`, if given, wraps every connection opened (tests use it to
        make a connection fail the way the real one rarely does)."""
        from chdb import _chdb

        # chDB would otherwise install its own process-wide signal handlers;
        # the front handles SIGTERM/SIGINT itself.
        _chdb.set_signal_handlers_enabled(0)
        from chdb.state import connect

        self._connect = lambda: (wrap or (lambda c: c))(connect(data_dir))
        self._anchor = self._connect()
        self.version = bytes(self._anchor.query("SELECT version()", "TabSeparated").bytes()).decode().strip()
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[tuple[Any, Applied]] = []  # LIFO: the warmest connection first
        self._lock = threading.Lock()  # guards _idle and the counters only
        self._closing = False
        self.opened = 0
        self.discarded = 0

    # -- the one place where request state is applied

    @contextmanager
    def session(self, state: RequestState) -> Iterator[Lease]:
        """Borrow a connection with `state` applied; waits while
        `max_connections` requests are in flight."""
        self._slots.acquire()
        try:
            lease = self._lease(state)
            try:
                yield lease
            except FrontError:
                raise
            except BaseException:
                lease.discard("the request ended with an unexpected error")
                raise
            finally:
                self._give_back(lease)
        finally:
            self._slots.release()

    def _lease(self, state: RequestState) -> Lease:
        """A connection brought to `state`. A reused connection that cannot
        drop an earlier request's state is closed and a fresh one taken."""
        while True:
            lease = Lease(*self._take())
            try:
                self._drop_stale(lease, state)
            except FrontError:
                self._discard(lease.conn)
                continue
            try:
                self._apply(lease, state)
            except BaseException:
                self._discard(lease.conn)
                raise
            return lease

    def _drop_stale(self, lease: Lease, state: RequestState) -> None:
        """Back to the defaults for the settings `state` does not send."""
        stale = [k for k in lease.applied.settings if k not in state.settings]
        if not stale:
            return
        try:
            lease.conn.query("SET " + ", ".join(f"{k} = DEFAULT" for k in stale), "TabSeparated")
        except Exception as e:  # noqa: BLE001
            log.warning("resetting a pooled connection failed, closing it: %s", str(e).strip()[:300])
            raise engine_error(e) from None
        kept = {k: v for k, v in lease.applied.settings.items() if k in state.settings}
        lease.applied = Applied(lease.applied.database, kept)

    def _apply(self, lease: Lease, state: RequestState) -> None:
        """`USE` and `SET` what differs from the connection's record; the
        record then is `state`. On a failure the caller closes the
        connection (the error is the request's)."""
        statements = []
        if state.database != lease.applied.database:
            statements.append(f"USE {quote_ident(state.database)}")
        changed = {k: v for k, v in state.settings.items() if lease.applied.settings.get(k) != v}
        if changed:
            statements.append("SET " + ", ".join(f"{k} = {quote_string(v)}" for k, v in changed.items()))
        if state.insert_params:
            lease.discard("query parameters were set as settings")
            statements.append("SET " + ", ".join(f"param_{k} = {quote_string(v)}" for k, v in state.insert_params.items()))
        for sql in statements:
            try:
                lease.conn.query(sql, "TabSeparated")
            except Exception as e:  # noqa: BLE001
                raise engine_error(e) from None
        lease.applied = Applied(state.database, dict(state.settings))

    def _give_back(self, lease: Lease) -> None:
        with self._lock:
            if lease.discard_reason is None and not self._closing:
                self._idle.append((lease.conn, lease.applied))
                return
        log.debug("closing a connection: %s", lease.discard_reason or "shutting down")
        self._discard(lease.conn)

    # -- pool

    def _take(self) -> tuple[Any, Applied]:
        with self._lock:
            if self._closing:
                raise FrontError(209, "The server is shutting down", "SOCKET_TIMEOUT")
            if self._idle:
                return self._idle.pop()
            self.opened += 1
        try:
            return self._connect(), FRESH
        except Exception as e:  # noqa: BLE001
            raise engine_error(e) from None

    def _discard(self, conn: Any) -> None:
        with self._lock:
            self.discarded += 1
        self._close(conn)

    @staticmethod
    def _close(conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            log.exception("closing a connection failed")

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self, timeout: float = 30.0) -> None:
        """Wait (up to `timeout`) for requests in flight, then close every
        connection and, with the anchor last, the engine (which flushes)."""
        with self._lock:
            self._closing = True
        deadline = time.monotonic() + timeout
        taken = 0
        while taken < self.max_connections and self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            taken += 1
        if taken < self.max_connections:
            log.warning("%d requests still running at shutdown", self.max_connections - taken)
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._close(conn)
        self._close(self._anchor)
