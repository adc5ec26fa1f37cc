"""The `chatd` command: serve, migrate, and user administration (PROTOCOL.md section 7)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from chatd.config import Config, ConfigError, load


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatd", description="chatd: a real-time chat server")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node")
    serve.add_argument("--config")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.add_argument("--config")

    users = sub.add_parser("users", help="manage accounts")
    usub = users.add_subparsers(dest="users_command", required=True)
    create = usub.add_parser("create", help="create an account")
    create.add_argument("username")
    create.add_argument("--password", required=True)
    create.add_argument("--birthdate", required=True)
    create.add_argument("--email")
    create.add_argument("--role", choices=("member", "moderator", "admin"), default="member")
    create.add_argument("--org", help="trusted organisation (outreach volunteers)")
    create.add_argument("--config")
    set_ = usub.add_parser("set", help="change an account's role or organisation")
    set_.add_argument("username")
    set_.add_argument("--role", choices=("member", "moderator", "admin"))
    set_.add_argument("--org", help="organisation name; an empty string removes it")
    set_.add_argument("--config")
    return p


def _configure_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(
            config_file=args.config,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
        )
    except ConfigError as exc:
        print(f"chatd: bad configuration: {exc}", file=sys.stderr)
        return 2
    _configure_logging(config)
    if args.command == "serve":
        import uvloop

        from chatd.serve import run

        try:
            # uvloop: a cheaper loop turn and socket write, on every frame of every node.
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(run(config))
        except KeyboardInterrupt:
            return 0
    if args.command == "migrate":
        from persistence.migrate import migrate

        asyncio.run(migrate(config.database.url))
        print("database is up to date")
        return 0
    from chatd.admin import create_user, set_user

    if args.users_command == "create":
        return asyncio.run(create_user(config, args))
    return asyncio.run(set_user(config, args))


if __name__ == "__main__":
    sys.exit(main())
