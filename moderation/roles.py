"""Who may moderate, and whom: moderators act on members, admins on members and
moderators, nobody on admins."""

from __future__ import annotations

from typing import Final

from moderation.errors import Denied, forbidden
from persistence.records import User

MODERATOR_ROLES: Final = frozenset({"moderator", "admin"})


def is_moderator(user: User) -> bool:
    return user.role in MODERATOR_ROLES


def check_moderator(user: User) -> None:
    if not is_moderator(user):
        raise forbidden("only moderators and admins may do this")


def check_may_act(actor: User, target: User) -> None:
    """Denied (forbidden) unless actor may act on target."""
    if target.role == "admin":
        raise forbidden("nobody acts on an admin")
    if target.role == "moderator" and actor.role != "admin":
        raise forbidden("only admins act on moderators")
    if target.status == "deleted":
        raise Denied("invalid", "that account is deleted", field="user")
