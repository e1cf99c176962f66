"""The engine's connection pool in-process (engine.py): per-request state is
applied in one place, only where it differs from the connection's record, a
connection whose reset fails is closed (the request goes to a fresh one),
and no more than `max_connections` requests hold a connection at once.

The reset failure is injected by wrapping chDB's connection: the real engine
does not fail a `SET ... = DEFAULT` on demand."""

from __future__ import annotations

import threading

import pytest

from conftest import DEV  # noqa: F401  (puts dev/clickhouse_front on sys.path)
from engine import Engine, RequestState
from errors import FrontError


class FlakyConnection:
    """A chDB connection whose next reset (`SET ... = DEFAULT`) can be made
    to fail, and which records the session statements it is sent."""

    opened = []  # every connection the engine opened, oldest first

    def __init__(self, conn):
        FlakyConnection.opened.append(self)
        self.conn = conn
        self.fail_reset = False
        self.closed = False
        self.session_statements = []

    def query(self, sql, fmt="CSV", params=None):
        if sql.startswith(("SET ", "USE ")):
            self.session_statements.append(sql)
        if self.fail_reset and sql.startswith("SET ") and sql.endswith("= DEFAULT"):
            raise RuntimeError("Code: 210. DB::Exception: injected reset failure (NETWORK_ERROR)")
        return self.conn.query(sql, fmt, params=params)

    def send_insert(self, head, fmt):
        return self.conn.send_insert(head, fmt)

    def close(self):
        self.closed = True
        self.conn.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = Engine(str(tmp_path_factory.mktemp("engine") / "clickhouse"), max_connections=2, wrap=FlakyConnection)
    yield e
    e.close()


def setting(lease, name: str) -> str:
    data, _ = lease.query(f"SELECT getSetting('{name}')", "TabSeparated", {})
    return data.decode().strip()


def test_state_applied_then_reset_on_the_same_connection(engine):
    with engine.session(RequestState("system", {"max_result_rows": "3"})) as lease:
        first = lease.conn
        assert setting(lease, "max_result_rows") == "3"
        assert lease.query("SELECT currentDatabase()", "TabSeparated", {})[0] == b"system\n"
    with engine.session(RequestState()) as lease:
        assert lease.conn is first  # reused ...
        assert setting(lease, "max_result_rows") == "0"  # ... and clean
        assert lease.query("SELECT currentDatabase()", "TabSeparated", {})[0] == b"default\n"


def test_the_same_state_again_runs_no_session_statement(engine):
    state = RequestState("system", {"max_result_rows": "3", "max_block_size": "1000"})
    with engine.session(state) as lease:
        conn = lease.conn
    conn.session_statements.clear()
    with engine.session(state) as lease:
        assert lease.conn is conn
        assert setting(lease, "max_result_rows") == "3"
    assert conn.session_statements == []
    # Only what differs: one setting dropped, one changed, the database.
    with engine.session(RequestState("default", {"max_block_size": "1234"})) as lease:
        assert lease.conn is conn
        assert (setting(lease, "max_result_rows"), setting(lease, "max_block_size")) == ("0", "1234")
        assert lease.query("SELECT currentDatabase()", "TabSeparated", {})[0] == b"default\n"
    assert conn.session_statements == ["SET max_result_rows = DEFAULT", "USE `default`", "SET max_block_size = '1234'"]
    with engine.session(RequestState()) as lease:
        assert setting(lease, "max_block_size") != "1234"


def test_failed_reset_closes_the_connection(engine):
    with engine.session(RequestState()) as lease:
        flaky = lease.conn
    with engine.session(RequestState(settings={"max_result_rows": "3"})) as lease:
        assert lease.conn is flaky
    flaky.fail_reset = True
    discarded = engine.discarded
    # The next request's reset fails on that connection: it is closed and
    # the request runs on a fresh one, clean.
    with engine.session(RequestState()) as lease:
        assert lease.conn is not flaky
        assert setting(lease, "max_result_rows") == "0"
    assert flaky.closed and engine.discarded == discarded + 1


def test_reset_also_runs_after_a_failed_statement(engine):
    with engine.session(RequestState()) as lease:
        conn = lease.conn
    with pytest.raises(FrontError) as err:
        with engine.session(RequestState(settings={"max_result_rows": "3"})) as lease:
            assert lease.conn is conn
            lease.query("SELECT * FROM agentmeter_no_such_table", "TabSeparated", {})
    assert err.value.code == 60
    with engine.session(RequestState()) as lease:
        assert lease.conn is conn and not conn.closed
        assert setting(lease, "max_result_rows") == "0"


def test_insert_params_and_half_applied_settings_close_the_connection(engine):
    with engine.session(RequestState(insert_params={"x": "1"})) as lease:
        with_params = lease.conn
        assert lease.query("SELECT {x:UInt8}", "TabSeparated", {})[0] == b"1\n"
    assert with_params.closed  # `SET param_x = DEFAULT` would leave the text 'DEFAULT' behind
    with pytest.raises(FrontError):
        with engine.session(RequestState(settings={"max_insert_block_size": "7", "max_result_rows": "x"})):
            pass
    bad_set = "SET max_insert_block_size = '7', max_result_rows = 'x'"
    (half_applied,) = [c for c in FlakyConnection.opened if bad_set in c.session_statements]
    assert half_applied.closed
    with engine.session(RequestState()) as lease:
        assert lease.conn not in (with_params, half_applied)
        assert setting(lease, "max_insert_block_size") != "7"


def test_an_unexpected_error_closes_the_connection(engine):
    with pytest.raises(ZeroDivisionError):
        with engine.session(RequestState()) as lease:
            broken = lease.conn
            1 / 0
    assert broken.closed


def test_no_more_sessions_than_connections(engine):
    """max_connections=2: a third request waits until one is given back."""
    got_third = threading.Event()

    def third():
        with engine.session(RequestState()):
            got_third.set()

    with engine.session(RequestState()), engine.session(RequestState()):
        t = threading.Thread(target=third)
        t.start()
        t.join(0.5)
        assert not got_third.is_set()
    t.join(30)
    assert got_third.is_set()
