"""The ClickHouse HTTP front behaves like ClickHouse for what the Rust
`clickhouse` crate (default settings: LZ4 on) and curl users need."""

from __future__ import annotations

import json
import os
import struct
import threading

from conftest import (
    compression,
    lz4_body,
    rb_string,
    read_leb128,
    read_rb_string,
    start_front,
    stop_front,
)


# ---------------------------------------------------------------- basics

def test_ping(front):
    for path in ("/ping", "/"):
        conn = front.connection()
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 200
        assert r.read() == b"Ok.\n"
        conn.close()


def test_version_in_url_query(front):
    r = front.request("GET", query="SELECT version()")
    assert r.status == 200
    assert r.text.startswith("26.9"), r.text
    assert r.headers["content-type"].startswith("text/tab-separated-values")


def test_default_format_and_format_clause(front):
    assert front.ok("SELECT 1 AS x, 'a' AS y") == b"1\ta\n"
    assert json.loads(front.ok("SELECT 1 AS x", default_format="JSONEachRow")) == {"x": 1}
    r = front.query("SELECT 1 AS x FORMAT JSON", default_format="TabSeparated")
    assert r.status == 200 and json.loads(r.body)["data"] == [{"x": 1}]
    assert r.headers["x-clickhouse-format"] == "JSON"


def test_query_in_url_and_body_are_concatenated(front):
    assert front.request(body="1 + 1 AS two", query="SELECT").body == b"2\n"


def test_keep_alive_connection_reused_across_errors(front):
    conn = front.connection()
    try:
        for i in range(5):
            assert front.request(body=f"SELECT {i}", conn=conn).body == f"{i}\n".encode()
            r = front.request(body="SELECT * FROM no_such_table_xyz", conn=conn)
            assert r.status == 404
    finally:
        conn.close()


# ---------------------------------------------------------------- parameters and settings

def test_param_binding_is_not_spliced(front, db):
    front.ok(f"CREATE TABLE {db}.t (s String) ENGINE = MergeTree ORDER BY s")
    evil = "x'); DROP TABLE t; --\" `back` \\ end"
    # ClickHouse param values use the escaped text format: \\ is one backslash,
    # \' a quote, \t a tab (the clickhouse crate escapes this way).
    escaped = evil.replace("\\", "\\\\").replace("'", "\\'")
    r = front.query("SELECT {s:String} AS s, {n:UInt32} + 1 AS n, {a:Array(String)} AS a FORMAT JSONEachRow",
                    param_s=escaped, param_n="41", param_a="['p','q']")
    assert r.status == 200, r.text
    assert json.loads(r.body) == {"s": evil, "n": 42, "a": ["p", "q"]}
    # used in a filter and in an insert ... select
    front.ok(f"INSERT INTO {db}.t SELECT {{s:String}}", param_s=escaped)
    assert front.ok(f"SELECT count() FROM {db}.t WHERE s = {{s:String}}", param_s=escaped) == b"1\n"
    assert front.ok(f"EXISTS TABLE {db}.t") == b"1\n"
    # identifiers as parameters
    assert front.ok("SELECT count() FROM {tbl:Identifier}", database=db, param_tbl="t") == b"1\n"


def test_missing_param_is_an_error(front):
    r = front.query("SELECT {x:UInt8}")
    assert r.status != 200 and r.code is not None


def test_settings_apply_to_one_query_only(front):
    r = front.query("SELECT number FROM numbers(10)", max_result_rows="2", result_overflow_mode="throw")
    assert r.status == 500, r.text
    assert r.code == "396"
    assert r.text.startswith("Code: 396. DB::Exception:")
    # the next query runs with default settings again
    assert front.ok("SELECT count() FROM (SELECT number FROM numbers(10))") == b"10\n"
    assert front.ok("SELECT getSetting('max_result_rows')") == b"0\n"
    r = front.query("SELECT toUInt64(5) AS v", default_format="JSONEachRow",
                    output_format_json_quote_64bit_integers="1")
    assert json.loads(r.body) == {"v": "5"}
    r = front.query("SELECT toUInt64(5) AS v", default_format="JSONEachRow")
    assert json.loads(r.body) == {"v": 5}


