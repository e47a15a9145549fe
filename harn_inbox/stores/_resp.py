"""RESP, as far as the Redis store speaks it by hand: commands out, pub/sub replies in, no I/O.

An event loop that listens to the Redis store's channels (`_loop_listener`)
reads its socket without blocking, so a reply may arrive in pieces; redis-py's
parsers read until a reply is whole, blocking. `ReplyReader` is fed what the
socket gave and hands out the replies completed so far, keeping the rest. It
reads what a subscribed connection receives, in RESP2 and RESP3 alike: flat
arrays (or pushes) of bulk strings, integers and simple strings. Anything
else (an error reply, a nested array, a map) raises `ProtocolError`: the
listener drops the connection and starts again. `encode_command` packs the
commands that listener sends, and the store's script calls (`call_script`).
"""

from __future__ import annotations

from typing import final

#: One element of a reply: a bulk or simple string, an integer, or a null bulk string.
Item = bytes | int | None


class ProtocolError(Exception):
    """The connection sent something a pub/sub connection never receives."""


def encode_command(*words: str | bytes | int) -> bytes:
    """The RESP form of a command: an array of bulk strings (text as UTF-8, integers in
    decimal)."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        if isinstance(word, str):
            data = word.encode()
        elif isinstance(word, bytes):
            data = word
        elif type(word) is int:
            data = b"%d" % word
        else:  # (a float would lose its fraction; a bool is no integer here)
            raise TypeError(f"a command's words are str, bytes or int, not {type(word).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@final
class ReplyReader:
    """Replies parsed from bytes fed as they arrive; an incomplete one waits for more."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        #: What was fed and not parsed yet: the start of an incomplete reply (grown in
        #: place, so that a long reply in many pieces is copied once, not once per piece).
        self._rest = bytearray()

    def feed(self, data: bytes) -> list[list[Item]]:
        """Add *data*; return the replies it completes, in order.

        Raises:
            ProtocolError: A reply a pub/sub connection never receives.
        """
        buffer: bytes | bytearray = data
        if self._rest:
            self._rest += data
            buffer = self._rest
        replies = []
        start = 0
        try:
            while True:
                parsed = _reply(buffer, start)
                if parsed is None:
                    break
                reply, start = parsed
                replies.append(reply)
        except ValueError:  # (int() of what is not a length or an integer)
            raise ProtocolError(f"not an integer where one belongs: {buffer[start:]!r}") from None
        if buffer is self._rest:
            del self._rest[:start]
        elif start < len(buffer):
            self._rest = bytearray(buffer[start:])
        return replies


def _reply(data: bytes | bytearray, start: int) -> tuple[list[Item], int] | None:
    """The reply at *start* and the index after it, or None if it is not whole yet."""
    end = data.find(b"\r\n", start)
    if end < 0:
        return None
    marker = data[start]
    if marker != _ARRAY and marker != _PUSH:
        if marker == _ERROR:
            raise ProtocolError(f"the server refused: {data[start + 1 : end]!r}")
        raise ProtocolError(f"not an array or a push: {data[start : end + 2]!r}")
    position = end + 2
    items: list[Item] = []
    for _ in range(int(data[start + 1 : end])):
        end = data.find(b"\r\n", position)
        if end < 0:
            return None
        marker = data[position]
        if marker == _BULK:
            size = int(data[position + 1 : end])
            if size < 0:
                items.append(None)
                position = end + 2
                continue
            after = end + 2 + size
            if len(data) < after + 2:
                return None
            if data[after : after + 2] != b"\r\n":
                raise ProtocolError("a bulk string longer than its length says")
            items.append(bytes(data[end + 2 : after]))  # (bytes of bytes is itself)
            position = after + 2
        elif marker == _INTEGER:
            items.append(int(data[position + 1 : end]))
            position = end + 2
        elif marker == _SIMPLE:
            items.append(bytes(data[position + 1 : end]))
            position = end + 2
        else:
            raise ProtocolError(f"not an element of a pub/sub reply: {data[position : end + 2]!r}")
    return items, position


_ARRAY, _PUSH, _ERROR, _BULK, _INTEGER, _SIMPLE = b"*>-$:+"
