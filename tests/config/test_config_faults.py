"""verger.yml faults: each is refused with file:line, the key and what is accepted."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from verger.config import load_config, parse_duration
from verger.config.types import parse_rate
from verger.errors import ConfigError

VALID = """\
app: shop
start: node server.js
environments:
  staging:
    listen: 8081
  production:
    listen: 8080
    requires: staging
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "verger.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(folder: Path, text: str) -> list[str]:
    """Load ``text`` expecting failure; the problem lines, one or many."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(folder, text))
    error = caught.value
    return error.problems or [error.message.split(": ", 1)[1]]


def test_valid_config_loads(tmp_path: Path) -> None:
    """A minimal valid config loads, with defaults and release order filled in."""
    loaded = load_config(write(tmp_path, VALID))
    assert loaded.config.health.path == "/health"
    assert loaded.config.environments["staging"].listen == "127.0.0.1:8081"
    assert loaded.config.order() == ["staging", "production"]
    assert loaded.root == tmp_path.resolve()


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    """Broken YAML is reported with the file name and the line of the fault."""
    text = VALID + "  broken: [unclosed\n    listen: 1\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert "verger.yml:10" in caught.value.message
    assert "not valid YAML" in caught.value.message


def test_duplicate_key_is_malformed(tmp_path: Path) -> None:
    """A key given twice is refused rather than one value silently winning."""
    with pytest.raises(ConfigError, match=r"verger\.yml:2: .*duplicate key"):
        load_config(write(tmp_path, "app: a\napp: b\n" + VALID.split("\n", 1)[1]))


def test_requires_naming_itself(tmp_path: Path) -> None:
    """An environment that requires itself is refused at its requires: line."""
    text = VALID.replace("requires: staging", "requires: production")
    [problem] = problems(tmp_path, text)
    assert problem == "verger.yml:8: environments.production.requires: names itself"


def test_requires_unknown_environment_suggests_nearest(tmp_path: Path) -> None:
    """requires: naming no environment lists the known ones and the nearest."""
    text = VALID.replace("requires: staging", "requires: stagin")
    [problem] = problems(tmp_path, text)
    assert problem.startswith("verger.yml:8: environments.production.requires:")
    assert "known: production, staging" in problem
    assert "did you mean 'staging'?" in problem


def test_requires_cycle(tmp_path: Path) -> None:
    """Environments that require each other in a circle are refused with the chain."""
    text = VALID.replace(
        "    listen: 8081\n", "    listen: 8081\n    requires: production\n"
    )
    [problem] = problems(tmp_path, text)
    assert "verger.yml:6: environments.staging.requires" in problem
    assert "staging -> production -> staging" in problem


def test_two_environments_on_one_port(tmp_path: Path) -> None:
    """Two environments listening on one port are refused at the second one."""
    text = VALID.replace("listen: 8080", "listen: 0.0.0.0:8081")
    [problem] = problems(tmp_path, text)
    assert problem == (
        "verger.yml:7: environments.production.listen: uses port 8081, "
        "already used by environments.staging"
    )


def test_start_timeout_shorter_than_healthy_after_times_interval(
    tmp_path: Path,
) -> None:
    """A start timeout no release could meet is refused, with the arithmetic."""
    text = VALID + "health:\n  interval: 5s\n  healthy_after: 3\n  start_timeout: 10s\n"
    [problem] = problems(tmp_path, text)
    assert problem.startswith("verger.yml:12: health.start_timeout: is 10s")
    assert "(3 x 5s)" in problem


def test_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    """A misspelt key is an error naming the key it most likely meant."""
    text = VALID + "helth:\n  path: /up\n"
    [problem] = problems(tmp_path, text)
    assert problem == "verger.yml:9: helth: unknown key; did you mean 'health'?"


def test_unknown_key_without_near_match_lists_accepted(tmp_path: Path) -> None:
    """A key unlike any accepted one lists the keys accepted at that place."""
    text = VALID.replace(
        "    requires: staging\n", "    requires: staging\n    zz: 1\n"
    )
    [problem] = problems(tmp_path, text)
    assert problem.startswith("verger.yml:9: environments.production.zz: unknown key")
    assert "accepted: listen, env, router" in problem


def test_several_problems_at_once_sorted_by_line(tmp_path: Path) -> None:
    """Every problem is listed in one error, in the order of the file's lines."""
    text = """\
    app: Shop
    start: node server.js
    watch:
      max_error_rate: 2
      duration: 5 minutes
    environments:
      staging:
        listen: 99999
        routr: haproxy
    """
    found = problems(tmp_path, text)
    lines = [int(problem.split(":")[1]) for problem in found]
    assert lines == [1, 4, 5, 8, 9]
    assert "got '5 minutes'" in found[2]
    assert "did you mean 'router'?" in found[4]


