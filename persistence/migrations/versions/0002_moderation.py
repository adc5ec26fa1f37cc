"""Moderation: cases, reports and their frozen snapshots, the audit log, alerts.

Snapshots, audit entries and alerts are evidence: like messages, the database itself
refuses to change or delete them.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_APPEND_ONLY = ("report_snapshots", "audit_log", "alerts")


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", _ID, nullable=False),
        sa.Column("target_key", sa.String(length=48), nullable=False),
        sa.Column("target_user_id", _ID, nullable=True),
        sa.Column("conv_id", _ID, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conv_id"], ["conversations.id"], name=op.f("fk_cases_conv_id_conversations")
        ),
        sa.ForeignKeyConstraint(
            ["target_user_id"], ["users.id"], name=op.f("fk_cases_target_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("target_key", name=op.f("uq_cases_target_key")),
    )
    op.create_table(
        "reports",
        sa.Column("id", _ID, nullable=False),
        sa.Column("case_id", _ID, nullable=False),
        sa.Column("reporter_id", _ID, nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("target_user_id", _ID, nullable=True),
        sa.Column("conv_id", _ID, nullable=True),
        sa.Column("message_id", _ID, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("moderator_id", _ID, nullable=True),
        sa.Column("claimed", sa.BigInteger(), nullable=True),
        sa.Column("resolved", sa.BigInteger(), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'claimed', 'resolved')", name=op.f("ck_reports_status")
        ),
        sa.CheckConstraint(
            "resolution IS NULL OR resolution IN "
            "('dismissed', 'warned', 'kicked', 'banned', 'police')",
            name=op.f("ck_reports_resolution"),
        ),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_reports_case_id_cases")),
        sa.ForeignKeyConstraint(
            ["conv_id"], ["conversations.id"], name=op.f("fk_reports_conv_id_conversations")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_reports_message_id_messages")
        ),
        sa.ForeignKeyConstraint(
            ["moderator_id"], ["users.id"], name=op.f("fk_reports_moderator_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["reporter_id"], ["users.id"], name=op.f("fk_reports_reporter_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["target_user_id"], ["users.id"], name=op.f("fk_reports_target_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    op.create_index(op.f("ix_reports_case_id"), "reports", ["case_id"], unique=False)
    op.create_index(op.f("ix_reports_conv_id"), "reports", ["conv_id"], unique=False)
    op.create_index(op.f("ix_reports_reporter_id"), "reports", ["reporter_id"], unique=False)
    op.create_index(
        op.f("ix_reports_status_priority"), "reports", ["status", "priority"], unique=False
    )
    op.create_index(op.f("ix_reports_target_user_id"), "reports", ["target_user_id"], unique=False)
    op.create_table(
        "report_snapshots",
        sa.Column("id", _ID, nullable=False),
        sa.Column("report_id", _ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("conv_id", _ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("sender_id", _ID, nullable=False),
        sa.Column("sender_username", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conv_id"],
            ["conversations.id"],
            name=op.f("fk_report_snapshots_conv_id_conversations"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_report_snapshots_message_id_messages")
        ),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name=op.f("fk_report_snapshots_report_id_reports")
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"], ["users.id"], name=op.f("fk_report_snapshots_sender_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_snapshots")),
        sa.UniqueConstraint(
            "report_id", "position", name=op.f("uq_report_snapshots_report_id_position")
        ),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("actor_id", _ID, nullable=False),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("target_user_id", _ID, nullable=True),
        sa.Column("conv_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("report_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_audit_log_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["target_user_id"], ["users.id"], name=op.f("fk_audit_log_target_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_audit_log_actor_id_id"), "audit_log", ["actor_id", "id"], unique=False)
    op.create_index(
        op.f("ix_audit_log_target_user_id_id"), "audit_log", ["target_user_id", "id"], unique=False
    )
    op.create_table(
        "alerts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("user_id", _ID, nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_alerts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_alerts_ts"), "alerts", ["ts"], unique=False)
    _install_append_only()


def downgrade() -> None:
    _drop_append_only()
    op.drop_index(op.f("ix_alerts_ts"), table_name="alerts")
    op.drop_table("alerts")
    op.drop_index(op.f("ix_audit_log_target_user_id_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_actor_id_id"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("report_snapshots")
    op.drop_index(op.f("ix_reports_target_user_id"), table_name="reports")
    op.drop_index(op.f("ix_reports_status_priority"), table_name="reports")
    op.drop_index(op.f("ix_reports_reporter_id"), table_name="reports")
    op.drop_index(op.f("ix_reports_conv_id"), table_name="reports")
    op.drop_index(op.f("ix_reports_case_id"), table_name="reports")
    op.drop_table("reports")
    op.drop_table("cases")


def _install_append_only() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in _APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} rows are append-only'); END"
                )
        return
    # chatd_append_only() is the trigger function that revision 0001 made.
    for table in _APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION chatd_append_only()"
        )


def _drop_append_only() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in _APPEND_ONLY:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
        return
    for table in _APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
