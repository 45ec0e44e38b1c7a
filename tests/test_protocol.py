"""msgpack-RPC framing: valid messages round-trip; every kind of abuse is a ProtocolError."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actord.control.protocol import (
    FrameDecoder,
    Notification,
    ProtocolError,
    Request,
    Response,
    encode_notification,
    encode_request,
    encode_response,
)
from actord.runtime.errors import ErrorCode


def _decode(data: bytes, limit: int = 1 << 20) -> list[object]:
    decoder = FrameDecoder(limit)
    decoder.feed(data)
    return list(decoder)


def test_messages_round_trip_even_when_split_across_reads() -> None:
    stream = (
        encode_request(7, "status", [])
        + encode_response(7, None, {"pid": 42, "jobs": [1, 2]})
        + encode_response(8, {"code": "not_found", "message": "no job x"}, None)
        + encode_notification("progress", ["log-1", 3, 10])
    )
    decoder = FrameDecoder()
    messages: list[object] = []
    for i in range(len(stream)):  # one byte at a time: framing never depends on read sizes
        decoder.feed(stream[i : i + 1])
        messages.extend(decoder)
    assert messages == [
        Request(7, "status", ()),
        Response(7, None, {"pid": 42, "jobs": (1, 2)}),
        Response(8, {"code": "not_found", "message": "no job x"}, None),
        Notification("progress", ("log-1", 3, 10)),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        msgpack.packb({"not": "a list"}),
        msgpack.packb([]),
        msgpack.packb([0, 1, "ping"]),  # too short
        msgpack.packb([5, 1, "ping", []]),  # unknown kind
        msgpack.packb([True, 1, "ping", []]),  # a bool is not kind 1
        msgpack.packb([0, -1, "ping", []]),
        msgpack.packb([0, "1", "ping", []]),
        msgpack.packb([0, 1, "", []]),
        msgpack.packb([0, 1, "m" * 65, []]),
        msgpack.packb([0, 1, 3, []]),
        msgpack.packb([0, 1, "ping", {"params": "as a map"}]),
        msgpack.packb([0, 1, "ping", [{1: "integer key"}]]),
        msgpack.packb([0, 1, "ping", [msgpack.ExtType(5, b"x")]]),
        msgpack.packb([1, 1, "not a map", None]),
        msgpack.packb([0, 1, "ping", [b"\xff".decode("latin-1")]])[:-2] + b"\xa1\xff",  # bad UTF-8
    ],
    ids=lambda f: f.hex()[:24],
)
def test_malformed_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        _decode(frame)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.as_error()["code"] == "bad_request"


def test_deep_nesting_is_refused() -> None:
    params: object = []
    for _ in range(40):
        params = [params]
    with pytest.raises(ProtocolError, match="deeper"):
        _decode(msgpack.packb([0, 1, "submit", [params]]))


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    big = msgpack.packb([0, 1, "submit", ["x" * 5000]])
    with pytest.raises(ProtocolError) as info:
        _decode(big, limit=1024)
    assert info.value.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize(
    "header",
    [
        b"\xdd" + struct.pack(">I", 2**31),  # array32 claiming two billion elements
        b"\xdf" + struct.pack(">I", 2**31),  # map32 likewise
        b"\xdb" + struct.pack(">I", 2**31),  # str32 of 2 GB
    ],
)
def test_huge_headers_are_refused_without_allocating(header: bytes) -> None:
    # Refused at once (array, map) or, at the latest, once the buffer reaches the frame limit:
    # the decoder never holds more than the limit, whatever a header claims.
    decoder = FrameDecoder(1 << 16)
    with pytest.raises(ProtocolError):
        decoder.feed(header)
        for _ in range(20):
            decoder.feed(b"\x00" * 4096)
            list(decoder)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    decoder = FrameDecoder(4096)
    try:
        decoder.feed(data)
        for message in decoder:
            assert isinstance(message, Request | Response | Notification)
    except ProtocolError as error:
        assert error.code in (ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE)
