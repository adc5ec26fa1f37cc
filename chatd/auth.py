"""Tokens and passwords: tokens are random and stored only as their SHA-256; passwords
are hashed with argon2 off the event loop (a hash takes tens of milliseconds)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Bytes of randomness in a session token (43 characters of URL-safe base64).
TOKEN_BYTES = 32

_hasher = PasswordHasher()
# A hash to verify against when the account does not exist, so that timing does not
# tell a wrong name from a wrong password.
_DUMMY_HASH = _hasher.hash("chatd-dummy-password")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_device_id() -> str:
    return secrets.token_urlsafe(16)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)
