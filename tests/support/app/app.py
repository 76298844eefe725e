"""A small web app for deploy tests, started by verger with $PORT.

A file named FAULT in its folder makes a release misbehave the way real ones
do: ``crash``, ``never-healthy``, ``slow-start:SECONDS``, ``smoke-fail``,
``errors-when-live``, ``slow-when-live:SECONDS``. Requests carrying
``X-Smoke-Test`` are smoke tests and never see the "when live" faults.
"""

from __future__ import annotations

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FAULT = Path("FAULT").read_text().strip() if Path("FAULT").exists() else ""
VERSION = os.environ.get("VERGER_VERSION", "dev")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Version", VERSION)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        smoke = "X-Smoke-Test" in self.headers
        if url.path == "/health":
            ok = FAULT != "never-healthy"
            self._answer(200 if ok else 503, "ok" if ok else "not ready")
            return
        if url.path == "/smoke" and FAULT == "smoke-fail":
            self._answer(500, "smoke fails")
            return
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("seconds", ["1"])[0]))
        if not smoke and FAULT == "errors-when-live":
            self._answer(500, "broken")
            return
        if not smoke and FAULT.startswith("slow-when-live"):
            time.sleep(float(FAULT.split(":")[1]))
        self._answer(200, f"version={VERSION} got={len(body)}")

    do_GET = _serve
    do_POST = _serve


def main() -> None:
    if FAULT == "crash":
        print("fatal: cannot read settings", file=sys.stderr)
        sys.exit(1)
    if FAULT.startswith("slow-start"):
        time.sleep(float(FAULT.split(":")[1]))
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    print(f"serving {VERSION} on {os.environ['PORT']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
