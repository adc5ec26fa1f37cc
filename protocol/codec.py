"""MessagePack and JSON codecs for frames, subprotocol negotiation and request ids.

Decoding checks the envelope only (a map of string keys with a string `t`, nesting,
valid Unicode); `protocol.frames` checks the fields. Decoding raises nothing but
ProtocolError, whatever the input.
"""

import json
import math
import re
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any, Final, Protocol, TypeAlias

import msgpack

from protocol.codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.limits import MAX_FIELD_KEY_CHARS, MAX_ID, MAX_JSON_DEPTH, MAX_RID_CHARS
from protocol.text import has_surrogate

SUBPROTOCOL_MSGPACK: Final = "chatd.v1.msgpack"
SUBPROTOCOL_JSON: Final = "chatd.v1.json"

Rid: TypeAlias = int | str | None
"""A request id as echoed in replies: an int, a string of 1 to 64 characters, or none."""


class Codec(Protocol):
    """Turns one WebSocket message into a frame map and back."""

    name: str  # the subprotocol name
    binary: bool  # whether frames travel as binary (else text) WebSocket messages

    def decode(self, data: bytes | str) -> dict[str, Any]: ...

    def encode(self, frame: Mapping[str, Any]) -> bytes | str: ...


def _bad_frame(message: str, rid: Rid = None) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message, rid=rid)


def extract_rid(obj: Any) -> Rid:
    """The `rid` of a decoded frame when it is of the contract's form, else None."""
    if not isinstance(obj, dict):
        return None
    rid = obj.get("rid")
    # type() rather than isinstance(): a bool rid is not a rid.
    if type(rid) is int:
        return rid if -MAX_ID <= rid <= MAX_ID else None
    if type(rid) is str and 1 <= len(rid) <= MAX_RID_CHARS and not has_surrogate(rid):
        return rid
    return None


