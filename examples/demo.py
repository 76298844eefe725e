"""The demo: koinonia-sms released four times under steady traffic.

v1 goes to staging and production; users start sending requests to staging
as soon as v1 serves there, so that its watch window sees traffic and passes
(production takes only a version whose staging window passed). While users
keep sending requests to both, v2 is released (no request may fail), v3
crashes at start (refused, v2 keeps serving) and v4 answers 5xx once live
(rolled back by the watch window).
Every step goes through the verger command line, as a team would use it.
The demo ends with a table of what the users saw, and exits non-zero when
any of those promises was broken.

    bash scripts/demo.sh            # sets up, then runs this
    python examples/demo.py --keep  # leaves the demo folder for a look
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
APP = HERE / "koinonia-sms"
sys.path.insert(0, str(APP))

from traffic import Traffic  # noqa: E402

console = Console(highlight=False)
if not console.is_terminal:
    # Piped into a log, the table still gets room, as verger's own output does.
    console = Console(highlight=False, width=160)


class Demo:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.project = folder / "koinonia-sms"
        self.config = self.project / "verger.yml"

    def verger(self, *args: str, check: bool = True) -> int:
        """Run a verger command, showing it and its output as a user would see them."""
        code = self.finish(self.start(*args))
        if check and code != 0:
            raise SystemExit(f"demo: 'verger {' '.join(args)}' failed unexpectedly")
        return code

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start a verger command in the background and show it."""
        console.print(f"\n[bold]$ verger {' '.join(args)}[/bold]")
        return subprocess.Popen(
            [sys.executable, "-m", "verger", "-c", str(self.config), *args],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def finish(self, command: subprocess.Popen[str]) -> int:
        """Wait for a command started in the background and show its output."""
        output, _ = command.communicate()
        for line in output.splitlines():
            console.print(f"  {line}", markup=False)
        return command.returncode

    def history(self, environment: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "verger", "-c", str(self.config), "--json",
             "history", environment],
            text=True, capture_output=True, check=True,
        )  # fmt: skip
        result: list[dict[str, Any]] = json.loads(done.stdout)
        return result

    def source(self, version: str, fault: str | None = None) -> Path:
        """A release's source: the app, with a FAULT file for the bad ones."""
        folder = self.folder / "sources" / version
        shutil.copytree(
            APP, folder, ignore=shutil.ignore_patterns("__pycache__", ".verger")
        )
        (folder / "verger.yml").unlink()
        if fault:
            (folder / "FAULT").write_text(fault + "\n")
        return folder

    def release(self, version: str, fault: str | None = None) -> int:
        return self.finish(self.start_release(version, fault))

    def start_release(
        self, version: str, fault: str | None = None
    ) -> subprocess.Popen[str]:
        source = str(self.source(version, fault))
        return self.start("release", source, "--version", version, "--yes")


