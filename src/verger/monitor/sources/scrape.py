"""An application's Prometheus ``/metrics`` page, read over HTTP."""

from __future__ import annotations

import logging
import math
import time
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from verger.monitor.sources.base import Reading, Source, up

log = logging.getLogger("verger.monitor")


class ScrapeSource(Source):
    """One scrape target; its samples get ``job`` and ``instance`` labels."""

    kind = "scrape"

    def __init__(self, url: str, job: str, every: float, timeout: float) -> None:
        super().__init__(f"scrape {url}", every)
        self.url = url
        self.job = job
        self.instance = urlsplit(url).netloc
        self.timeout = timeout
        self.failing: str | None = None
        self._client = httpx.AsyncClient(timeout=timeout)

    async def collect(self, now: float) -> list[Reading]:
        started = time.monotonic()
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
            readings = self._parse(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            )
            return [up(self.job, self.instance, False)]
        if self.failing is not None:
            log.info("scrape of %s answers again", self.url)
            self.failing = None
        target = {"job": self.job, "instance": self.instance}
        return [
            *readings,
            up(self.job, self.instance, True),
            Reading(
                "scrape_duration_seconds", target, round(time.monotonic() - started, 6)
            ),
            Reading("scrape_samples_scraped", target, float(len(readings))),
        ]

    def _failed(self, reason: str) -> None:
        if self.failing != reason:
            log.warning(
                "scrape of %s failed (%s); recorded as up 0 for job %s",
                self.url,
                reason,
                self.job,
            )
        self.failing = reason

    def _parse(self, text: str) -> list[Reading]:
        readings = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if math.isnan(sample.value) and family.type != "gauge":
                    continue
                labels = {
                    (f"exported_{k}" if k in ("job", "instance") else k): v
                    for k, v in sample.labels.items()
                }
                labels.update(job=self.job, instance=self.instance)
                readings.append(Reading(sample.name, labels, float(sample.value)))
        return readings

    async def close(self) -> None:
        await self._client.aclose()
