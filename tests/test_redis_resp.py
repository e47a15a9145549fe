"""The pub/sub replies an event loop's listener reads without blocking (`stores._resp`)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harn_inbox.stores._resp import ProtocolError, ReplyReader, encode_command

MESSAGE = b'*3\r\n$7\r\nmessage\r\n$6\r\nns:w:s\r\n$10\r\n7 {"o":1}\r\r\n'
CONFIRMATION = b"*3\r\n$9\r\nsubscribe\r\n$6\r\nns:w:s\r\n:1\r\n"
PUSH = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n"
STREAM = MESSAGE + CONFIRMATION + PUSH
REPLIES = [
    [b"message", b"ns:w:s", b'7 {"o":1}\r'],
    [b"subscribe", b"ns:w:s", 1],
    [b"message", b"c", b""],
]


def test_whole_replies_are_read_in_order() -> None:
    assert ReplyReader().feed(STREAM) == REPLIES


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_replies_cut_anywhere_are_read_whole_once_complete(cuts: list[int]) -> None:
    reader = ReplyReader()
    bounds = [0, *sorted(cuts), len(STREAM)]
    replies = []
    for start, end in itertools.pairwise(bounds):
        replies += reader.feed(STREAM[start:end])
    assert replies == REPLIES


def test_an_incomplete_reply_waits_for_the_rest() -> None:
    reader = ReplyReader()
    assert reader.feed(MESSAGE[:-1]) == []
    assert reader.feed(MESSAGE[-1:]) == [REPLIES[0]]


def test_simple_strings_and_null_bulk_strings_are_read() -> None:
    assert ReplyReader().feed(b"*2\r\n+OK\r\n$-1\r\n") == [[b"OK", None]]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"-ERR unknown command\r\n", "refused"),
        (b"$3\r\nabc\r\n", "not an array"),
        (b"*1\r\n*0\r\n", "not an element"),
        (b"*x\r\n", "not an integer"),
        (b"*1\r\n$1\r\nab\r\n", "longer than its length"),
    ],
)
def test_what_a_pub_sub_connection_never_receives_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        ReplyReader().feed(data)


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode_command("SUBSCRIBE", "ns:wake:é") == (
        b"*2\r\n$9\r\nSUBSCRIBE\r\n$10\r\nns:wake:\xc3\xa9\r\n"
    )
    assert ReplyReader().feed(encode_command("a", b"b\r\n")) == [[b"a", b"b\r\n"]]
    # Integers in decimal, as the store's script calls send them.
    assert encode_command("EVALSHA", "f00", 1, -2) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nf00\r\n$1\r\n1\r\n$2\r\n-2\r\n"
    )
    for word in (1.5, True, None):
        with pytest.raises(TypeError, match="str, bytes or int"):
            encode_command("SET", "k", word)  # type: ignore[arg-type]


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    redis = pytest.importorskip("redis")
    words = ("EVALSHA", "ns:log:é", 3, -42, 2**70, b"\x00\xffraw", "x" * 7000, "")
    packed = redis.Connection().pack_command(*words)
    assert encode_command(*words) == b"".join(packed)
