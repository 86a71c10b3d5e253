"""Who may use the dashboard: loopback by default, a token on any other address, CSRF on every change."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from storyboards.errors import ConfigError

CSRF_COOKIE = "milimo_csrf"
TOKEN_COOKIE = "milimo_token"
USER_COOKIE = "milimo_user"  # the display name a person gave this dashboard; every decision records it
FLASH_COOKIE = "milimo_flash"  # what the last action said, shown once by the next page (never text from a URL)
MAX_NAME = 60


def display_name(text: str | None) -> str | None:
    """A person's display name as given (the form, the cookie): printable, at most MAX_NAME characters; None
    for anything else."""
    name = " ".join((text or "").split())
    return name if 0 < len(name) <= MAX_NAME and name.isprintable() else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None, token_file: str | None,
                  users: Mapping[str, str] | None = None) -> str | None:
    """The shared token a non-loopback dashboard requires (from --token-file, else `token`: [dashboard] token,
    else MILIMO_DASHBOARD_TOKEN, as the settings hold them), unless each person has a token of their own
    ([dashboard.users]); on loopback none is needed. Refuses to start without either elsewhere."""
    if token_file:
        token = Path(token_file).read_text().strip()
    if not is_loopback(host) and not token and not users:
        raise ConfigError(f"the dashboard would listen on {host}, beyond this machine, with no token",
                          "set MILIMO_DASHBOARD_TOKEN (or --token-file FILE), give each person a token of their "
                          "own (`milimo dashboard users add NAME`), or bind 127.0.0.1")
    return token or None


def new_user_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What `[dashboard.users]` keeps of a person's token: its sha256, never the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_user(given: str | None, users: Mapping[str, str]) -> str | None:
    """The person whose own token `given` is, if any."""
    if not given:
        return None
    digest = token_hash(given)
    found = None
    for name, expected in users.items():  # every entry compared, in constant time each
        if hmac.compare_digest(digest.encode(), expected.encode()):
            found = name
    return found


def token_ok(given: str | None, expected: str) -> bool:
    return given is not None and given != "" and hmac.compare_digest(given.encode(), expected.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


def served_names(bind: str, names: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The host names a request's `Host` may carry: the address bound (every loopback name when it is loopback)
    and the names configured ([dashboard] names). None (any) only for a wildcard bind with no names, which needs
    a token anyway."""
    if bind in WILDCARDS and not names:
        return None
    found = set(names) | ({bind} if bind not in WILDCARDS else set())
    if is_loopback(bind):
        found |= set(LOOPBACK_NAMES)
    return tuple(sorted(n.lower().strip("[]") for n in found))


def host_ok(host_header: str | None, allowed: tuple[str, ...] | None) -> bool:
    """Whether `Host` names this dashboard. A page of another site whose name was rebound to 127.0.0.1 (DNS
    rebinding) reaches a loopback dashboard with its own name in `Host`: refused, it cannot read pages or their
    CSRF token."""
    if allowed is None:
        return True
    if not host_header:
        return False
    name = urlsplit(f"//{host_header}").hostname
    return name is not None and name.lower() in allowed


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """A state-changing request must come from a page of this dashboard."""
    source = origin or referer
    if not source or not host:
        return False
    return urlsplit(source).netloc == host
