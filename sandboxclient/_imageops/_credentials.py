"""Registry credentials: a pair, a callback, or the user's Docker config.

The daemon asks for credentials on a transfer's auth stream, naming the registry host; the
client answers from what the caller gave, or, by default, from the ``auths`` entries of
``$DOCKER_CONFIG/config.json`` (else ``~/.docker/config.json``), as every container tool
does. A secret is never logged, shown in a repr or put in an exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ("Credentials", "CredentialsLike", "docker_config_credentials", "resolve_credentials")

_DOCKER_HUB_HOSTS: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_MAX_CONFIG: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and secret (a password or token) for a registry; the secret never shows
    in its repr."""

    username: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.username, str) or not isinstance(self.secret, str):
            raise TypeError("credentials are a username and a secret, both strings")


CredentialsCallback = Callable[[str], Awaitable["Credentials | None"]]
"""``async (host) -> Credentials | None``: the credentials for a registry host."""

CredentialsLike = tuple[str, str] | Credentials | CredentialsCallback
"""What ``credentials=`` takes: a ``(username, secret)`` pair, a :class:`Credentials`, or an
async callable answering per host."""


def _host_of(key: str) -> str:
    """A config key (``https://host:port/v1/``, ``host:port``) as a bare ``host:port``."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB_HOSTS else host


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the Docker config is: ``$DOCKER_CONFIG/config.json``, else the home's."""
    env = os.environ if environ is None else environ
    base = env.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def docker_config_credentials(host: str, path: Path | None = None) -> Credentials | None:
    """The Docker config's credentials for ``host``, or None (no file, no entry, or an
    entry that does not decode: a broken config never fails a pull that needs none)."""
    config = docker_config_path() if path is None else path
    try:
        with config.open("rb") as f:
            data = json.loads(f.read(_MAX_CONFIG + 1)[:_MAX_CONFIG])
    except (OSError, ValueError):
        return None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = _host_of(host)
    for key, entry in auths.items():
        if not isinstance(key, str) or not isinstance(entry, dict) or _host_of(key) != wanted:
            continue
        username, password = entry.get("username"), entry.get("password")
        if isinstance(username, str) and isinstance(password, str) and password:
            return Credentials(username, password)
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            try:
                user, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if sep:
                return Credentials(user, secret)
    return None


def has_docker_config() -> bool:
    """Whether there is a Docker config file to answer from."""
    return docker_config_path().is_file()


async def resolve_credentials(given: CredentialsLike | None, host: str) -> Credentials | None:
    """The credentials for ``host``: from ``given``, or the Docker config when None."""
    if given is None:
        return docker_config_credentials(host)
    if isinstance(given, Credentials):
        return given
    if isinstance(given, tuple):
        return Credentials(*given)
    found = await given(host)
    if found is not None and not isinstance(found, Credentials):
        raise TypeError("a credentials callback must return Credentials or None")
    return found


def checked_credentials(given: object) -> CredentialsLike | None:
    """``given`` if it is a valid ``credentials=`` value, else TypeError (naming no secret)."""
    if given is None or isinstance(given, Credentials) or callable(given):
        return given
    if (
        isinstance(given, tuple)
        and len(given) == 2
        and all(isinstance(part, str) for part in given)
    ):
        return (given[0], given[1])
    raise TypeError(
        "credentials must be a (username, secret) pair of strings, Credentials, "
        "or an async callable (host) -> Credentials | None"
    )
