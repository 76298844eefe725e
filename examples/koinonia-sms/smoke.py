"""Smoke test for koinonia-sms: a church, a member, a message, an SMS in the outbox.

verger runs it against a new release before any user sees it, with BASE_URL set
to that release's own address. It exits 0 when every step worked, otherwise 1
with one line saying which step failed. Its requests carry ``X-Smoke-Test: 1``.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.parse
from typing import Any


class SmokeFailed(Exception):
    """One step of the smoke test did not get the answer it needed."""


class Client:
    """A keep-alive HTTP client for one base URL that speaks JSON."""

    def __init__(self, base_url: str) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise SmokeFailed(f"BASE_URL must be http://host:port, got {base_url!r}")
        self.conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
        self.versions: set[str] = set()

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        headers = {"X-Smoke-Test": "1", "Content-Type": "application/json"}
        payload = None if body is None else json.dumps(body)
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        except OSError as exc:
            raise SmokeFailed(f"{method} {path}: {exc}") from None

        self.versions.add(response.getheader("X-App-Version") or "")
        if response.status != expect:
            raise SmokeFailed(
                f"{method} {path} answered {response.status}, expected {expect}: "
                f"{text[:200]}"
            )
        try:
            return json.loads(text)
        except ValueError:
            raise SmokeFailed(
                f"{method} {path} answered non-JSON: {text[:200]}"
            ) from None


def check(condition: bool, reason: str) -> None:
    if not condition:
        raise SmokeFailed(reason)


def smoke(base_url: str, version: str | None) -> None:
    client = Client(base_url)
    health = client.call("GET", "/health")
    check(health.get("status") == "ok", f"/health says {health}")

    church = client.call("POST", "/churches", {"name": "Smoke Test Chapel"}, 201)
    phone = f"+1999{time.time_ns() % 10**8:08d}"
    member = {"name": "Smoke Tester", "phone": phone, "email": "smoke@example.org"}
    client.call("POST", f"/churches/{church['id']}/members", member, 201)
    members = client.call("GET", f"/churches/{church['id']}/members")["members"]
    check([m["phone"] for m in members] == [phone], f"members are {members}")

    body = f"smoke test {time.time_ns()}"
    sent = client.call(
        "POST", f"/churches/{church['id']}/messages", {"body": body}, 201
    )
    check(sent.get("delivered") == 1, f"message reached {sent.get('delivered')}, not 1")
    message = client.call("GET", f"/messages/{sent['id']}")
    check(message["deliveries"][0]["status"] == "sent", f"delivery is {message}")

    outbox = client.call("GET", f"/sandbox/outbox?to={urllib.parse.quote(phone)}")
    bodies = [m["body"] for m in outbox["messages"]]
    check(bodies == [body], f"sandbox outbox for {phone} holds {bodies}")

    # A release answering with another version means BASE_URL points elsewhere.
    if version:
        check(client.versions == {version}, f"answered by versions {client.versions}")


def main() -> int:
    base_url = os.environ.get("BASE_URL", "")
    if not base_url:
        print("smoke: BASE_URL is not set", file=sys.stderr)
        return 1
    try:
        smoke(base_url.rstrip("/"), os.environ.get("VERGER_VERSION"))
    except SmokeFailed as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return 1
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        print(f"smoke: an answer lacked what was expected: {exc!r}", file=sys.stderr)
        return 1
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