def test_missing_required_key(tmp_path: Path) -> None:
    """A missing start: is named as a required key."""
    [problem] = problems(tmp_path, VALID.replace("start: node server.js\n", ""))
    assert problem == "verger.yml:1: start: required key is missing"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("250ms", 0.25),
        ("1h", 3600.0),
        ("7d", 604800.0),
        (45, 45.0),
        (1.5, 1.5),
        ("90", 90.0),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    """Durations take units ms, s, m, h, d, w or a bare number of seconds."""
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["5 minutes", "-1s", "1y", True, None])
def test_bad_durations(written: object) -> None:
    """A duration in any other form is refused with an example of the right one."""
    with pytest.raises(ValueError, match="such as 30s"):
        parse_duration(written)


@pytest.mark.parametrize(
    ("written", "fraction"),
    [("1%", 0.01), ("0.5%", 0.005), (0.01, 0.01), ("0.01", 0.01), (0, 0.0), (1, 1.0)],
)
def test_rates(written: object, fraction: float) -> None:
    """Rates are a percentage or a bare fraction between 0 and 1."""
    assert parse_rate(written) == pytest.approx(fraction)


@pytest.mark.parametrize("written", ["150%", 2, "-1%", "lots", True])
def test_bad_rates(written: object) -> None:
    """A rate outside 0%..100% or not a number is refused."""
    with pytest.raises(ValueError, match="rate"):
        parse_rate(written)


def test_durations_and_rates_in_a_file(tmp_path: Path) -> None:
    """Durations and rates in the file arrive as seconds and fractions."""
    text = VALID + "watch:\n  duration: 5m\n  max_error_rate: 1%\n  max_p95: 250ms\n"
    watch = load_config(write(tmp_path, text)).config.watch
    assert (watch.duration, watch.max_error_rate, watch.max_p95) == (300.0, 0.01, 0.25)


def test_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """${NAME} takes the environment variable's value, also for numbers and ports."""
    monkeypatch.setenv("VERGER_TEST_PORT", "9123")
    monkeypatch.setenv("VERGER_TEST_DB", "postgresql://app@127.0.0.1/shop")
    monkeypatch.setenv("VERGER_TEST_RATE", "2%")
    text = VALID.replace("listen: 8081", "listen: ${VERGER_TEST_PORT}")
    text += "    env:\n      DATABASE_URL: ${VERGER_TEST_DB}\n"
    text += "watch:\n  max_error_rate: ${VERGER_TEST_RATE}\n"
    config = load_config(write(tmp_path, text)).config
    assert config.environments["staging"].listen == "127.0.0.1:9123"
    assert config.environments["production"].env == {
        "DATABASE_URL": "postgresql://app@127.0.0.1/shop"
    }
    assert config.watch.max_error_rate == pytest.approx(0.02)


