"""Webhooks: a JSON POST to each `[[notify.webhooks]]` receiver when a storyboard finished rendering, a shot
failed, or a new take waits for review. A receiver that times out, refuses the connection, or answers 429 or 5xx
is tried again (backoff doubling from half a second); any other answer, or the last try, ends it with a warning.
A webhook never fails, slows beyond its timeouts, or retries a render."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .config import NotifyEvent, WebhookConfig

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Delivery:
    url: str
    event: str
    delivered: bool
    attempts: int
    said: str  # the receiver's status, or why it was not reached


def body_of(event: NotifyEvent, payload: dict[str, Any]) -> bytes:
    return json.dumps({"event": event, "at": datetime.now(UTC).isoformat(), **payload}, default=str).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(hook: WebhookConfig, event: NotifyEvent, payload: dict[str, Any], backoff_s: float = 0.5) -> Delivery:
    """One event to one receiver, with the hook's retries; never raises."""
    body = body_of(event, payload)
    headers = {"Content-Type": "application/json", "User-Agent": "milimo", "X-Milimo-Event": event}
    if hook.secret:
        headers["X-Milimo-Signature"] = signature(hook.secret, body)
    said = ""
    for attempt in range(1, hook.retries + 2):
        request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout_s) as response:  # noqa: S310 - the user's URL
                return Delivery(hook.url, event, True, attempt, f"HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            said = f"HTTP {exc.code}"
            if exc.code not in RETRY_STATUSES:
                return Delivery(hook.url, event, False, attempt, said)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            said = str(getattr(exc, "reason", exc))
        if attempt <= hook.retries:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    return Delivery(hook.url, event, False, hook.retries + 1, said)


def notify(hooks: Iterable[WebhookConfig], events: Iterable[tuple[NotifyEvent, dict[str, Any]]],
           warn: Callable[[str], None] = lambda _: None) -> list[Delivery]:
    """Every event to every receiver that asked for it, in order; what did not arrive is said through `warn`."""
    events = list(events)
    out = []
    for hook in hooks:
        for event, payload in events:
            if event not in hook.events:
                continue
            delivery = send(hook, event, payload)
            if not delivery.delivered:
                warn(f"webhook {hook.url}: {event} not delivered after {delivery.attempts} attempt(s): {delivery.said}")
            out.append(delivery)
    return out


def render_events(storyboard: str, result: dict[str, Any], takes: dict[str, int]) -> list[tuple[NotifyEvent,
                                                                                                 dict[str, Any]]]:
    """A render's events: each shot that failed, each new take (waiting for review), then the storyboard's end.
    `takes`: the take number each rendered shot made."""
    events: list[tuple[NotifyEvent, dict[str, Any]]] = []
    for shot_id, error in (result.get("failed") or {}).items():
        events.append(("shot.failed", {"storyboard": storyboard, "shot": shot_id, "error": str(error)[-2000:]}))
    for shot_id in result.get("rendered") or []:
        events.append(("take.ready_for_review", {"storyboard": storyboard, "shot": shot_id,
                                                 "take": takes.get(shot_id)}))
    summary = {k: result.get(k) for k in ("revision", "rendered", "skipped", "failed", "stopped", "preview",
                                          "contact_sheet", "otio")}
    events.append(("storyboard.rendered", {"storyboard": storyboard, **summary}))
    return events
