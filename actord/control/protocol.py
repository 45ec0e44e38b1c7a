"""msgpack-RPC framing for the control socket, with hard limits on everything a peer sends.

Request ``[0, msgid, method, params]``, response ``[1, msgid, error, result]``, notification
``[2, method, params]``. Errors are maps with a stable ``code`` and a human ``message``.
One `FrameDecoder` per connection: a msgpack `Unpacker` whose buffer, strings, arrays and maps
are capped, that decodes strings as UTF-8 and refuses non-string map keys and ext types. Any
violation raises `ProtocolError`, after which the connection must be closed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import msgpack

from ..runtime.errors import ErrorCode, Refused

__all__ = [
    "DEFAULT_FRAME_LIMIT",
    "FrameDecoder",
    "Kind",
    "Notification",
    "ProtocolError",
    "Request",
    "Response",
    "encode_notification",
    "encode_request",
    "encode_response",
]

DEFAULT_FRAME_LIMIT: Final = 1 << 20
_MAX_ITEMS: Final = 10_000  # elements of any one array or map
_MAX_DEPTH: Final = 32  # nesting of arrays and maps inside params
_MAX_METHOD: Final = 64  # bytes in a method name


class Kind(IntEnum):
    REQUEST = 0
    RESPONSE = 1
    NOTIFICATION = 2


class ProtocolError(Refused):
    """A frame that breaks the protocol, refused with `code` while it is decoded: the peer
    gets the answer, and then the connection is closed. (A method refuses a request with a
    plain `Refused`: answered, and the connection goes on.)"""

    def as_error(self) -> dict[str, str]:
        return {"code": self.code.value, "message": str(self)}


@dataclass(frozen=True, slots=True)
class Request:
    msgid: int
    method: str
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Response:
    msgid: int
    error: dict[str, str] | None
    result: Any


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: tuple[Any, ...]


def _no_ext(code: int, data: bytes) -> object:
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"ext type {code} is not accepted")


class FrameDecoder:
    """Feed bytes as they arrive; iterate to get whole, validated messages."""

    def __init__(self, frame_limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self.frame_limit = frame_limit
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            max_buffer_size=frame_limit,
            max_str_len=frame_limit,
            max_bin_len=frame_limit,
            max_array_len=_MAX_ITEMS,
            max_map_len=_MAX_ITEMS,
            max_ext_len=0,
            ext_hook=_no_ext,
            use_list=False,
        )

    def feed(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"a frame exceeds {self.frame_limit} bytes"
            ) from None

    def __iter__(self) -> Iterator[Request | Response | Notification]:
        while True:
            try:
                item = next(self._unpacker)
            except StopIteration:
                return
            except ProtocolError:
                raise
            except (ValueError, TypeError, msgpack.UnpackException) as error:
                # msgpack raises ValueError for limits, bad UTF-8, non-str keys, bad data.
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"undecodable frame: {error}") from None
            yield parse_message(item)


def parse_message(item: object) -> Request | Response | Notification:
    """Validate one decoded msgpack object as an RPC message."""
    if type(item) is tuple and len(item) == 4 and type(item[0]) is int and item[0] == 0:
        # The common case, a request, checked first and inline (this runs per request).
        _, msgid, method, params = item
        if type(msgid) is int and 0 <= msgid < 2**32 and type(params) is tuple:
            if params:
                _check_depth(params, 1)
            return Request(msgid, _check_method(method), params)
    if not isinstance(item, tuple) or not item:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a message must be a non-empty array")
    kind = item[0]
    if kind == Kind.REQUEST and len(item) == 4 and not isinstance(kind, bool):
        _, msgid, method, params = item
        _check_msgid(msgid)
        return Request(msgid, _check_method(method), _check_params(params))
    if kind == Kind.NOTIFICATION and len(item) == 3 and not isinstance(kind, bool):
        _, method, params = item
        return Notification(_check_method(method), _check_params(params))
    if kind == Kind.RESPONSE and len(item) == 4 and not isinstance(kind, bool):
        _, msgid, error, result = item
        _check_msgid(msgid)
        if error is not None and not (
            isinstance(error, dict) and isinstance(error.get("code"), str)
        ):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "an error must be a map with a code")
        return Response(msgid, error, result)
    raise ProtocolError(
        ErrorCode.BAD_REQUEST, "expected [0, msgid, method, params], [1, ...] or [2, ...]"
    )


def _check_msgid(msgid: object) -> None:
    if isinstance(msgid, bool) or not isinstance(msgid, int) or not 0 <= msgid < 2**32:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "msgid must be an integer in [0, 2**32)")


def _check_method(method: object) -> str:
    if not isinstance(method, str) or not method or len(method) > _MAX_METHOD:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "method must be a short non-empty string")
    return method


def _check_params(params: object) -> tuple[Any, ...]:
    if not isinstance(params, tuple):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "params must be an array")
    _check_depth(params, 1)
    return params


def _check_depth(value: object, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"params nest deeper than {_MAX_DEPTH}")
    if isinstance(value, tuple):
        for element in value:
            _check_depth(element, depth + 1)
    elif isinstance(value, dict):
        for element in value.values():
            _check_depth(element, depth + 1)


# One Packer per thread (a Packer is not thread-safe): `packb` builds a new one each call,
# which was a third of the cost of encoding a small response. A failed pack resets it.
_packers = threading.local()


def _pack(obj: object) -> bytes:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    packed: bytes = packer.pack(obj)
    return packed


def encode_request(msgid: int, method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
    return _pack([Kind.REQUEST, msgid, method, list(params)])


def encode_response(msgid: int, error: dict[str, str] | None, result: object) -> bytes:
    return _pack([1, msgid, error, result])  # 1 = Kind.RESPONSE: a plain int packs faster


def encode_notification(method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
    return _pack([Kind.NOTIFICATION, method, list(params)])
