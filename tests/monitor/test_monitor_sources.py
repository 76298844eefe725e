"""Sources against real servers: scrapes, probes, host, PostgreSQL, Redis, SQL, loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from monitor_support import T0, RecordingSink, run_async

from verger.config.sources import Probe
from verger.monitor.loop import MonitorLoop
from verger.monitor.rules import Rule, RuleEngine
from verger.monitor.sources.base import Reading, Source
from verger.monitor.sources.business import BusinessSource
from verger.monitor.sources.host import HostSource
from verger.monitor.sources.postgres import PostgresSource
from verger.monitor.sources.probe import ProbeSource
from verger.monitor.sources.redis import RedisSource, _command
from verger.monitor.sources.scrape import ScrapeSource
from verger.monitor.store import MetricStore

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
METRICS = """\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",job="inner"} 1027
http_requests_total{code="500"} 3
# TYPE queue_depth gauge
queue_depth 234
"""


@asynccontextmanager
async def _server(state: dict[str, object]) -> AsyncIterator[str]:
    """A local app answering /metrics and /health as ``state`` says."""

    async def metrics(request: web.Request) -> web.Response:
        if state.get("broken"):
            return web.Response(status=500, text="boom")
        return web.Response(text=METRICS)

    async def health(request: web.Request) -> web.Response:
        await asyncio.sleep(float(state.get("delay", 0.0)))  # type: ignore[arg-type]
        status = int(state.get("status", 200))  # type: ignore[call-overload]
        return web.Response(status=status, text="ok ready")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _by_name(readings: list[Reading], name: str) -> list[Reading]:
    return [r for r in readings if r.name == name]


@run_async
async def test_scrape_reads_samples_with_target_labels() -> None:
    """A scrape gives each sample job and instance, keeping a clashing job as exported_job."""
    async with _server({}) as url:
        source = ScrapeSource(f"{url}/metrics", "app", 10, 2)
        readings = await source.collect(T0)
        await source.close()
    requests = _by_name(readings, "http_requests_total")
    assert {r.labels["code"]: r.value for r in requests} == {"200": 1027, "500": 3}
    assert requests[0].labels["job"] == "app"
    assert requests[0].labels["exported_job"] == "inner"
    assert _by_name(readings, "up")[0].value == 1.0
    assert _by_name(readings, "queue_depth")[0].value == 234


@run_async
async def test_a_failed_scrape_is_a_target_down_never_zero_traffic(
    store: MetricStore, sink: RecordingSink
) -> None:
    """A scrape answering 500 writes up 0 and no app samples, and target_down fires."""
    state: dict[str, object] = {}
    rule = Rule("target_down", "up == 0", "high", for_=30)
    async with _server(state) as url:
        source = ScrapeSource(f"{url}/metrics", "app", 10, 2)
        loop = MonitorLoop([source], store, RuleEngine([rule], store, sink), 10)
        for i in range(3):
            await loop.tick(T0 + 10 * i)
        state["broken"] = True
        for i in range(3, 8):
            await loop.tick(T0 + 10 * i)
        await source.close()
    (up,) = store.select("up", [], T0, T0 + 100, rollup=False)
    assert up.values == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for series in store.select("http_requests_total", [], T0, T0 + 100, rollup=False):
        assert series.times == [T0, T0 + 10, T0 + 20]
    assert sink.transitions("target_down") == ["pending", "firing"]
    assert sink.states("target_down")[0][0] == T0 + 30


@run_async
async def test_http_probe_conditions_and_a_closed_tcp_port() -> None:
    """A probe passes only if status, body and latency hold; a closed port fails."""
    state: dict[str, object] = {}
    async with _server(state) as url:
        probe = Probe(
            name="api",
            http=f"GET {url}/health",
            status=200,
            contains="ready",
            max_latency=0.5,
        )
        source = ProbeSource(probe)
        assert _by_name(await source.collect(T0), "verger_probe_success")[0].value == 1
        state["status"] = 503
        assert _by_name(await source.collect(T0), "verger_probe_success")[0].value == 0
        state.update(status=200, delay=0.7)
        assert _by_name(await source.collect(T0), "verger_probe_success")[0].value == 0
        await source.close()
    closed = ProbeSource(Probe(name="db", tcp=url.removeprefix("http://"), timeout=1))
    readings = await closed.collect(T0)
    assert _by_name(readings, "verger_probe_success")[0].value == 0
    await closed.close()


@run_async
async def test_host_readings(tmp_path: Path) -> None:
    """The host source reads CPU (from its second collection), memory, disk and load."""
    source = HostSource(10, ["/", str(tmp_path)])
    first = await source.collect(T0)
    assert _by_name(first, "verger_host_cpu_ratio") == []
    await asyncio.sleep(0.05)
    second = await source.collect(T0 + 10)
    (cpu,) = _by_name(second, "verger_host_cpu_ratio")
    assert 0 <= cpu.value <= 1
    (memory,) = _by_name(second, "verger_host_memory_used_ratio")
    assert 0 < memory.value < 1
    assert len(_by_name(second, "verger_host_disk_free_ratio")) == 2


@run_async
async def test_postgres_connections_and_cache() -> None:
    """PostgreSQL gives connections under the maximum and a cache hit ratio."""
    source = PostgresSource("production", PG, 30)
    readings = await source.collect(T0)
    connections = _by_name(readings, "verger_postgres_connections")[0].value
    maximum = _by_name(readings, "verger_postgres_max_connections")[0].value
    assert 1 <= connections < maximum
    assert 0 <= _by_name(readings, "verger_postgres_cache_hit_ratio")[0].value <= 1
    assert _by_name(readings, "up")[0].value == 1
    down = PostgresSource("production", "postgresql://postgres@127.0.0.1:1/x", 30)
    assert [r.value for r in await down.collect(T0)] == [0.0]


@run_async
async def test_redis_memory_and_queue_lengths() -> None:
    """Redis gives its memory and the length of each configured queue key."""
    key = f"verger-test-queue-{uuid.uuid4().hex[:8]}"
    reader, writer = await asyncio.open_connection("127.0.0.1", 6379)
    await _command(reader, writer, b"RPUSH", key.encode(), b"a", b"b", b"c")
    try:
        source = RedisSource("redis://127.0.0.1:6379/0", [key, f"{key}-none"], 30)
        readings = await source.collect(T0)
    finally:
        await _command(reader, writer, b"DEL", key.encode())
        writer.close()
        await writer.wait_closed()
    queues = {
        r.labels["key"]: r.value
        for r in _by_name(readings, "verger_redis_queue_length")
    }
    assert queues == {key: 3, f"{key}-none": 0}
    assert _by_name(readings, "verger_redis_memory_bytes")[0].value > 0


@run_async
async def test_business_query_and_a_broken_one() -> None:
    """A business query's number becomes a metric; a broken query is up 0, not 0."""
    good = BusinessSource("messages_sent", "select 42", PG, 60)
    assert [(r.name, r.value) for r in await good.collect(T0)] == [
        ("verger_business_messages_sent", 42.0),
        ("up", 1.0),
    ]
    bad = BusinessSource("delivery_rate", "select * from no_such_table", PG, 60)
    assert [(r.name, r.value) for r in await bad.collect(T0)] == [("up", 0.0)]