def test_unset_env_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value left as ${NAME} because NAME is unset says so in the error."""
    monkeypatch.delenv("VERGER_TEST_UNSET", raising=False)
    text = VALID.replace("listen: 8081", "listen: ${VERGER_TEST_UNSET}")
    [problem] = problems(tmp_path, text)
    assert problem.startswith("verger.yml:5: environments.staging.listen:")
    assert "environment variable VERGER_TEST_UNSET is not set" in problem


def test_config_path_may_be_a_folder(tmp_path: Path) -> None:
    """-c FOLDER reads FOLDER/verger.yml."""
    write(tmp_path, VALID)
    assert load_config(tmp_path).path == (tmp_path / "verger.yml").resolve()


def test_config_path_folder_without_file(tmp_path: Path) -> None:
    """-c FOLDER without a verger.yml names the path tried and suggests init."""
    with pytest.raises(ConfigError, match="no config file at") as caught:
        load_config(tmp_path)
    assert "verger init" in caught.value.hint


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    """An empty file or a list at the top is refused with a pointer to init."""
    with pytest.raises(ConfigError, match="is empty"):
        load_config(write(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match=r"verger\.yml:1: expected a mapping"):
        load_config(write(tmp_path, "- app\n"))


def test_swapped_letters_suggest_the_swapped_key(tmp_path: Path) -> None:
    """A key with two letters swapped suggests that key over a merely similar one."""
    text = VALID.replace("start:", "strat:")
    found = problems(tmp_path, text)
    assert "verger.yml:2: strat: unknown key; did you mean 'start'?" in found


def test_every_contradiction_is_reported_in_one_run(tmp_path: Path) -> None:
    """Unknown and self requires, a shared port and a cycle are all listed at once."""
    text = """\
    app: shop
    start: node server.js
    environments:
      staging:
        listen: 8081
        requires: qa
      production:
        listen: 8081
        requires: production
      a:
        listen: 9001
        requires: b
      b:
        listen: 9002
        requires: a
    """
    found = problems(tmp_path, text)
    assert found[0].startswith(
        "verger.yml:6: environments.staging.requires: names 'qa'"
    )
    assert found[1:] == [
        "verger.yml:8: environments.production.listen: uses port 8081, "
        "already used by environments.staging",
        "verger.yml:9: environments.production.requires: names itself",
        "verger.yml:12: environments.a.requires: forms a cycle: a -> b -> a",
    ]


def test_empty_smoke_command_is_refused(tmp_path: Path) -> None:
    """A run: smoke test with an empty command is refused at its line."""
    text = VALID + 'smoke:\n  - http: GET /health\n  - run: ""\n'
    [problem] = problems(tmp_path, text)
    assert problem == (
        "verger.yml:11: smoke.1.run: is empty; expected a command such as ./smoke.sh"
    )


@pytest.mark.parametrize("written", ["0s", "500ms"])
def test_watch_window_shorter_than_a_second_is_refused(
    tmp_path: Path, written: str
) -> None:
    """watch.duration below 1s is refused: such a window cannot judge a release."""
    text = VALID + f"watch:\n  duration: {written}\n"
    [problem] = problems(tmp_path, text)
    assert problem.startswith(
        f"verger.yml:10: watch.duration: expected at least 1s, got {written}"
    )


def test_watch_interval_of_zero_is_refused(tmp_path: Path) -> None:
    """watch.interval 0s is refused rather than reading the counters without pause."""
    [problem] = problems(tmp_path, VALID + "watch:\n  interval: 0s\n")
    assert problem == "verger.yml:10: watch.interval: expected more than 0s, such as 1s"


def test_type_errors_say_what_was_expected_and_what_was_got(tmp_path: Path) -> None:
    """Out-of-range numbers, unknown choices and wrong types read as verger's sentences."""
    path = tmp_path / "verger.yml"
    path.write_text(
        "app: shop\nstart: ./run\nhealth: {healthy_after: 0}\n"
        "environments:\n  staging: {listen: 8081, approval: sometimes}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    assert "health.healthy_after: expected a number at least 1, got 0" in problems
    assert (
        "environments.staging.approval: expected one of auto or manual, got "
        "'sometimes'" in problems
    )
    assert "Input should" not in problems
