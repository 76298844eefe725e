"""The koinonia-sms example app, run as a real process against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import httpx
import psycopg
from koinonia_helpers import (
    EXAMPLE,
    POSTGRES,
    App,
    Launch,
    clean_env,
    copy_example,
    free_port,
    listening,
)

from verger.config import load_config


def run_smoke(
    base_url: str, version: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        BASE_URL=base_url, **({"VERGER_VERSION": version} if version else {})
    )
    return subprocess.run(
        [sys.executable, "smoke.py"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def metric(app: App, series: str) -> float:
    """The value of one unlabelled series on the app's /metrics."""
    for line in app.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    raise AssertionError(f"{series} is not on /metrics")


def seed(app: App) -> tuple[int, list[str]]:
    """Create a church with two members; return its id and their phones."""
    church = app.post("/churches", {"name": "St Lydia"}).json()
    phones = ["+15550000001", "+15550000002"]
    for n, phone in enumerate(phones):
        member = {"name": f"Member {n}", "phone": phone, "email": f"m{n}@example.org"}
        assert app.post(f"/churches/{church['id']}/members", member).status_code == 201
    return church["id"], phones


def test_api_round_trip(launch: Launch, database_url: str) -> None:
    """A church's message reaches every member and the sandbox records each SMS."""
    app = launch({"DATABASE_URL": database_url, "VERGER_VERSION": "v1"})
    app.wait_healthy()

    church_id, phones = seed(app)
    church = app.get(f"/churches/{church_id}").json()
    assert church["name"] == "St Lydia" and church["members"] == 2
    members = app.get(f"/churches/{church_id}/members").json()["members"]
    assert [m["phone"] for m in members] == phones

    sent = app.post(f"/churches/{church_id}/messages", {"body": "Choir at 7"})
    assert sent.status_code == 201 and sent.json()["delivered"] == 2
    message = app.get(f"/messages/{sent.json()['id']}").json()
    assert [d["phone"] for d in message["deliveries"]] == phones
    assert {d["status"] for d in message["deliveries"]} == {"sent"}

    outbox = app.get("/sandbox/outbox").json()["messages"]
    assert sorted(m["phone"] for m in outbox) == phones
    assert {m["body"] for m in outbox} == {"Choir at 7"}
    only = app.get(f"/sandbox/outbox?to={phones[0]}").json()["messages"]
    assert [m["phone"] for m in only] == [phones[0]]


def test_bad_input_is_refused_with_json_errors(launch: Launch) -> None:
    """Malformed or missing input gets a 4xx answer with a JSON error, never a 500."""
    app = launch()
    app.wait_healthy()
    church_id, phones = seed(app)
    members = f"/churches/{church_id}/members"

    refusals = [
        (httpx.post(app.url + "/churches", content=b"not json"), 400),
        (app.post("/churches", ["a list"]), 400),
        (app.post("/churches", {"name": "  "}), 400),
        (app.post(members, {"name": "Ann", "phone": "call me"}), 400),
        (app.post(members, {"name": "Ann", "phone": "+15551", "email": "x"}), 400),
        (app.post(members, {"name": "Ann", "phone": phones[0]}), 409),
        (app.post(f"/churches/{church_id}/messages", {"body": "x" * 1601}), 400),
        (
            app.post("/churches/999/members", {"name": "Ann", "phone": "+15557654321"}),
            404,
        ),
        (app.get("/churches/999"), 404),
        (app.get("/messages/999"), 404),
        (app.get("/sandbox/outbox?limit=0"), 400),
        (app.get("/nowhere"), 404),
        (httpx.delete(app.url + "/churches"), 405),
    ]
    for response, status in refusals:
        assert response.status_code == status, response.text
        assert response.json()["error"]
        assert response.headers["X-App-Version"] == "dev"