class _Broken(Source):
    kind = "broken"

    async def collect(self, now: float) -> list[Reading]:
        raise RuntimeError("a bug in a source")


class _Steady(Source):
    kind = "steady"

    async def collect(self, now: float) -> list[Reading]:
        return [Reading("steady", {}, 1.0)]


@run_async
async def test_a_failing_source_does_not_stop_the_others(
    store: MetricStore, sink: RecordingSink
) -> None:
    """A source that raises is skipped; other sources are stored and rules evaluated."""
    loop = MonitorLoop(
        [_Broken("broken", 10), _Steady("steady", 10)],
        store,
        RuleEngine([Rule("steady_seen", "steady == 1", "medium")], store, sink),
        10,
    )
    assert await loop.tick(T0) == 1
    assert sink.firing(T0) == {"steady_seen"}


@run_async
async def test_a_silent_heartbeat_becomes_late(tmp_path: Path) -> None:
    """A heartbeat is late once silent past every + grace, and on time after a beat."""
    from verger.config.sources import Heartbeat
    from verger.monitor.sources.heartbeat import HeartbeatSource
    from verger.state import open_store

    state = open_store(".verger/state.db", tmp_path)
    source = HeartbeatSource(state, {"nightly": Heartbeat(every=60, grace=10)}, 10)

    def late(readings: list[Reading]) -> float:
        return _by_name(readings, "verger_heartbeat_late")[0].value

    assert late(await source.collect(T0)) == 0
    assert late(await source.collect(T0 + 71)) == 1
    state.beat("nightly", at=T0 + 80)
    readings = await source.collect(T0 + 90)
    assert late(readings) == 0
    assert _by_name(readings, "verger_heartbeat_age_seconds")[0].value == 10
    state.close()


def _certificate(folder: Path, days: int) -> tuple[Path, Path, Path]:
    """A CA and a localhost certificate from it that expires in ``days``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA")).issuer_name(name("test CA"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@run_async
async def test_probe_reads_the_certificate_days_left(tmp_path: Path) -> None:
    """A TLS probe reports the certificate's days left and flags under tls_days."""
    import ssl

    ca, cert, key = _certificate(tmp_path, days=10)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        probe = Probe(
            name="api", http=f"GET https://127.0.0.1:{port}/", tls_days=14,
            ca_file=str(ca),
        )  # fmt: skip
        source = ProbeSource(probe)
        readings = await source.collect(T0)
        await source.close()
    finally:
        await runner.cleanup()
    days = _by_name(readings, "verger_probe_tls_days_left")[0].value
    assert 9 < days <= 10
    assert _by_name(readings, "verger_probe_tls_ok")[0].value == 0
    assert _by_name(readings, "verger_probe_success")[0].value == 1


@run_async
async def test_a_broken_store_does_not_stop_the_loop(tmp_path: Path) -> None:
    """With its store unusable the loop still ticks and hands the sink every update."""
    broken = MetricStore(tmp_path / "metrics.db")
    sink = RecordingSink()
    engine = RuleEngine([Rule("steady_seen", "steady == 1", "medium")], broken, sink)
    loop = MonitorLoop([_Steady("steady", 10)], broken, engine, 10)
    broken.close()
    assert await loop.tick(T0) == 0
    assert await loop.tick(T0 + 10) == 0
    assert [(now, alerts) for now, alerts in sink.updates] == [(T0, []), (T0 + 10, [])]
