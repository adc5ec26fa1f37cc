"""The per-conversation hash chain: each message's hash covers its content and the last hash."""

import hashlib
import json
from collections.abc import Sequence

from persistence.schema import GENESIS_HASH

__all__ = ["GENESIS_HASH", "first_break", "link_hash", "verify_chain"]


# Made once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def canonical(conv_id: int, seq: int, sender_id: int, cmid: str, text: str, ts: int) -> bytes:
    """The stable encoding of a message's content that its hash covers: the compact JSON
    array [conv_id, seq, sender_id, cmid, text, ts] in UTF-8."""
    return _ENCODER.encode([conv_id, seq, sender_id, cmid, text, ts]).encode("utf-8")


def link_hash(
    prev_hash: str, conv_id: int, seq: int, sender_id: int, cmid: str, text: str, ts: int
) -> str:
    """sha256 hex over the previous link and this message's canonical encoding."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical(conv_id, seq, sender_id, cmid, text, ts))
    return digest.hexdigest()


# One link as MessageStore.chain returns it: (seq, prev_hash, hash).
Link = tuple[int, str, str]
# One message's content as the chain covers it: (conv_id, seq, sender_id, cmid, text, ts).
Content = tuple[int, int, int, str, str, int]


def first_break(
    links: Sequence[Link], contents: Sequence[Content] | None = None, *, start_seq: int = 1
) -> int | None:
    """The seq where the chain breaks (a gap, a wrong link, altered content), or None.

    links must be in seq order from start_seq (1 for a whole conversation). With contents
    (same order), every hash is recomputed too, so altered text shows, not just relinking.
    """
    expected_prev = GENESIS_HASH if start_seq == 1 else None
    if contents is not None and len(contents) != len(links):
        raise ValueError("links and contents differ in length")
    for index, (seq, prev_hash, hash_) in enumerate(links):
        if seq != start_seq + index:
            return start_seq + index
        if expected_prev is not None and prev_hash != expected_prev:
            return seq
        if contents is not None:
            conv_id, c_seq, sender_id, cmid, text, ts = contents[index]
            if c_seq != seq or link_hash(prev_hash, conv_id, seq, sender_id, cmid, text, ts) != (
                hash_
            ):
                return seq
        expected_prev = hash_
    return None


def verify_chain(
    links: Sequence[Link], contents: Sequence[Content] | None = None, *, start_seq: int = 1
) -> bool:
    """True when the links (and contents, if given) form an unbroken chain."""
    return first_break(links, contents, start_seq=start_seq) is None
