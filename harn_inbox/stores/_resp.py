"""RESP, as far as a pub/sub connection speaks it: commands out, replies in, with no I/O.

An event loop that listens to the Redis store's channels (`_loop_listener`)
reads its socket without blocking, so a reply may arrive in pieces; redis-py's
parsers read until a reply is whole, blocking. `ReplyReader` is fed what the
socket gave and hands out the replies completed so far, keeping the rest. It
reads what a subscribed connection receives, in RESP2 and RESP3 alike: flat
arrays (or pushes) of bulk strings, integers and simple strings. Anything
else (an error reply, a nested array, a map) raises `ProtocolError`: the
listener drops the connection and starts again.
"""

from __future__ import annotations

from typing import final

#: One element of a reply: a bulk or simple string, an integer, or a null bulk string.
Item = bytes | int | None


class ProtocolError(Exception):
    """The connection sent something a pub/sub connection never receives."""


def encode_command(*words: str | bytes) -> bytes:
    """The RESP form of a command: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@final
class ReplyReader:
    """Replies parsed from bytes fed as they arrive; an incomplete one waits for more."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list[Item]]:
        """Add *data*; return the replies it completes, in order.

        Raises:
            ProtocolError: A reply a pub/sub connection never receives.
        """
        buffer = self._buffer
        buffer += data
        replies = []
        start = 0
        while True:
            parsed = _reply(buffer, start)
            if parsed is None:
                break
            reply, start = parsed
            replies.append(reply)
        del buffer[:start]
        return replies


def _reply(buffer: bytearray, start: int) -> tuple[list[Item], int] | None:
    """The reply at *start* and the index after it, or None if it is not whole yet."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    marker = buffer[start]
    if marker not in b"*>":
        if marker == ord("-"):
            raise ProtocolError(f"the server refused: {bytes(buffer[start + 1 : end])!r}")
        raise ProtocolError(f"not an array or a push: {bytes(buffer[start : end + 2])!r}")
    count = _integer(buffer, start + 1, end)
    position = end + 2
    items: list[Item] = []
    for _ in range(count):
        parsed = _item(buffer, position)
        if parsed is None:
            return None
        item, position = parsed
        items.append(item)
    return items, position


def _item(buffer: bytearray, start: int) -> tuple[Item, int] | None:
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    marker = buffer[start]
    if marker == ord("$"):
        size = _integer(buffer, start + 1, end)
        if size < 0:
            return None, end + 2
        after = end + 2 + size
        if len(buffer) < after + 2:
            return None
        if buffer[after : after + 2] != b"\r\n":
            raise ProtocolError("a bulk string longer than its length says")
        return bytes(buffer[end + 2 : after]), after + 2
    if marker == ord(":"):
        return _integer(buffer, start + 1, end), end + 2
    if marker == ord("+"):
        return bytes(buffer[start + 1 : end]), end + 2
    raise ProtocolError(f"not an element of a pub/sub reply: {bytes(buffer[start : end + 2])!r}")


def _integer(buffer: bytearray, start: int, end: int) -> int:
    try:
        return int(buffer[start:end])
    except ValueError:
        raise ProtocolError(f"not an integer: {bytes(buffer[start:end])!r}") from None