def _field_key(key: Any) -> str:
    text = key if isinstance(key, str) else repr(key)
    if len(text) > MAX_FIELD_KEY_CHARS:
        text = text[:MAX_FIELD_KEY_CHARS] + "…"
    # The field is sent back to the client, so it must itself be valid Unicode.
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def _surrogate_path(value: Any, path: str) -> str | None:
    """The path (`a.b[2]`) of the first string, key or value, with a lone surrogate."""
    if isinstance(value, str):
        return path if has_surrogate(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{_field_key(key)}" if path else _field_key(key)
            if isinstance(key, str) and has_surrogate(key):
                return where
            found = _surrogate_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _check_tree(node: dict[str, Any] | list[Any], depth: int) -> None:
    """Refuse nesting past MAX_JSON_DEPTH and map keys that are not strings."""
    if depth > MAX_JSON_DEPTH:
        raise _bad_frame(f"frame nested deeper than {MAX_JSON_DEPTH} levels")
    if type(node) is dict:
        for key, item in node.items():
            if type(key) is not str:
                raise _bad_frame("map keys must be strings")
            if type(item) is dict or type(item) is list:
                _check_tree(item, depth + 1)
    else:
        for item in node:
            if type(item) is dict or type(item) is list:
                _check_tree(item, depth + 1)


def _finish(obj: Any, *, check_tree: bool, maybe_surrogates: bool) -> dict[str, Any]:
    """The envelope checks both codecs share, once the bytes or text are decoded."""
    if type(obj) is not dict:
        raise _bad_frame("a frame must be a map")
    rid = extract_rid(obj)
    if check_tree:
        try:
            _check_tree(obj, 1)
        except ProtocolError as err:
            err.rid = rid
            raise
    if not isinstance(obj.get("t"), str):
        raise _bad_frame("a frame needs a string `t`", rid)
    if maybe_surrogates:
        where = _surrogate_path(obj, "")
        if where is not None:
            refused = ProtocolError(
                ErrorCode.INVALID, f"{where} is not valid Unicode", field=where, rid=rid
            )
            # An error answering a send carries its cmid, when the cmid itself is good.
            cmid = obj.get("cmid")
            if obj.get("t") == "send" and isinstance(cmid, str) and 0 < len(cmid) <= 64:
                if _surrogate_path(cmid, "") is None:
                    refused.cmid = cmid
            raise refused
    return obj


# --- JSON -------------------------------------------------------------------------------

# A JSON string, escapes included, or the unterminated rest of one. Possessive quantifiers
# and a tail that always matches: every match attempt succeeds in one pass, so stripping
# strings is linear even for hostile input such as `"\\"\\"\\"...` without an end.
_JSON_STRING: Final = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
# Depth change per bracket byte, indexed by byte value: +1 opens, -1 closes.
_BRACKET_STEP: Final = tuple(
    1 if byte in b"[{" else -1 if byte in b"]}" else 0 for byte in range(256)
)
# Only a \uD800-\uDFFF escape decodes to a surrogate (a pair then combines, a lone one stays).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(name)


def _parse_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: as unwelcome as Infinity
        raise _NotFinite(text)
    return number


def _json_too_deep(text: str) -> bool:
    """Whether `text` nests arrays and objects deeper than MAX_JSON_DEPTH.

    A scan before json.loads, so that hostile nesting never reaches the recursive parser.
    Exact for valid JSON; invalid JSON may be called too deep, and is a bad frame anyway.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False  # the usual frame
    if '"' in text:
        text = _JSON_STRING.sub("", text)
    brackets = _NOT_BRACKET.sub("", text).encode("ascii")
    # The running depth as C-level iterators (no Python loop over characters, no match
    # objects), stopping at the first level past the limit: 1,000,000 `[` stop at 33.
    depths = accumulate(map(_BRACKET_STEP.__getitem__, brackets))
    return any(map(MAX_JSON_DEPTH.__lt__, depths))


_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_parse_float)
_JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class JsonCodec:
    """`chatd.v1.json`: one JSON object per text frame."""

    name: str = SUBPROTOCOL_JSON
    binary: bool = False

    def decode(self, data: bytes | str) -> dict[str, Any]:
        if not isinstance(data, str):
            raise _bad_frame("a binary frame on the JSON subprotocol")
        if _json_too_deep(data):
            raise _bad_frame(f"frame nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            obj = _JSON_DECODER.decode(data)
        except _NotFinite:
            raise _bad_frame("NaN and Infinity are not JSON") from None
        except (ValueError, RecursionError):
            # ValueError: malformed JSON, or an int past Python's digit limit.
            raise _bad_frame("not a JSON value") from None
        maybe_surrogates = _SURROGATE_ESCAPE.search(data) is not None or has_surrogate(data)
        return _finish(obj, check_tree=False, maybe_surrogates=maybe_surrogates)

    def encode(self, frame: Mapping[str, Any]) -> str:
        return _JSON_ENCODER.encode(frame if type(frame) is dict else dict(frame))


# --- MessagePack ------------------------------------------------------------------------

# One Packer for the process: it is not thread-safe, but encoding happens on the event
# loop's thread, and it saves building a Packer per frame (msgpack.packb does).
_PACKER: Final = msgpack.Packer(use_bin_type=True)
# The unpacker itself refuses int and other non-string keys (strict_map_key).
_UNDECODABLE_MSGPACK: Final = "not MessagePack, or a map key that is not a string"


class MsgpackCodec:
    """`chatd.v1.msgpack`: one MessagePack map per binary frame."""

    name: str = SUBPROTOCOL_MSGPACK
    binary: bool = True

    def decode(self, data: bytes | str) -> dict[str, Any]:
        if isinstance(data, str):
            raise _bad_frame("a text frame on the MessagePack subprotocol")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _bad_frame("a frame must be bytes")
        try:
            obj = msgpack.unpackb(data)
        except UnicodeDecodeError:
            return self._decode_bad_utf8(data)
        except Exception:
            # The C unpacker raises several types for bad input (ValueError and its
            # subclasses, TypeError for unhashable keys, ...); each means "not a frame".
            raise _bad_frame(_UNDECODABLE_MSGPACK) from None
        return _finish(obj, check_tree=True, maybe_surrogates=False)

    def _decode_bad_utf8(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        # The rare path: decode again with the bad bytes as surrogates, so that the
        # surrogate search that JSON uses can name the field.
        try:
            obj = msgpack.unpackb(data, unicode_errors="surrogateescape")
        except Exception:
            raise _bad_frame(_UNDECODABLE_MSGPACK) from None
        return _finish(obj, check_tree=True, maybe_surrogates=True)

    def encode(self, frame: Mapping[str, Any]) -> bytes:
        packed: bytes = _PACKER.pack(frame if type(frame) is dict else dict(frame))
        return packed


JSON_CODEC: Final = JsonCodec()
MSGPACK_CODEC: Final = MsgpackCodec()
_CODECS_BY_NAME: Final[Mapping[str, Codec]] = {
    SUBPROTOCOL_MSGPACK: MSGPACK_CODEC,
    SUBPROTOCOL_JSON: JSON_CODEC,
}


def negotiate(offered: Sequence[str]) -> tuple[Codec, str | None] | None:
    """The codec for the subprotocols a client offered, and the name to answer with.

    Nothing offered: MessagePack, answering no subprotocol. Otherwise the first of ours in
    the client's order; None when none is ours (the upgrade is refused with HTTP 400).
    """
    names = [name.strip() for name in offered if name.strip()]
    if not names:
        return MSGPACK_CODEC, None
    for name in names:
        codec = _CODECS_BY_NAME.get(name)
        if codec is not None:
            return codec, codec.name
    return None