def test_version_comes_from_environment_then_file_then_dev(
    launch: Launch, app_folder: Path
) -> None:
    """VERGER_VERSION wins over the VERSION file, which wins over "dev"."""
    default = launch()
    default.wait_healthy()
    assert default.get("/health").json() == {"status": "ok", "version": "dev"}

    (app_folder / "VERSION").write_text("v2-from-file\n")
    from_file = launch()
    from_file.wait_healthy()
    assert from_file.get("/health").json()["version"] == "v2-from-file"

    from_env = launch({"VERGER_VERSION": "v3-from-env"})
    from_env.wait_healthy()
    answer = from_env.post("/churches", {"name": "Grace"})
    assert answer.headers["X-App-Version"] == "v3-from-env"
    assert from_env.get("/health").json()["version"] == "v3-from-env"


def test_metrics_count_requests_by_route_and_messages_sent(launch: Launch) -> None:
    """/metrics serves request counts, latency and messages sent as Prometheus text."""
    app = launch({"VERGER_VERSION": "v4"})
    app.wait_healthy()
    church_id, _ = seed(app)
    app.post(f"/churches/{church_id}/messages", {"body": "Potluck Sunday"})
    app.get("/churches/999")

    metrics = app.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain; version=")
    text = metrics.text
    created = 'route="/churches/{id}/members",status="201"'
    assert f'koinonia_http_requests_total{{method="POST",{created}}} 2.0' in text
    assert 'method="GET",route="/churches/{id}",status="404"} 1.0' in text
    assert "koinonia_messages_sent_total 1.0" in text
    assert 'koinonia_sms_deliveries_total{provider="sandbox"} 2.0' in text
    assert (
        'koinonia_http_request_duration_seconds_bucket{le="+Inf",route="/churches"}'
        in text
    )
    assert 'koinonia_build_info{version="v4"} 1.0' in text


def test_health_is_503_until_the_database_can_be_reached(launch: Launch) -> None:
    """With its database missing the app answers 503, then 200 once it exists."""
    name = f"koinonia_late_{free_port()}"
    app = launch({"DATABASE_URL": f"{POSTGRES}/{name}"})
    app.wait_listening()
    try:
        health = app.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert app.post("/churches", {"name": "Early"}).status_code == 503

        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        app.wait_healthy(timeout=10)
        assert app.post("/churches", {"name": "Late"}).status_code == 201
    finally:
        app.stop()
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_crash_at_start_fault_exits_1_before_listening(
    launch: Launch, app_folder: Path
) -> None:
    """FAULT crash-at-start makes the process exit 1 with a message, never listening."""
    (app_folder / "FAULT").write_text("crash-at-start\n")
    app = launch()
    assert app.proc.wait(10) == 1
    assert "crash-at-start" in app.output()
    assert not listening(app.port)


def test_unknown_fault_is_refused_at_start(launch: Launch, app_folder: Path) -> None:
    """A FAULT file naming no known fault stops the app at start, listing the faults."""
    (app_folder / "FAULT").write_text("explode")
    app = launch()
    assert app.proc.wait(10) == 1
    assert "errors-when-live" in app.output()


def test_errors_when_live_fault_passes_health_and_smoke_but_fails_users(
    launch: Launch, app_folder: Path
) -> None:
    """FAULT errors-when-live passes /health and smoke tests but fails user requests."""
    (app_folder / "FAULT").write_text("errors-when-live")
    app = launch({"VERGER_VERSION": "bad"})
    app.wait_healthy()

    smoke = run_smoke(app.url, "bad")
    assert smoke.returncode == 0, smoke.stderr
    assert app.get("/metrics").status_code == 200
    for response in (app.post("/churches", {"name": "Users"}), app.get("/churches/1")):
        assert response.status_code == 500
        assert response.json()["error"] == "simulated fault: errors-when-live"
        assert response.headers["X-App-Version"] == "bad"