def test_reserved_and_auth_params_are_ignored(front):
    r = front.request(body="SELECT 1", query_id="q-1", session_id="s", user="default", password="secret",
                      wait_end_of_query="1", enable_http_compression="1",
                      headers={"Authorization": "Basic ZGVmYXVsdDpzZWNyZXQ=", "X-ClickHouse-User": "default",
                               "X-ClickHouse-Key": "secret"})
    assert r.status == 200 and r.body == b"1\n"
    assert r.headers["x-clickhouse-query-id"] == "q-1"
    assert "x-clickhouse-summary" in r.headers


def test_unknown_setting_is_rejected(front):
    r = front.query("SELECT 1", no_such_setting_abc="1")
    assert r.code == "115" and r.status == 404


def test_set_statement_does_not_leak(front):
    assert front.query("SET max_result_rows = 1").status == 200
    assert front.ok("SELECT number FROM numbers(3)") == b"0\n1\n2\n"


def test_database_param(front, db):
    front.ok("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", database=db)
    front.ok("INSERT INTO t VALUES (7)", database=db)
    assert front.ok("SELECT a FROM t", database=db) == b"7\n"
    assert front.ok("SELECT currentDatabase()") == b"default\n"
    r = front.query("SELECT 1", database="agentmeter_no_such_db")
    assert r.code == "81" and r.status == 404


# ---------------------------------------------------------------- per-request state is reset
# Requests from one client run one after another, and the front reuses the
# connection returned last (LIFO), so each request below lands on the
# connection the previous one used, if that one went back to the pool.

def current_state(front) -> bytes:
    return front.ok("SELECT currentDatabase(), getSetting('max_insert_block_size'), "
                    "getSetting('insert_deduplication_token'), getSetting('max_result_rows')")


