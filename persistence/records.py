"""The immutable rows that the stores hand out."""

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    email: str
    birthdate: date
    role: str
    status: str
    banned_until: int | None
    org: str | None
    created: int
    password_hash: str


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    username: str


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    kind: str
    # A room's name; None for a DM, whose title the caller derives from the other member.
    title: str | None
    members: tuple[Member, ...]
    last_seq: int


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    conv: int
    seq: int
    sender_id: int
    sender_username: str
    # Stored text, also for a removed message: callers hide it from members.
    text: str
    ts: int
    cmid: str
    removed: bool


@dataclass(frozen=True, slots=True)
class Sighting:
    ts: int
    kind: str
    device: str | None
    address: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class Report:
    id: int
    case_id: int
    reporter_id: int
    category: str
    target_user_id: int | None
    conv_id: int | None
    message_id: int | None
    note: str | None
    created: int
    priority: int
    reasons: tuple[str, ...]
    # open, claimed or resolved; resolution says how (dismissed, warned, ...).
    status: str
    resolution: str | None
    # Who claimed it, then who resolved it.
    moderator_id: int | None
    claimed: int | None
    resolved: int | None
    resolution_note: str | None


@dataclass(frozen=True, slots=True)
class SnapshotMessage:
    """A message as it was when a report froze it."""

    message_id: int
    conv: int
    seq: int
    sender_id: int
    sender_username: str
    text: str
    ts: int
    # Whether members already saw it as removed at that time.
    removed: bool


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts: int
    actor_id: int
    action: str
    target_user_id: int | None
    conv_id: int | None
    message_id: int | None
    report_id: int | None
    reason: str | None
    # A JSON object as text, or None.
    detail: str | None


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    ts: int
    kind: str
    user_id: int | None
    # The alert as the moderators get it, a JSON object as text.
    detail: str