def test_fault_file_written_while_serving_switches_errors_on_and_off(
    launch: Launch, app_folder: Path
) -> None:
    """A FAULT file written into a running app's folder starts its 500s within about
    a second, and removing it stops them; crash-at-start written then changes nothing."""
    app = launch()
    app.wait_healthy()
    assert app.post("/churches", {"name": "Before"}).status_code == 201

    def statuses_after(seconds: float) -> int:
        time.sleep(seconds)
        return app.get("/churches/1").status_code

    (app_folder / "FAULT").write_text("errors-when-live\n")
    assert statuses_after(1.2) == 500
    (app_folder / "FAULT").write_text("crash-at-start\n")
    assert statuses_after(1.2) == 500
    (app_folder / "FAULT").unlink()
    assert statuses_after(1.2) == 200
    assert app.proc.poll() is None


def test_slow_when_live_fault_delays_user_requests_only(
    launch: Launch, app_folder: Path
) -> None:
    """FAULT slow-when-live adds 1.5 s to user requests, not to health or smoke."""
    (app_folder / "FAULT").write_text("slow-when-live")
    app = launch()
    app.wait_healthy()

    started = time.monotonic()
    assert app.get("/health").status_code == 200
    smoke_header = {"X-Smoke-Test": "1"}
    assert (
        app.post("/churches", {"name": "Quick"}, headers=smoke_header).status_code
        == 201
    )
    assert time.monotonic() - started < 1.0

    started = time.monotonic()
    assert app.post("/churches", {"name": "Slow"}).status_code == 201
    assert time.monotonic() - started >= 1.5


