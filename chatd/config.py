"""Settings: built-in defaults, then the TOML file, then CHATD_* variables, then flags.

Read once at start into frozen dataclasses and handed down by keyword; nothing else in
chatd reads the environment or the file. A bad value raises ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(Exception):
    """A setting is missing, unknown or of the wrong form; the message names it."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # Origins besides the server's own allowed to open /ws (scheme://host[:port]).
    allowed_origins: tuple[str, ...] = ()
    # Addresses or CIDR ranges whose X-Forwarded-* headers are believed.
    trusted_proxies: tuple[str, ...] = ()
    # The node's id in `ready` and metrics; empty: hostname-pid.
    node_id: str = ""
    # Seconds a SIGTERM'd node waits for connections and commits before it exits.
    shutdown_grace_s: float = 5.0


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:///chatd.db"
    auto_migrate: bool = True
    # Largest number of messages one group commit takes.
    batch_max: int = 512


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    url: str = "memory://"


@dataclass(frozen=True, slots=True)
class AccountsConfig:
    min_age: int = 15


@dataclass(frozen=True, slots=True)
class RoomsConfig:
    open_creation: bool = True


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    # Messages per second per account, and the burst allowed.
    send_rate: float = 5.0
    send_burst: int = 30
    register_per_address_per_hour: int = 10
    login_failures_per_minute: int = 10
    new_dms_per_hour: int = 20
    # Reports an account may file per hour.
    reports_per_hour: int = 30
    # Frames queued for one connection before it is closed 4009 as too slow.
    send_buffer_frames: int = 1024
    # Seconds a new connection has to send `auth`.
    auth_timeout_s: float = 10.0
    # Bad frames within a minute that close a connection 1008.
    bad_frames_per_minute: int = 10


@dataclass(frozen=True, slots=True)
class ModerationConfig:
    # Days after a report that the gate still opens new messages of the DM it covers.
    gate_days: int = 7


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    log: LogConfig = field(default_factory=LogConfig)


_SECTIONS: dict[str, type] = dict(get_type_hints(Config))
_LOG_LEVELS = ("debug", "info", "warning", "error")


def load(
    *,
    config_file: str | None = None,
    environ: typing.Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
    cwd: Path | None = None,
) -> Config:
    """Builds the Config from all sources, lowest to highest; raises ConfigError."""
    environ = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    path = _config_path(config_file, environ, cwd or Path.cwd())
    if path is not None:
        _merge(raw, _read_toml(path))
    _merge(raw, _from_environ(environ))
    if host is not None:
        raw.setdefault("server", {})["host"] = (host, "--host")
    if port is not None:
        raw.setdefault("server", {})["port"] = (port, "--port")
    return _build(raw)


def _config_path(given: str | None, environ: typing.Mapping[str, str], cwd: Path) -> Path | None:
    if given:
        return Path(given)
    if environ.get("CHATD_CONFIG"):
        return Path(environ["CHATD_CONFIG"])
    default = cwd / "config.toml"
    return default if default.is_file() else None


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, table in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{section}: unknown section in {path}")
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: must be a table in {path}")
    return {
        section: {k: (v, f"{section}.{k}") for k, v in t.items()} for section, t in data.items()
    }


def _from_environ(environ: typing.Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith("CHATD_") or name == "CHATD_CONFIG":
            continue
        section, _, key = name[len("CHATD_") :].lower().partition("_")
        if section not in _SECTIONS:
            continue  # CHATD_TEST_* and the like belong to others
        if not key:
            raise ConfigError(f"{name}: names no key")
        out.setdefault(section, {})[key] = (_EnvText(text), name)
    return out


class _EnvText(str):
    """A value that came from a variable: parsed by the field's type, not taken as is."""


def _merge(into: dict[str, dict[str, Any]], more: dict[str, dict[str, Any]]) -> None:
    for section, table in more.items():
        into.setdefault(section, {}).update(table)


def _build(raw: dict[str, dict[str, Any]]) -> Config:
    sections = {}
    for section, cls in _SECTIONS.items():
        hints = get_type_hints(cls)
        values = {}
        for key, (value, origin) in raw.get(section, {}).items():
            if key not in hints:
                raise ConfigError(f"{origin}: unknown key")
            values[key] = _coerce(value, hints[key], origin)
        sections[section] = cls(**values)
    config = Config(**sections)
    _check(config)
    return config


def _coerce(value: Any, kind: Any, origin: str) -> Any:
    if isinstance(value, _EnvText):
        value = _parse_env(str(value), kind, origin)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{origin}: must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{origin}: must be a whole number")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{origin}: must be a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{origin}: must be a string")
    if typing.get_origin(kind) is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{origin}: must be a list of strings")
    raise ConfigError(f"{origin}: unsupported type")  # pragma: no cover


def _parse_env(text: str, kind: Any, origin: str) -> Any:
    if kind is str:
        return text
    if kind is bool:
        if text in ("true", "false"):
            return text == "true"
        raise ConfigError(f"{origin}: must be true or false")
    if kind in (int, float):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"{origin}: must be a number written as in TOML") from None
    if typing.get_origin(kind) is tuple:
        try:
            return json.loads(text)
        except ValueError:
            raise ConfigError(f"{origin}: must be a JSON array") from None
    return text  # pragma: no cover


def _positive(origin: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{origin}: must be greater than 0")


def _check(config: Config) -> None:
    """Range checks that types alone do not give."""
    s, lim = config.server, config.limits
    if not 1 <= s.port <= 65535:
        raise ConfigError("server.port: must be 1 to 65535")
    for net in s.trusted_proxies:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                f"server.trusted_proxies: {net!r} is not an address or CIDR"
            ) from None
    for origin in s.allowed_origins:
        if "://" not in origin:
            raise ConfigError(f"server.allowed_origins: {origin!r} must be scheme://host[:port]")
    _positive("server.shutdown_grace_s", s.shutdown_grace_s)
    url = config.database.url
    if not (url.startswith("sqlite+aiosqlite://") or url.startswith("postgresql+asyncpg://")):
        raise ConfigError(
            "database.url: must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    _positive("database.batch_max", config.database.batch_max)
    broker = config.broker.url
    if not (
        broker == "memory://" or broker.startswith(("redis://", "rediss://", "redis+cluster://"))
    ):
        raise ConfigError("broker.url: must be memory://, redis://... or redis+cluster://...")
    if not 0 <= config.accounts.min_age <= 150:
        raise ConfigError("accounts.min_age: must be 0 to 150")
    for name in (
        "send_rate",
        "send_burst",
        "register_per_address_per_hour",
        "login_failures_per_minute",
        "new_dms_per_hour",
        "reports_per_hour",
        "send_buffer_frames",
        "auth_timeout_s",
        "bad_frames_per_minute",
    ):
        _positive(f"limits.{name}", getattr(lim, name))
    _positive("moderation.gate_days", config.moderation.gate_days)
    if config.log.level not in _LOG_LEVELS:
        raise ConfigError(f"log.level: must be one of {', '.join(_LOG_LEVELS)}")


def describe(config: Config) -> dict[str, dict[str, Any]]:
    """The settings as plain data, for docs and `chatd config` output (no secrets held)."""
    return {name: dataclasses.asdict(getattr(config, name)) for name in _SECTIONS}
