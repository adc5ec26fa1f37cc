"""Accounts: registration, login, logout and token checks, with their limits.

Every registration and login records the device, address and user agent it came from:
the safety work links returning banned accounts by them.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chatd import auth, events
from chatd.broker import user_channel
from chatd.chat import now_ms
from chatd.config import AccountsConfig, LimitsConfig
from chatd.errors import Refused
from chatd.hub import Hub
from chatd.ratelimit import RateLimiter
from persistence.records import User
from persistence.sessions import SessionStore
from persistence.sightings import SightingStore
from persistence.users import UsernameTaken, UserStore
from protocol import text as checks
from protocol.codes import CloseCode

log = logging.getLogger("chatd.accounts")

# Seconds in the registration window (limits.register_per_address_per_hour).
REGISTER_WINDOW_S = 3600
# Seconds in the failed-login window (limits.login_failures_per_minute).
LOGIN_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from, as recorded for the safety work."""

    address: str
    device: str
    user_agent: str


def _field(body: dict[str, Any], name: str) -> Any:
    return body.get(name)


class Accounts:
    def __init__(
        self,
        *,
        users: UserStore,
        sessions: SessionStore,
        sightings: SightingStore,
        limiter: RateLimiter,
        hub: Hub,
        accounts: AccountsConfig,
        limits: LimitsConfig,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.sightings = sightings
        self.limiter = limiter
        self.hub = hub
        self.accounts = accounts
        self.limits = limits
        # Called with each new account once it is stored (the ban-evasion check).
        self.on_registered: Callable[[User], Awaitable[object]] | None = None

    async def check_registration(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validates every field, collecting all errors as PROTOCOL.md's `fields` map."""
        errors: dict[str, str] = {}
        out: dict[str, Any] = {}
        for name, check in (
            ("username", checks.check_username),
            ("password", checks.check_password),
            ("email", checks.check_email),
            ("birthdate", checks.check_birthdate),
        ):
            try:
                out[name] = check(body.get(name), name)
            except Exception as exc:  # ProtocolError from protocol.text
                errors[name] = getattr(exc, "message", str(exc))
        if errors:
            raise FieldErrors(errors)
        return out

    async def do_register(self, body: dict[str, Any], client: Client) -> tuple[User, str]:
        fields = await self.check_registration(body)
        today = datetime.datetime.now(datetime.UTC).date()
        if checks.age_on(fields["birthdate"], today) < self.accounts.min_age:
            raise Refused(
                "under_age", f"members must be at least {self.accounts.min_age}", field="birthdate"
            )
        key = f"register:{client.address}"
        limit = self.limits.register_per_address_per_hour
        if await self.limiter.count(key, window_s=REGISTER_WINDOW_S) >= limit:
            retry = await self.limiter.retry_after(key, window_s=REGISTER_WINDOW_S)
            raise Refused("rate_limited", "too many registrations", retry_after_ms=retry)
        username, username_key = fields["username"]
        email = fields["email"]
        password_hash = await auth.hash_password(fields["password"])
        try:
            user = await self.users.create(
                username=username,
                username_key=username_key,
                email=email,
                email_key=checks.normalize_email_key(email),
                password_hash=password_hash,
                birthdate=fields["birthdate"],
                created=now_ms(),
            )
        except UsernameTaken:
            raise Refused("username_taken", "that username is taken", field="username") from None
        # Only registrations that created an account count (PROTOCOL.md section 8).
        await self.limiter.add(key, window_s=REGISTER_WINDOW_S)
        token = await self._new_session(user, client, "registration")
        if self.on_registered is not None:
            try:
                await self.on_registered(user)
            except Exception:  # the account exists: a failed check must not undo that
                log.exception("registration check of user %s failed", user.id)
        return user, token

    async def _new_session(self, user: User, client: Client, kind: str) -> str:
        token = auth.new_token()
        now = now_ms()
        await self.sessions.create(
            user_id=user.id,
            token_hash=auth.token_hash(token),
            created=now,
            device=client.device,
            address=client.address,
            user_agent=client.user_agent,
        )
        await self.sightings.record(
            user_id=user.id,
            kind=kind,
            ts=now,
            device=client.device,
            address=client.address,
            user_agent=client.user_agent,
        )
        return token

    async def do_login(self, body: dict[str, Any], client: Client) -> tuple[User, str]:
        name, password = body.get("username"), body.get("password")
        errors = {}
        if not isinstance(name, str) or not name:
            errors["username"] = "required"
        if not isinstance(password, str) or not password:
            errors["password"] = "required"
        if errors:
            raise FieldErrors(errors)
        assert isinstance(name, str) and isinstance(password, str)
        try:
            _, key = checks.check_username(name)
        except Exception:
            key = name.casefold()
        limit = self.limits.login_failures_per_minute
        keys = (f"loginfail:a:{key}", f"loginfail:ip:{client.address}")
        for k in keys:
            # Past the limit even a right password is refused until the window ends.
            if await self.limiter.count(k, window_s=LOGIN_WINDOW_S) >= limit:
                retry = await self.limiter.retry_after(k, window_s=LOGIN_WINDOW_S)
                raise Refused("rate_limited", "too many failed logins", retry_after_ms=retry)
        user = await self.users.by_username_key(key)
        ok = await auth.verify_password(user.password_hash if user else None, password)
        if user is None or not ok or user.status == "deleted":
            for k in keys:
                await self.limiter.add(k, window_s=LOGIN_WINDOW_S)
            raise Refused("bad_credentials", "wrong username or password")
        user = await self._lift_if_expired(user)
        if user.status == "banned":
            raise Refused("banned", "this account is banned")
        token = await self._new_session(user, client, "login")
        return user, token

    async def _lift_if_expired(self, user: User) -> User:
        if user.status == "banned" and user.banned_until and user.banned_until <= now_ms():
            await self.users.set_status(user.id, "active", None)
            refreshed = await self.users.by_id(user.id)
            return refreshed or user
        return user

    async def authenticate(self, token: Any) -> tuple[int, User] | None:
        """The session id and user of a live token; None when bad, revoked or banned."""
        if not isinstance(token, str) or not token or len(token) > 512:
            return None
        found = await self.sessions.by_token_hash(auth.token_hash(token))
        if found is None:
            return None
        session_id, user = found
        if user.status != "active":
            return None
        return session_id, user

    async def do_logout(self, session_id: int, user_id: int) -> None:
        await self.sessions.revoke(session_id, now_ms())
        await self.hub.publish(
            user_channel(user_id),
            events.close_event(code=CloseCode.NORMAL, reason="logged out", session=session_id),
        )


class FieldErrors(Exception):
    """Several fields are invalid: 422 `invalid` with a `fields` map."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(", ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields
