"""Health checks and smoke tests against a release before any user reaches it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from verger.config import Health, Smoke
from verger.deploy import process
from verger.errors import DeployError


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


async def probe(session: aiohttp.ClientSession, url: str, timeout: float) -> Probe:
    """One health request: a 2xx or 3xx answer within the timeout passes."""
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            await response.read()
            if 200 <= response.status < 400:
                return Probe(True, f"HTTP {response.status}")
            return Probe(False, f"HTTP {response.status}")
    except TimeoutError:
        return Probe(False, f"no answer within {timeout:g}s")
    except aiohttp.ClientError as exc:
        return Probe(False, _client_error(exc))


def _client_error(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "Connect call failed" in text or "Cannot connect" in text:
        return "connection refused"
    return text


async def wait_healthy(
    base_url: str,
    health: Health,
    handle: process.Handle,
    log_path: Path,
    on_probe: Callable[[int, Probe], None] | None = None,
) -> float:
    """Wait for ``healthy_after`` consecutive passes within ``start_timeout``.

    Returns the seconds it took. Raises DeployError when the process exits or
    the start timeout passes, naming the last thing the check saw.
    """
    started = time.monotonic()
    deadline = started + health.start_timeout
    passes = 0
    last = Probe(False, "no check ran")
    async with aiohttp.ClientSession() as session:
        while True:
            _raise_if_exited(handle, log_path)
            last = await probe(session, base_url + health.path, health.timeout)
            passes = passes + 1 if last.ok else 0
            if on_probe is not None:
                on_probe(passes, last)
            if passes >= health.healthy_after:
                return time.monotonic() - started
            if time.monotonic() + health.interval > deadline:
                break
            await asyncio.sleep(health.interval)
    _raise_if_exited(handle, log_path)
    raise DeployError(
        f"the release did not become healthy within {health.start_timeout:g}s "
        f"({passes} of {health.healthy_after} passes; last check: {last.detail})",
        "check that the app serves health.path on $PORT, or raise "
        "health.start_timeout if it needs longer to start",
    )


def _raise_if_exited(handle: process.Handle, log_path: Path) -> None:
    if process.alive(handle):
        return
    code = process.exit_code(handle)
    lines = [line for line in process.tail(log_path, 5) if line.strip()]
    said = f": {lines[-1].strip()}" if lines else ""
    status = f"with code {code}" if code is not None else ""
    raise DeployError(
        f"the release exited during start {status}{said}".replace("  ", " "),
        f"run the start command by hand in its release folder; its log is {log_path}",
    )


async def run_smoke(
    base_url: str,
    tests: list[Smoke],
    cwd: Path,
    env: dict[str, str],
    on_result: Callable[[Smoke, bool, str], None] | None = None,
) -> None:
    """Run every smoke test against the release; raise DeployError on the first failure."""
    async with aiohttp.ClientSession() as session:
        for test in tests:
            if test.http is not None:
                ok, detail = await _smoke_http(session, base_url, test)
            else:
                ok, detail = await _smoke_run(base_url, test, cwd, env)
            if on_result is not None:
                on_result(test, ok, detail)
            if not ok:
                raise DeployError(
                    f"smoke test {test.label!r} failed: {detail}",
                    "the live release keeps serving; fix the release and deploy again",
                )


async def _smoke_http(
    session: aiohttp.ClientSession, base_url: str, test: Smoke
) -> tuple[bool, str]:
    assert test.http is not None
    method, path = test.http.split(None, 1)
    headers = {"X-Smoke-Test": "1"}
    try:
        async with session.request(
            method,
            base_url + path,
            data=test.body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=test.timeout),
            allow_redirects=False,
        ) as response:
            text = await response.text(errors="replace")
    except TimeoutError:
        return False, f"no answer within {test.timeout:g}s"
    except aiohttp.ClientError as exc:
        return False, _client_error(exc)
    expected = test.expect
    if expected is not None and response.status != expected:
        return False, f"expected HTTP {expected}, got {response.status}"
    if expected is None and not 200 <= response.status < 400:
        return False, f"expected a 2xx or 3xx answer, got HTTP {response.status}"
    if test.contains is not None and test.contains not in text:
        return False, f"the answer does not contain {test.contains!r}"
    return True, f"HTTP {response.status}"


async def _smoke_run(
    base_url: str, test: Smoke, cwd: Path, env: dict[str, str]
) -> tuple[bool, str]:
    assert test.run is not None
    proc = await asyncio.create_subprocess_shell(
        test.run,
        cwd=cwd,
        env={**os.environ, **env, "BASE_URL": base_url},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), test.timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"did not finish within {test.timeout:g}s"
    if proc.returncode != 0:
        lines = [
            ln for ln in output.decode("utf-8", "replace").splitlines() if ln.strip()
        ]
        said = f": {lines[-1].strip()}" if lines else ""
        return False, f"exited with code {proc.returncode}{said}"
    return True, "passed"