def test_sigterm_finishes_requests_in_flight_then_exits_0(
    launch: Launch, app_folder: Path
) -> None:
    """On SIGTERM the app stops accepting, finishes requests in flight and exits 0."""
    (app_folder / "FAULT").write_text("slow-when-live")
    app = launch()
    app.wait_healthy()
    idle = httpx.Client(base_url=app.url, timeout=10)
    assert idle.get("/health").status_code == 200

    answers: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: answers.append(app.post("/churches", {"name": "In flight"}))
    )
    slow.start()
    time.sleep(0.3)
    app.proc.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 1.0
    while listening(app.port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not listening(app.port), "still accepting connections after SIGTERM"
    assert slow.is_alive(), "the slow request should still be in flight"

    slow.join(10)
    assert [a.status_code for a in answers] == [201]
    assert app.proc.wait(10) == 0
    assert "stopped" in app.output()
    idle.close()


def test_sigterm_under_traffic_cuts_no_request_short(
    launch: Launch, traffic_module: ModuleType
) -> None:
    """Under steady keep-alive traffic, SIGTERM leaves no request half answered."""
    app = launch()
    app.wait_healthy()
    traffic = traffic_module.Traffic(app.url, connections=6, rate=0).start()
    time.sleep(0.8)
    assert app.stop() == 0
    time.sleep(0.3)
    summary = traffic.stop()

    # After the stop only "connection refused" may fail: a reset or an empty
    # answer on a kept-alive connection would mean a request was cut short.
    assert summary["sent"] - summary["failed"] > 100, summary
    assert set(summary["failures"]) == {"refused"}, summary


def test_two_releases_share_one_database_side_by_side(
    launch: Launch, database_url: str, tmp_path: Path
) -> None:
    """Blue and green started at once on one empty database both serve the same data."""
    blue = launch({"DATABASE_URL": database_url, "VERGER_VERSION": "blue-v1"})
    green_folder = copy_example(tmp_path / "green")
    green = launch(
        {"DATABASE_URL": database_url, "VERGER_VERSION": "green-v2"}, green_folder
    )
    blue.wait_healthy()
    green.wait_healthy()

    church = blue.post("/churches", {"name": "Shared"}).json()
    member = {"name": "Both", "phone": "+15552220000"}
    added = green.post(f"/churches/{church['id']}/members", member)
    assert added.status_code == 201 and added.headers["X-App-Version"] == "green-v2"
    sent = blue.post(f"/churches/{church['id']}/messages", {"body": "Hello from blue"})
    assert sent.json()["delivered"] == 1

    message = green.get(f"/messages/{sent.json()['id']}").json()
    assert message["deliveries"][0]["phone"] == "+15552220000"
    assert run_smoke(blue.url, "blue-v1").returncode == 0
    assert run_smoke(green.url, "green-v2").returncode == 0


def test_smoke_fails_with_one_line_when_nothing_listens() -> None:
    """smoke.py exits 1 with a single line naming the failed step."""
    result = run_smoke(f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("smoke: GET /health:")


def test_smoke_fails_when_another_version_answers(launch: Launch) -> None:
    """smoke.py fails when the answers come from a version other than VERGER_VERSION."""
    app = launch({"VERGER_VERSION": "v1"})
    app.wait_healthy()
    result = run_smoke(app.url, "v2")
    assert result.returncode == 1 and "versions {'v1'}" in result.stderr


def test_traffic_counts_requests_and_versions(
    launch: Launch, traffic_module: ModuleType
) -> None:
    """Traffic against a healthy app sends steadily, fails none and sees one version."""
    app = launch({"VERGER_VERSION": "v5"})
    app.wait_healthy()

    traffic = traffic_module.Traffic(app.url, connections=3, rate=150).start()
    time.sleep(1.5)
    summary = traffic.stop()

    # 150 requests/s for 1.5 s, with room for a busy machine but not a burst.
    assert 60 <= summary["sent"] <= 300, summary
    assert summary["failed"] == 0 and summary["errors"] == [], summary
    assert summary["versions"] == {"v5": summary["sent"]}
    assert set(summary["statuses"]) <= {"200", "201"}, summary
    assert summary["latency_ms"]["p95"] < 1000, summary
    assert metric(app, "koinonia_messages_sent_total") > 0


def test_traffic_counts_connection_errors_as_failures(
    traffic_module: ModuleType,
) -> None:
    """Every request to a port where nothing listens fails and is not retried."""
    traffic = traffic_module.Traffic(
        f"http://127.0.0.1:{free_port()}", connections=2, rate=40, duration=0.5
    )
    summary = traffic.start().wait()
    assert summary["sent"] >= 10
    assert summary["failed"] == summary["sent"] == summary["failures"]["refused"]
    assert "ConnectionRefusedError" in summary["errors"][0]


def test_traffic_counts_5xx_and_a_stopped_app_as_failures(
    launch: Launch, app_folder: Path, traffic_module: ModuleType
) -> None:
    """5xx answers count as failures, and so do requests after the app went away."""
    (app_folder / "FAULT").write_text("errors-when-live")
    app = launch()
    app.wait_healthy()

    traffic = traffic_module.Traffic(app.url, connections=2, rate=40).start()
    time.sleep(0.5)
    assert app.stop() == 0
    time.sleep(0.5)
    summary = traffic.stop()

    assert summary["failures"]["5xx"] >= 5, summary
    assert summary["failures"]["refused"] >= 5, summary
    assert summary["failed"] == summary["sent"]


def test_traffic_cli_prints_a_json_summary() -> None:
    """The traffic CLI prints its summary as JSON and exits 1 when requests failed."""
    result = subprocess.run(
        [
            *(sys.executable, "traffic.py", f"http://127.0.0.1:{free_port()}"),
            *("--connections", "1", "--rate", "20", "--duration", "0.3"),
        ],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["connections"] == 1 and summary["failed"] == summary["sent"] > 0


def test_verger_yml_is_valid_and_its_build_runs(app_folder: Path) -> None:
    """The example's verger.yml loads and its build command succeeds in a copy."""
    config = load_config(EXAMPLE / "verger.yml").config
    assert config.order() == ["staging", "production"]
    assert config.watch.duration == 10 and config.keep_previous == 30

    assert config.build is not None
    build = subprocess.run(
        config.build.replace("python", sys.executable, 1),
        shell=True,
        cwd=app_folder,
        capture_output=True,
        timeout=60,
    )
    assert build.returncode == 0, build.stderr
