"""The tables, as SQLAlchemy Core metadata (the migrations create the same)."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Ids are 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the 64-bit rowid,
# which is what makes it autoincrement there.
Id = BigInteger().with_variant(Integer, "sqlite")

# The prev_hash of a conversation's first message, and a new conversation's chain head.
GENESIS_HASH = "0" * 64

ROLES = ("member", "moderator", "admin")
STATUSES = ("active", "banned", "deleted")
SIGHTING_KINDS = ("registration", "login")
CONVERSATION_KINDS = ("dm", "room")
REPORT_STATUSES = ("open", "claimed", "resolved")
RESOLUTIONS = ("dismissed", "warned", "kicked", "banned", "police")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("username_key", String(64), nullable=False),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("birthdate", Date, nullable=False),
    Column("role", String(16), nullable=False, server_default="member"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("banned_until", BigInteger, nullable=True),
    Column("org", String(128), nullable=True),
    Column("created", BigInteger, nullable=False),
    UniqueConstraint("username_key"),
    CheckConstraint(_one_of("role", ROLES), name="role"),
    CheckConstraint(_one_of("status", STATUSES), name="status"),
    Index(None, "email_key"),
    Index(None, "created"),
    Index(None, "banned_until"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("user_id", Id, ForeignKey("users.id"), nullable=False),
    # SHA-256 hex of the bearer token: a stolen database yields no usable token.
    Column("token_hash", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("revoked", BigInteger, nullable=True),
    Column("device", Text, nullable=True),
    Column("address", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    UniqueConstraint("token_hash"),
    Index(None, "user_id"),
)

sightings = Table(
    "sightings",
    metadata,
    Column("id", Id, primary_key=True),
    Column("user_id", Id, ForeignKey("users.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("device", Text, nullable=True),
    Column("address", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    CheckConstraint(_one_of("kind", SIGHTING_KINDS), name="kind"),
    Index(None, "device"),
    Index(None, "address"),
    Index(None, "user_id"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("name", String(64), nullable=True),
    Column("name_key", String(64), nullable=True),
    Column("dm_key", String(48), nullable=True),
    # Who opened the DM or created the room: the new-DM limit counts by it.
    Column("opened_by", Id, ForeignKey("users.id"), nullable=True),
    Column("created", BigInteger, nullable=False),
    # The counter row: the writer locks it, takes the next seq and the next chain link.
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("chain_head", String(64), nullable=False, server_default=GENESIS_HASH),
    UniqueConstraint("name_key"),
    UniqueConstraint("dm_key"),
    CheckConstraint(_one_of("kind", CONVERSATION_KINDS), name="kind"),
    Index(None, "opened_by", "created"),
)

members = Table(
    "members",
    metadata,
    Column("conv_id", Id, ForeignKey("conversations.id"), nullable=False),
    Column("user_id", Id, ForeignKey("users.id"), nullable=False),
    Column("joined", BigInteger, nullable=False),
    PrimaryKeyConstraint("conv_id", "user_id"),
    Index(None, "user_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("conv_id", Id, ForeignKey("conversations.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sender_id", Id, ForeignKey("users.id"), nullable=False),
    Column("cmid", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    UniqueConstraint("conv_id", "seq"),
    UniqueConstraint("sender_id", "cmid"),
    # Ids are never reused on SQLite either, so an id in an export names one message forever.
    sqlite_autoincrement=True,
)

message_removals = Table(
    "message_removals",
    metadata,
    Column("id", Id, primary_key=True),
    Column("message_id", Id, ForeignKey("messages.id"), nullable=False),
    Column("conv_id", Id, ForeignKey("conversations.id"), nullable=False),
    Column("by_user", Id, ForeignKey("users.id"), nullable=False),
    Column("reason", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    UniqueConstraint("message_id"),
    Index(None, "conv_id"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("blocker_id", Id, ForeignKey("users.id"), nullable=False),
    Column("blocked_id", Id, ForeignKey("users.id"), nullable=False),
    Column("created", BigInteger, nullable=False),
    PrimaryKeyConstraint("blocker_id", "blocked_id"),
    Index(None, "blocked_id"),
)

rate_counters = Table(
    "rate_counters",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("window_start", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
)

# -- moderation (migration 0002) -------------------------------------------------------

# One case per target ("user:ID", or "conv:ID" for a room reported as a whole): every report
# on that target joins it.
cases = Table(
    "cases",
    metadata,
    Column("id", Id, primary_key=True),
    Column("target_key", String(48), nullable=False),
    Column("target_user_id", Id, ForeignKey("users.id"), nullable=True),
    Column("conv_id", Id, ForeignKey("conversations.id"), nullable=True),
    Column("created", BigInteger, nullable=False),
    UniqueConstraint("target_key"),
)

reports = Table(
    "reports",
    metadata,
    Column("id", Id, primary_key=True),
    Column("case_id", Id, ForeignKey("cases.id"), nullable=False),
    Column("reporter_id", Id, ForeignKey("users.id"), nullable=False),
    Column("category", String(32), nullable=False),
    Column("target_user_id", Id, ForeignKey("users.id"), nullable=True),
    Column("conv_id", Id, ForeignKey("conversations.id"), nullable=True),
    Column("message_id", Id, ForeignKey("messages.id"), nullable=True),
    Column("note", Text, nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False),
    # A JSON list of strings: why the priority is what it is.
    Column("reasons", Text, nullable=False),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("resolution", String(16), nullable=True),
    # Who claimed it, then who resolved it.
    Column("moderator_id", Id, ForeignKey("users.id"), nullable=True),
    Column("claimed", BigInteger, nullable=True),
    Column("resolved", BigInteger, nullable=True),
    Column("resolution_note", Text, nullable=True),
    CheckConstraint(_one_of("status", REPORT_STATUSES), name="status"),
    CheckConstraint(
        f"resolution IS NULL OR {_one_of('resolution', RESOLUTIONS)}", name="resolution"
    ),
    Index(None, "case_id"),
    Index(None, "reporter_id"),
    Index(None, "target_user_id"),
    Index(None, "conv_id"),
    Index(None, "status", "priority"),
)

# Frozen copies of the messages a report covers, taken when it was made: a later removal
# changes nothing a moderator sees here.
report_snapshots = Table(
    "report_snapshots",
    metadata,
    Column("id", Id, primary_key=True),
    Column("report_id", Id, ForeignKey("reports.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("message_id", Id, ForeignKey("messages.id"), nullable=False),
    Column("conv_id", Id, ForeignKey("conversations.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sender_id", Id, ForeignKey("users.id"), nullable=False),
    Column("sender_username", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    # Whether members already saw it as removed when the report was made.
    Column("removed", Boolean, nullable=False),
    UniqueConstraint("report_id", "position"),
)

# Every moderator read and action, and every refused attempt. The conv, message and report
# columns name what was asked for, which may not exist: they carry no foreign keys.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True),
    Column("ts", BigInteger, nullable=False),
    Column("actor_id", Id, ForeignKey("users.id"), nullable=False),
    Column("action", String(48), nullable=False),
    Column("target_user_id", Id, ForeignKey("users.id"), nullable=True),
    Column("conv_id", BigInteger, nullable=True),
    Column("message_id", BigInteger, nullable=True),
    Column("report_id", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
    # A JSON object with what else the entry needs (a ban's days, a read's page).
    Column("detail", Text, nullable=True),
    Index(None, "actor_id", "id"),
    Index(None, "target_user_id", "id"),
    sqlite_autoincrement=True,
)

# Alerts raised for the moderators (ban evasion, registration surges, contact bursts).
alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("ts", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("user_id", Id, ForeignKey("users.id"), nullable=True),
    # A JSON object: the alert as the moderators get it.
    Column("detail", Text, nullable=False),
    Index(None, "ts"),
    sqlite_autoincrement=True,
)

# Tables whose rows are never updated or deleted; the migrations install triggers for it.
APPEND_ONLY_TABLES = (
    "messages",
    "message_removals",
    "report_snapshots",
    "audit_log",
    "alerts",
)