def serving(port: int, version: str) -> bool:
    """Whether the router on ``port`` answers with ``version`` (it answers 503 before)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.getheader("X-App-Version") == version
    except OSError:
        return False
    finally:
        conn.close()


def wait_until_serving(port: int, version: str, command: subprocess.Popen[str]) -> None:
    """Wait until ``version`` is live behind ``port``, while ``command`` releases it."""
    deadline = time.monotonic() + 300
    while not serving(port, version):
        if command.poll() is not None or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def ports_free(*ports: int) -> None:
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(
                    f"demo: port {port} is taken; stop what listens there "
                    f"(ss -ltnp 'sport = :{port}') and run the demo again"
                )


def phase(name: str, traffic: list[Traffic], action: Any) -> dict[str, Any]:
    """Run one release under traffic and count what the users saw during it."""
    before = [t.summary() for t in traffic]
    code = action()
    time.sleep(1.0)
    after = [t.summary() for t in traffic]
    sent = sum(a["sent"] - b["sent"] for a, b in zip(after, before, strict=True))
    failed = sum(a["failed"] - b["failed"] for a, b in zip(after, before, strict=True))
    return {"phase": name, "exit": code, "sent": sent, "failed": failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo folder")
    args = parser.parse_args()

    ports_free(8080, 8081)
    folder = Path(tempfile.mkdtemp(prefix="verger-demo-"))
    demo = Demo(folder)
    shutil.copytree(
        APP, demo.project, ignore=shutil.ignore_patterns("__pycache__", ".verger")
    )
    console.print(f"[bold]verger demo[/bold] in {folder}")
    try:
        return run(demo)
    finally:
        demo.verger("down", check=False)
        if args.keep:
            console.print(f"\nThe demo folder is kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def run(demo: Demo) -> int:
    demo.verger("check", check=False)
    demo.verger("up")
    staging = Traffic("http://127.0.0.1:8081", connections=2, rate=20)
    production = Traffic("http://127.0.0.1:8080", connections=4, rate=40)
    traffic = [production, staging]
    try:
        phases = [release_v1(demo, staging)]
        if phases[0]["exit"] != 0:
            raise SystemExit("demo: v1 could not be released")
        production.start()
        time.sleep(2)
        phases += [
            phase("release v2", traffic, lambda: demo.release("v2")),
            phase(
                "v3 crashes at start",
                traffic,
                lambda: demo.release("v3", "crash-at-start"),
            ),
            phase(
                "v4 answers 5xx once live",
                traffic,
                lambda: demo.release("v4", "errors-when-live"),
            ),
        ]
    finally:
        summaries = [t.stop() for t in traffic if t.workers]

    demo.verger("status")
    demo.verger("history", "staging")
    return report(demo, phases, summaries)


def release_v1(demo: Demo, staging: Traffic) -> dict[str, Any]:
    """Release v1; staging's users start once v1 serves there, before its window ends."""
    command = demo.start_release("v1")
    wait_until_serving(8081, "v1", command)
    # No request is sent before v1 serves: the router's 503s before then are
    # not a release's failures, and the table counts only what v1 answered.
    staging.start()
    return phase("release v1", [staging], lambda: demo.finish(command))


def report(
    demo: Demo, phases: list[dict[str, Any]], summaries: list[dict[str, Any]]
) -> int:
    staging, production = demo.history("staging"), demo.history("production")
    v1_staging = next(d for d in staging if d["version"] == "v1")
    v1_switch = next(d for d in production if d["version"] == "v1")["switch_ms"]
    v2_switch = next(d for d in production if d["version"] == "v2")["switch_ms"]
    v4 = next(d for d in staging if d["version"] == "v4")
    v3 = next(d for d in staging if d["version"] == "v3")

    table = Table(title="What the users saw", title_justify="left")
    for column in ("phase", "requests sent", "failed", "switch", "rollback", "outcome"):
        table.add_column(column)
    outcomes = [
        f"live in staging (watch window {v1_staging['verdict']}) and production "
        f"(exit {phases[0]['exit']})",
        f"live in staging and production (exit {phases[1]['exit']})",
        f"refused in staging: {v3['status']} (exit {phases[2]['exit']})",
        f"{v4['status']} in staging (exit {phases[3]['exit']})",
    ]
    switches = [
        f"{v1_switch:.1f}ms", f"{v2_switch:.1f}ms", "-", f"{v4['switch_ms']:.1f}ms"
    ]  # fmt: skip
    rollback = f"{v4['rollback_ms']:.1f}ms" if v4["rollback_ms"] else "-"
    rollbacks = ["-", "-", "-", rollback]
    for index, row in enumerate(phases):
        table.add_row(
            row["phase"], str(row["sent"]), str(row["failed"]),
            switches[index], rollbacks[index], outcomes[index],
        )  # fmt: skip
    console.print()
    console.print(table)
    total_sent = sum(s["sent"] for s in summaries)
    total_failed = sum(s["failed"] for s in summaries)
    console.print(
        f"In all: {total_sent} requests, {total_failed} failed. The failures during "
        "v4 are its own 5xx answers in staging, before the watch window took it back. "
        "Staging's users started once v1 served there; production's once v1 was "
        "released."
    )

    broken = []
    if phases[0]["failed"] != 0 or v1_staging["verdict"] != "passed":
        broken.append("v1's staging watch window did not pass with no failed request")
    if phases[1]["exit"] != 0 or phases[1]["failed"] != 0:
        broken.append("v2 was not released without a failed request")
    if phases[2]["exit"] == 0 or v3["status"] != "failed" or phases[2]["failed"]:
        broken.append("v3 was not refused cleanly")
    if v4["status"] != "rolled_back":
        broken.append("v4 was not rolled back")
    for message in broken:
        console.print(f"[red]demo: {message}[/red]")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
