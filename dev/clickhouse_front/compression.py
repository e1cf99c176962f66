"""ClickHouse native compressed block format (the body of `compress=1` /
`decompress=1` HTTP requests), LZ4 method only.

One block:

    [16 bytes] CityHash128 (v1.0.2) of everything after the checksum,
               stored as two little-endian u64 (low word first)
    [ 1 byte ] method: 0x82 = LZ4
    [ 4 bytes] u32 LE compressed size, including this 9-byte header
    [ 4 bytes] u32 LE uncompressed size
    [  ...   ] LZ4 block data (no frame, no size prefix)
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Callable, Iterator

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

METHOD_LZ4 = 0x82
METHOD_NONE = 0x02
CHECKSUM_SIZE = 16
HEADER_SIZE = 9
# Blocks ClickHouse writes are at most max_compress_block_size (1 MiB) of
# uncompressed data; refuse absurd sizes instead of allocating them.
MAX_BLOCK_SIZE = 1 << 30
DEFAULT_BLOCK_SIZE = 1 << 20

_HEADER = struct.Struct("<BII")
_U64 = (1 << 64) - 1


class CompressionError(Exception):
    """Malformed compressed data; ClickHouse reports these as code 271
    (CANNOT_DECOMPRESS) or 432 (UNKNOWN_CODEC)."""

    def __init__(self, message: str, code: int = 271):
        super().__init__(message)
        self.code = code


def checksum(data: bytes | memoryview) -> bytes:
    """The 16 checksum bytes ClickHouse stores in front of a block."""
    h = CityHash128(bytes(data))
    return struct.pack("<QQ", h >> 64, h & _U64)


def compress_block(data: bytes | memoryview) -> bytes:
    payload = lz4.block.compress(data, store_size=False)
    header = _HEADER.pack(METHOD_LZ4, HEADER_SIZE + len(payload), len(data))
    body = header + payload
    return checksum(body) + body


def compress(data: bytes | memoryview, block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[bytes]:
    """Yield compressed blocks of at most `block_size` uncompressed bytes."""
    view = memoryview(data)
    for start in range(0, len(view), block_size):
        yield compress_block(view[start:start + block_size])


def decompress_stream(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Decode blocks from `read(n)` (which returns exactly n bytes, or fewer
    only at the end of the stream) until the stream ends; yield each block's
    uncompressed bytes. Checksums are verified."""
    while True:
        head = read(CHECKSUM_SIZE + HEADER_SIZE)
        if not head:
            return
        if len(head) < CHECKSUM_SIZE + HEADER_SIZE:
            raise CompressionError("Cannot decompress: truncated block header")
        method, compressed_size, uncompressed_size = _HEADER.unpack_from(head, CHECKSUM_SIZE)
        if compressed_size < HEADER_SIZE or compressed_size > MAX_BLOCK_SIZE or uncompressed_size > MAX_BLOCK_SIZE:
            raise CompressionError(
                f"Too large size of compressed block: compressed {compressed_size}, uncompressed {uncompressed_size}")
        payload = read(compressed_size - HEADER_SIZE)
        if len(payload) < compressed_size - HEADER_SIZE:
            raise CompressionError("Cannot decompress: truncated block")
        expected = head[:CHECKSUM_SIZE]
        actual = CityHash128(head[CHECKSUM_SIZE:] + payload)
        if expected != struct.pack("<QQ", actual >> 64, actual & _U64):
            raise CompressionError(
                "Checksum doesn't match: corrupted data. Reference: {}. Actual: {}".format(
                    expected.hex(), struct.pack("<QQ", actual >> 64, actual & _U64).hex()),
                code=40)  # CHECKSUM_DOESNT_MATCH
        if method == METHOD_LZ4:
            try:
                yield lz4.block.decompress(payload, uncompressed_size=uncompressed_size)
            except lz4.block.LZ4BlockError as e:
                raise CompressionError(f"Cannot decompress LZ4 block: {e}") from None
        elif method == METHOD_NONE:
            if len(payload) != uncompressed_size:
                raise CompressionError("Cannot decompress: size mismatch in uncompressed block")
            yield payload
        else:
            raise CompressionError(f"Unknown codec family code: {method:#x}", code=432)


def decompress(data: bytes) -> bytes:
    """Decode a whole compressed body held in memory."""
    view = memoryview(data)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = bytes(view[pos:pos + n])
        pos += len(chunk)
        return chunk

    return b"".join(decompress_stream(read))


def decompress_file(src: BinaryIO) -> Iterator[bytes]:
    return decompress_stream(src.read)