def test_settings_and_params_reset_after_insert(front, db):
    default = current_state(front)
    front.ok(f"CREATE TABLE {db}.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    # a streamed insert whose query parameter is set as a session setting
    r = front.request(body=struct.pack("<Q", 5), query="INSERT INTO {tbl:Identifier} FORMAT RowBinary",
                      database=db, param_tbl="t", max_insert_block_size="7", insert_deduplication_token="tok-1",
                      max_result_rows="1")
    assert r.status == 200, r.text
    assert front.ok(f"SELECT a FROM {db}.t") == b"5\n"
    assert current_state(front) == default
    r = front.query("SELECT {tbl:Identifier}")
    assert r.code == "456", r.text  # UNKNOWN_QUERY_PARAMETER: the insert's parameter is gone


def test_settings_reset_after_failed_insert_and_query(front, db):
    default = current_state(front)
    front.ok(f"CREATE TABLE {db}.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    r = front.request(body=b"\x01\x02\x03", query="INSERT INTO t FORMAT RowBinary", database=db,
                      max_insert_block_size="7", insert_deduplication_token="tok-2")
    assert r.code == "33", r.text
    assert current_state(front) == default
    r = front.query("SELECT * FROM t", database=db, max_insert_block_size="7", max_result_rows="1",
                    param_unused="1", default_format="JSONEachRow")
    assert r.status == 200 and r.body == b"", r.text
    r = front.query("SELECT number FROM numbers(5)", database=db, max_result_rows="2", result_overflow_mode="throw",
                    max_insert_block_size="7")
    assert r.code == "396", r.text
    assert current_state(front) == default
    # a setting the engine rejects after others in the same request were accepted
    r = front.query("SELECT 1", max_insert_block_size="7", max_result_rows="not-a-number")
    assert r.status != 200
    assert current_state(front) == default


def test_ddl_and_temporary_tables_do_not_leak(front):
    assert front.query("CREATE TEMPORARY TABLE agentmeter_tmp (a UInt8)").status == 200
    assert front.ok("EXISTS TEMPORARY TABLE agentmeter_tmp") == b"0\n"


# ---------------------------------------------------------------- errors

def test_error_unknown_table(front):
    r = front.query("SELECT * FROM agentmeter_no_such_table")
    assert r.status == 404
    assert r.code == "60"
    assert r.text.startswith("Code: 60. DB::Exception:")
    assert "(version 26.9" in r.text


def test_error_syntax(front):
    r = front.query("SELEC 1")
    assert r.status == 400
    assert r.code == "62"
    assert r.text.startswith("Code: 62. DB::Exception: Syntax error")


def test_error_insert_into_unknown_table(front):
    r = front.request(body=lz4_body(b"\x01"), query="INSERT INTO agentmeter_nope (a) FORMAT RowBinary", decompress="1")
    assert r.code == "60"


def test_error_bad_rowbinary_data(front, db):
    front.ok(f"CREATE TABLE {db}.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    r = front.request(body=b"\x01\x02\x03", query=f"INSERT INTO {db}.t FORMAT RowBinary")
    assert r.status == 500 and r.code == "33"
    assert front.ok(f"SELECT count() FROM {db}.t") == b"0\n"


# ---------------------------------------------------------------- inserts and compression

def rows_u64_string(start: int, n: int) -> bytes:
    return b"".join(struct.pack("<Q", i) + rb_string(f"value-{i}") for i in range(start, start + n))


def test_lz4_insert_chunked_rowbinary(front, db):
    front.ok(f"CREATE TABLE {db}.t (id UInt64, s String) ENGINE = MergeTree ORDER BY id")
    data = rows_u64_string(0, 20000)
    body = lz4_body(data, block=64 << 10)  # several blocks
    # split the compressed stream at odd places, sent with Transfer-Encoding: chunked
    pieces = [body[i:i + 7777] for i in range(0, len(body), 7777)]
    r = front.request(body=iter(pieces), query=f"INSERT INTO {db}.t (id, s) FORMAT RowBinary", decompress="1")
    assert r.status == 200, r.text
    summary = json.loads(r.headers["x-clickhouse-summary"])
    assert summary["written_rows"] == "20000"
    assert front.ok(f"SELECT count(), sum(id), max(s) FROM {db}.t") == b"20000\t199990000\tvalue-9999\n"


def test_lz4_insert_corrupt_checksum(front, db):
    front.ok(f"CREATE TABLE {db}.t (id UInt64, s String) ENGINE = MergeTree ORDER BY id")
    body = bytearray(lz4_body(rows_u64_string(0, 100)))
    body[3] ^= 0xFF
    r = front.request(body=bytes(body), query=f"INSERT INTO {db}.t FORMAT RowBinary", decompress="1")
    assert r.status == 500
    assert r.code == "40"
    assert "Checksum doesn't match" in r.text
    # corrupted payload (checksum no longer matches either)
    body = bytearray(lz4_body(rows_u64_string(0, 100)))
    body[-1] ^= 0xFF
    r = front.request(body=bytes(body), query=f"INSERT INTO {db}.t FORMAT RowBinary", decompress="1")
    assert r.code == "40"
    assert front.ok(f"SELECT count() FROM {db}.t") == b"0\n"


def test_compressed_response_rowbinary_with_names_and_types(front):
    r = front.query("SELECT number AS n, toString(number) AS s FROM numbers(300000)",
                    default_format="RowBinaryWithNamesAndTypes", compress="1")
    assert r.status == 200
    assert r.headers["content-type"] == "application/octet-stream"
    # walk the blocks, verifying every checksum
    pos, blocks, parts = 0, 0, []
    body = r.body
    while pos < len(body):
        method, csize, usize = struct.unpack_from("<BII", body, pos + 16)
        assert method == 0x82
        assert compression.checksum(body[pos + 16:pos + 16 + csize]) == body[pos:pos + 16]
        assert usize <= 1 << 20
        pos += 16 + csize
        blocks += 1
    assert pos == len(body) and blocks > 1
    data = compression.decompress(body)
    ncols, p = read_leb128(data, 0)
    assert ncols == 2
    names, types = [], []
    for _ in range(ncols):
        name, p = read_rb_string(data, p)
        names.append(name)
    for _ in range(ncols):
        t, p = read_rb_string(data, p)
        types.append(t)
    assert names == [b"n", b"s"] and types == [b"UInt64", b"String"]
    count = 0
    while p < len(data):
        (n,) = struct.unpack_from("<Q", data, p)
        p += 8
        s, p = read_rb_string(data, p)
        assert n == count and s == str(count).encode()
        count += 1
    assert count == 300000


def test_compressed_empty_and_error_responses(front):
    r = front.query("SELECT 1 WHERE 0", default_format="RowBinary", compress="1")
    assert r.status == 200 and compression.decompress(r.body) == b""
    r = front.query("SELECT * FROM agentmeter_none", compress="1")
    assert r.code == "60" and r.text.startswith("Code: 60.")


def test_chunked_select_body(front):
    r = front.request(body=iter([b"SELECT ", b"40 + ", b"2"]))
    assert r.status == 200 and r.body == b"42\n"


def test_json_each_row_insert_with_query_in_body(front, db):
    front.ok(f"CREATE TABLE {db}.t (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
    body = f'INSERT INTO {db}.t FORMAT JSONEachRow\n{{"a":1,"b":"x"}}\n{{"a":2,"b":"y\\nz"}}\n'
    assert front.query(body).status == 200
    r = front.request(body=b'{"a":3,"b":"w"}\n', query=f"INSERT INTO {db}.t FORMAT JSONEachRow")
    assert r.status == 200, r.text
    front.ok(f"INSERT INTO {db}.t VALUES (4, 'v')")
    assert front.ok(f"SELECT a, b FROM {db}.t ORDER BY a FORMAT JSONEachRow").decode().splitlines() == [
        '{"a":1,"b":"x"}', '{"a":2,"b":"y\\nz"}', '{"a":3,"b":"w"}', '{"a":4,"b":"v"}']


def test_insert_with_settings_clause(front, db):
    front.ok(f"CREATE TABLE {db}.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    r = front.request(body=lz4_body(struct.pack("<QQ", 1, 2)), decompress="1",
                      query=f"INSERT INTO {db}.t (a) SETTINGS async_insert = 0 FORMAT RowBinary")
    assert r.status == 200, r.text
    assert front.ok(f"SELECT sum(a) FROM {db}.t") == b"3\n"


def test_large_insert_streams(front, db):
    """~50 MB of RowBinary, LZ4-compressed, sent chunked: spooled to a temp
    file, fed to the engine in pieces, the temp file removed afterwards."""
    front.ok(f"CREATE TABLE {db}.big (id UInt64, payload String) ENGINE = MergeTree ORDER BY id")
    rows_per_block, pad = 10000, "p" * 40
    block_count = 0

    def body():
        nonlocal block_count
        for b in range(100):
            start = b * rows_per_block
            raw = b"".join(struct.pack("<Q", i) + rb_string(f"{pad}{i:010d}") for i in range(start, start + rows_per_block))
            block_count += len(raw)
            yield compression.compress_block(raw)

    r = front.request(body=body(), query=f"INSERT INTO {db}.big FORMAT RowBinary", decompress="1")
    assert r.status == 200, r.text
    assert block_count > 50_000_000
    n = 100 * rows_per_block
    assert front.ok(f"SELECT count(), sum(id) FROM {db}.big") == f"{n}\t{n * (n - 1) // 2}\n".encode()
    assert [p for p in os.listdir(front.tmp_dir) if p.startswith("body-")] == []


# ---------------------------------------------------------------- deduplication

def test_insert_deduplication_token_and_materialized_view(front, db):
    front.ok(f"""CREATE TABLE {db}.raw (id UInt64, v UInt64) ENGINE = MergeTree ORDER BY id
                 SETTINGS non_replicated_deduplication_window = 1000""")
    front.ok(f"""CREATE TABLE {db}.agg (id UInt64, total UInt64) ENGINE = SummingMergeTree ORDER BY id
                 SETTINGS non_replicated_deduplication_window = 1000""")
    front.ok(f"CREATE MATERIALIZED VIEW {db}.mv TO {db}.agg AS SELECT id, sum(v) AS total FROM {db}.raw GROUP BY id")

    def insert(token: str, rows):
        body = lz4_body(b"".join(struct.pack("<QQ", i, v) for i, v in rows))
        r = front.request(body=body, query=f"INSERT INTO {db}.raw (id, v) FORMAT RowBinary", decompress="1",
                          insert_deduplication_token=token,
                          deduplicate_blocks_in_dependent_materialized_views="1")
        assert r.status == 200, r.text

    def state():
        return front.ok(f"SELECT (SELECT count() FROM {db}.raw), (SELECT sum(total) FROM {db}.agg)")

    insert("batch-1", [(1, 10), (2, 20)])
    assert state() == b"2\t30\n"
    insert("batch-1", [(1, 10), (2, 20)])  # a retry: dropped in the table and in the view's target
    assert state() == b"2\t30\n"
    insert("batch-2", [(1, 10), (2, 20)])  # same rows, new token: kept
    assert state() == b"4\t60\n"
    insert("batch-2", [(1, 10), (2, 20)])
    assert state() == b"4\t60\n"


# ---------------------------------------------------------------- concurrency

def test_concurrent_clients(front, db):
    front.ok(f"CREATE TABLE {db}.c (worker UInt32, seq UInt32, s String) ENGINE = MergeTree ORDER BY (worker, seq)")
    errors: list[str] = []
    workers, rounds, per = 16, 8, 250

    def work(w: int):
        conn = front.connection()
        try:
            for r in range(rounds):
                rows = b"".join(struct.pack("<II", w, r * per + i) + rb_string(f"w{w}-{r * per + i}") for i in range(per))
                res = front.request(body=lz4_body(rows), conn=conn, decompress="1",
                                    query=f"INSERT INTO {db}.c FORMAT RowBinary")
                if res.status != 200:
                    errors.append(res.text)
                    return
                res = front.request(body=f"SELECT count(), max(seq) FROM {db}.c WHERE worker = {{w:UInt32}}",
                                    conn=conn, param_w=str(w), compress="1")
                got = compression.decompress(res.body)
                want = f"{(r + 1) * per}\t{(r + 1) * per - 1}\n".encode()
                if got != want:
                    errors.append(f"worker {w} round {r}: {got!r} != {want!r}")
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker {w}: {e!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:5]
    total = workers * rounds * per
    assert front.ok(f"SELECT count(), uniqExact(worker, seq) FROM {db}.c") == f"{total}\t{total}\n".encode()


def running_marked(front, marker: str) -> int:
    """How many queries carrying `marker` the engine is running right now."""
    return int(front.ok(f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' "
                        "AND query NOT LIKE '%system.processes%'"))


def test_slow_queries_run_in_parallel(front):
    """Two slow queries are running at the same moment, seen from a third
    request: with queries executed one at a time, the third request could
    only run once both had finished (and would see none)."""
    marker = f"overlap-{os.getpid()}-{threading.get_ident()}"
    sql = f"SELECT '{marker}', sleepEachRow(0.5) FROM numbers(4) SETTINGS max_threads = 1, max_block_size = 1 FORMAT Null"
    results = []
    threads = [threading.Thread(target=lambda: results.append(front.query(sql))) for _ in range(2)]
    for t in threads:
        t.start()
    most = 0
    while any(t.is_alive() for t in threads) and most < 2:
        most = max(most, running_marked(front, marker))
    for t in threads:
        t.join(60)
    assert [r.status for r in results] == [200, 200], [r.text for r in results]
    assert most == 2


def test_slow_upload_does_not_block_others(front, db):
    """A client trickling an insert body holds no lock: other queries answer meanwhile."""
    import time

    front.ok(f"CREATE TABLE {db}.s (a UInt64) ENGINE = MergeTree ORDER BY a")
    release = threading.Event()
    result = {}

    def slow_body():
        yield lz4_body(struct.pack("<Q", 1))
        release.wait(30)
        yield lz4_body(struct.pack("<Q", 2))

    def uploader():
        result["r"] = front.request(body=slow_body(), query=f"INSERT INTO {db}.s FORMAT RowBinary", decompress="1")

    t = threading.Thread(target=uploader)
    t.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert front.ok("SELECT 1") == b"1\n"
        assert time.monotonic() - started < 5
    finally:
        release.set()
        t.join(60)
    assert result["r"].status == 200, result["r"].text
    assert front.ok(f"SELECT sum(a) FROM {db}.s") == b"3\n"


# ---------------------------------------------------------------- engine features the schema uses

def test_table_engines_views_ttl(front, db):
    front.ok(f"""CREATE TABLE {db}.e (ts DateTime64(3, 'UTC'), tenant UUID, v Float64)
                 ENGINE = ReplacingMergeTree ORDER BY (tenant, ts) TTL toDateTime(ts) + INTERVAL 400 DAY""")
    front.ok(f"""CREATE TABLE {db}.r (tenant UUID, bucket DateTime('UTC'), n AggregateFunction(count),
                 q AggregateFunction(quantiles(0.5, 0.95), Float64))
                 ENGINE = AggregatingMergeTree ORDER BY (tenant, bucket)""")
    front.ok(f"""CREATE MATERIALIZED VIEW {db}.rmv TO {db}.r AS
                 SELECT tenant, toStartOfInterval(ts, INTERVAL 1 HOUR) AS bucket,
                        countState() AS n, quantilesState(0.5, 0.95)(v) AS q
                 FROM {db}.e GROUP BY tenant, bucket""")
    tenant = "7f1b1a0e-0000-4000-8000-000000000001"
    front.ok(f"INSERT INTO {db}.e SELECT now64(3) - number, {{t:UUID}}, number FROM numbers(100)", param_t=tenant)
    out = front.ok(f"SELECT countMerge(n) FROM {db}.r WHERE tenant = {{t:UUID}}", param_t=tenant)
    assert out == b"100\n"


# ---------------------------------------------------------------- lifecycle

def test_persistence_across_restart_and_sigterm(tmp_path):
    f = start_front(tmp_path / "clickhouse", tmp_path / "tmp", tmp_path / "front.log")
    try:
        f.ok("CREATE DATABASE p")
        f.ok("CREATE TABLE p.t (a UInt64) ENGINE = MergeTree ORDER BY a")
        f.ok("INSERT INTO p.t VALUES (1), (2), (3)")
    finally:
        assert stop_front(f) == 0
    assert "stopped" in (tmp_path / "front.log").read_text()
    f = start_front(tmp_path / "clickhouse", tmp_path / "tmp", tmp_path / "front.log")
    try:
        assert f.ok("SELECT sum(a) FROM p.t") == b"6\n"
    finally:
        assert stop_front(f) == 0


def test_serves_with_more_than_1024_open_descriptors(tmp_path):
    """The engine keeps files of every table open: with many databases the
    sockets' descriptors pass 1023, which select() cannot watch. The front
    starts here with 1,100 descriptors already open, so its sockets are
    numbered above 1100, and must answer."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        f = start_front(tmp_path / "clickhouse", tmp_path / "tmp", tmp_path / "front.log", pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    try:
        for _ in range(3):
            assert f.ok("SELECT 1") == b"1\n"
    finally:
        assert stop_front(f) == 0
