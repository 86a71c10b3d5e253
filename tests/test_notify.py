"""Webhooks (`[[notify.webhooks]]`): received on loopback by a real HTTP server, from `milimo render` itself and
from the sender alone (retries on 5xx and refused connections, none on 4xx, the body signed)."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import copy_example, free_port, milimo

from milimo.config import MilimoConfig, WebhookConfig
from milimo.notify import send


class Receiver:
    """A loopback HTTP server that records each POST; `answers` are the statuses it gives, in order (then 200)."""

    def __init__(self, answers=()):
        self.answers, self.got = list(answers), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), json.loads(body), body))
                self.send_response(outer.answers.pop(0) if outer.answers else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.fast
def test_a_webhook_is_retried_when_the_receiver_may_recover_and_signed():
    receiver = Receiver(answers=[503, 502])
    try:
        hook = WebhookConfig(url=receiver.url, retries=3, timeout_s=2, secret="s3cret")
        sent = send(hook, "shot.failed", {"storyboard": "b", "shot": "s1", "error": "x"}, backoff_s=0.01)
        assert (sent.delivered, sent.attempts, sent.said) == (True, 3, "HTTP 200")
        headers, body, raw = receiver.got[-1]
        assert body["event"] == "shot.failed" and body["shot"] == "s1" and headers["X-Milimo-Event"] == "shot.failed"
        assert headers["X-Milimo-Signature"] == "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        receiver.answers = [404]
        refused = send(hook, "shot.failed", {}, backoff_s=0.01)
        assert (refused.delivered, refused.attempts, refused.said) == (False, 1, "HTTP 404")  # not retried
    finally:
        receiver.close()
    gone = send(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/", retries=2, timeout_s=1), "shot.failed", {},
                backoff_s=0.01)
    assert not gone.delivered and gone.attempts == 3


@pytest.mark.fast
def test_a_webhook_url_and_event_are_checked_in_milimo_toml(tmp_path):
    config = tmp_path / "milimo.toml"
    config.write_text('[[notify.webhooks]]\nurl = "ftp://x"\nevents = ["shot.exploded"]\n')
    checked = milimo("validate", copy_example(tmp_path / "b"), "--config", config)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert "notify.webhooks" in checked.stderr and "url" in checked.stderr, checked.stderr
    config.write_text('[[notify.webhooks]]\nurl = "http://127.0.0.1:9/hook"\nevents = ["shot.failed"]\n')
    assert MilimoConfig.read(config).notify.webhooks[0].events == ("shot.failed",)


def test_a_render_tells_each_webhook_what_it_made(tmp_path, tiny_model_dir, prefect_api):
    """`milimo render` posts one "take ready for review" per new take and one "storyboard rendered" at its end."""
    receiver = Receiver()
    try:
        config = tmp_path / "milimo.toml"
        config.write_text(f'[[notify.webhooks]]\nurl = "{receiver.url}"\n'
                          f'[[notify.webhooks]]\nurl = "{receiver.url}"\nevents = ["shot.failed"]\n')
        board = copy_example(tmp_path / "board", steps=2)
        done = milimo("render", board, "--only", "lamp-close", "--model", tiny_model_dir, "--config", config,
                      "--db", f"sqlite:///{tmp_path / 'm.db'}", "--out", tmp_path / "renders", "--by", "Ada")
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        receiver.close()
    events = [(body["event"], body.get("shot")) for _, body, _ in receiver.got]
    rendered = [shot for event, shot in events if event == "take.ready_for_review"]
    assert events[-1] == ("storyboard.rendered", None) and "lamp-close" in rendered
    assert len(events) == len(rendered) + 1  # the second receiver wanted failures only: none
    end = receiver.got[-1][1]
    assert end["storyboard"] == "lighthouse" and sorted(end["rendered"]) == sorted(rendered) and end["failed"] == {}
