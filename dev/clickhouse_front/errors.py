"""ClickHouse-shaped errors: the `Code: N. DB::Exception: ...` text, the
exception code header and the HTTP status ClickHouse uses for each code.

Shared by the HTTP layer (server.py) and the engine pool (engine.py).
"""

from __future__ import annotations

import re

CODE_RE = re.compile(r"Code: (\d+)\. (DB::Exception: .*)", re.S)

BAD_REQUEST_CODES = {6, 25, 26, 27, 38, 41, 53, 62, 72, 117, 167, 168, 376, 441}
NOT_FOUND_CODES = {46, 47, 50, 56, 60, 63, 73, 81, 115, 336}
STATUS_FOR_CODE = {48: 501, 159: 408, 209: 503, 76: 503}


class FrontError(Exception):
    """An error reported to the client like a ClickHouse exception."""

    def __init__(self, code: int, message: str, name: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = name

    def body(self, version: str) -> str:
        """The exception text, ending like ClickHouse's (`... (version X (official build))\\n`):
        the `clickhouse` crate recognises an exception written into a result
        stream by that ending."""
        text = self.message
        if self.name and f"({self.name})" not in text:
            text += f" ({self.name})"
        if "(version " not in text:
            text += f" (version {version} (official build))"
        return f"Code: {self.code}. DB::Exception: {text}\n"

    def status(self) -> int:
        if self.code in BAD_REQUEST_CODES:
            return 400
        if self.code in NOT_FOUND_CODES:
            return 404
        return STATUS_FOR_CODE.get(self.code, 500)


def engine_error(exc: BaseException) -> FrontError:
    """The FrontError for an exception raised by chDB."""
    text = str(exc)
    m = CODE_RE.search(text)
    if not m:
        return FrontError(1001, text.strip() or type(exc).__name__, "STD_EXCEPTION")
    message = m.group(2)[len("DB::Exception: "):].rstrip()
    return FrontError(int(m.group(1)), message)
