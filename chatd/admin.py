"""Account administration from the command line: `chatd users create|set`."""

from __future__ import annotations

import argparse
import sys

from chatd import auth
from chatd.chat import now_ms
from chatd.config import Config
from persistence.database import Database
from persistence.migrate import migrate
from persistence.users import UsernameTaken, UserStore
from protocol import text as checks
from protocol.errors import ProtocolError


async def _open(config: Config) -> Database:
    if config.database.auto_migrate:
        await migrate(config.database.url)
    return await Database.connect(config.database.url)


async def create_user(config: Config, args: argparse.Namespace) -> int:
    try:
        username, key = checks.check_username(args.username)
        password = checks.check_password(args.password)
        birthdate = checks.check_birthdate(args.birthdate)
        email = checks.check_email(args.email or f"{key}@users.invalid.example")
    except ProtocolError as exc:
        print(f"chatd: {exc.field}: {exc.message}", file=sys.stderr)
        return 1
    db = await _open(config)
    try:
        users = UserStore(db)
        try:
            user = await users.create(
                username=username,
                username_key=key,
                email=email,
                email_key=checks.normalize_email_key(email),
                password_hash=await auth.hash_password(password),
                birthdate=birthdate,
                role=args.role,
                created=now_ms(),
            )
        except UsernameTaken:
            print(f"chatd: the username {username!r} is taken", file=sys.stderr)
            return 1
        if args.org:
            await users.set_org(user.id, args.org)
        print(user.id)
        return 0
    finally:
        await db.close()


async def set_user(config: Config, args: argparse.Namespace) -> int:
    if args.role is None and args.org is None:
        print("chatd: say --role or --org", file=sys.stderr)
        return 1
    db = await _open(config)
    try:
        users = UserStore(db)
        _, key = checks.check_username(args.username)
        user = await users.by_username_key(key)
        if user is None:
            print(f"chatd: no user {args.username!r}", file=sys.stderr)
            return 1
        if args.role is not None:
            await users.set_role(user.id, args.role)
        if args.org is not None:
            await users.set_org(user.id, args.org or None)
        print(user.id)
        return 0
    finally:
        await db.close()
