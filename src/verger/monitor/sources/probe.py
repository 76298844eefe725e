"""HTTP and TCP probes from outside the app, with conditions on what they get back."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from datetime import UTC, datetime

import httpx

from verger.config.sources import Probe
from verger.monitor.sources.base import Reading, Source

log = logging.getLogger("verger.monitor")


def _days_left(response: httpx.Response) -> float | None:
    """Days until the server's certificate expires, when the answer came over TLS."""
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    cert = ssl_object.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return None
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    return (expires - datetime.now(UTC)).total_seconds() / 86400


class ProbeSource(Source):
    """One probe; ``verger_probe_success`` is 1 only when every condition held."""

    kind = "probe"

    def __init__(self, probe: Probe) -> None:
        super().__init__(f"probe {probe.name}", probe.every)
        self.probe = probe
        self.failing: str | None = None
        verify: ssl.SSLContext | bool = True
        if probe.ca_file is not None:
            verify = ssl.create_default_context(cafile=probe.ca_file)
        self._client = httpx.AsyncClient(timeout=probe.timeout, verify=verify)

    async def collect(self, now: float) -> list[Reading]:
        labels = {"probe": self.probe.name}
        started = time.monotonic()
        readings: list[Reading] = []
        try:
            if self.probe.http is not None:
                problem = await self._http(readings, labels, started)
            else:
                problem = await self._tcp()
        except (OSError, httpx.HTTPError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
        seconds = round(time.monotonic() - started, 6)
        limit = self.probe.max_latency
        if problem is None and limit is not None and seconds > limit:
            problem = f"answered in {seconds * 1000:.0f}ms, over {limit * 1000:.0f}ms"
        self._log(problem)
        readings.append(Reading("verger_probe_duration_seconds", labels, seconds))
        readings.append(Reading("verger_probe_success", labels, float(problem is None)))
        return readings

    async def _http(
        self, readings: list[Reading], labels: dict[str, str], started: float
    ) -> str | None:
        method, url = self.probe.method_url
        response = await self._client.request(method, url)
        readings.append(
            Reading("verger_probe_status_code", labels, response.status_code)
        )
        days = _days_left(response)
        if days is not None:
            readings.append(
                Reading("verger_probe_tls_days_left", labels, round(days, 2))
            )
            if self.probe.tls_days is not None:
                ok = days >= self.probe.tls_days
                readings.append(Reading("verger_probe_tls_ok", labels, float(ok)))
        expected = self.probe.status
        if expected is not None and response.status_code != expected:
            return f"status {response.status_code}, expected {expected}"
        if expected is None and response.status_code >= 400:
            return f"status {response.status_code}"
        if self.probe.contains is not None and self.probe.contains not in response.text:
            return f"the body does not contain {self.probe.contains!r}"
        return None

    async def _tcp(self) -> str | None:
        host, _, port = (self.probe.tcp or "").rpartition(":")
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), self.probe.timeout
        )
        writer.close()
        await writer.wait_closed()
        return None

    def _log(self, problem: str | None) -> None:
        if problem != self.failing:
            if problem is None:
                log.info("probe %s passes again", self.probe.name)
            else:
                log.warning("probe %s fails: %s", self.probe.name, problem)
        self.failing = problem

    async def close(self) -> None:
        await self._client.aclose()
