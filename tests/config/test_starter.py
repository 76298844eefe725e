"""verger init: a starter verger.yml that guesses the app's commands and validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verger.config import load_config
from verger.config.starter import app_name, starter_text, write_starter
from verger.errors import VergerError


def app_folder(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    folder.mkdir()
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text, encoding="utf-8")
    return folder


def test_node_app_with_build_script(tmp_path: Path) -> None:
    """A Node app with a build script builds with npm ci and starts its start script."""
    package = {
        "main": "index.js",
        "scripts": {"build": "tsc", "start": "node dist/a.js"},
    }
    folder = app_folder(
        tmp_path,
        "Shop Front",
        {"package.json": json.dumps(package), "package-lock.json": "{}"},
    )
    config = load_config(write_starter(folder)).config
    assert config.app == "shop-front"
    assert config.build == "npm ci && npm run build"
    assert config.start == "node dist/a.js"


def test_node_app_without_scripts_starts_main(tmp_path: Path) -> None:
    """A Node app without scripts installs its packages and runs its main file."""
    folder = app_folder(tmp_path, "api", {"package.json": '{"main": "app.js"}'})
    config = load_config(write_starter(folder)).config
    assert (config.build, config.start) == ("npm install", "node app.js")


def test_node_start_script_that_is_not_plain_node(tmp_path: Path) -> None:
    """A start script other than 'node FILE' runs through npm start."""
    package = {"scripts": {"start": "next start -p $PORT"}}
    folder = app_folder(tmp_path, "web", {"package.json": json.dumps(package)})
    assert load_config(write_starter(folder)).config.start == "npm start"


def test_python_app(tmp_path: Path) -> None:
    """A Python app with requirements.txt gets a venv build and runs its app.py."""
    folder = app_folder(tmp_path, "9_Billing", {"requirements.txt": "", "app.py": ""})
    config = load_config(write_starter(folder)).config
    assert config.app == "billing"
    assert config.build is not None
    assert "pip install -r requirements.txt" in config.build
    assert config.start == ".venv/bin/python app.py"


def test_procfile_web_line_wins(tmp_path: Path) -> None:
    """The Procfile's web: line is the start command, quoted when YAML needs it."""
    procfile = "release: ./migrate\nweb: gunicorn app:wsgi --bind 127.0.0.1:$PORT\n"
    folder = app_folder(
        tmp_path, "site", {"pyproject.toml": "[project]\n", "Procfile": procfile}
    )
    config = load_config(write_starter(folder)).config
    assert config.start == "gunicorn app:wsgi --bind 127.0.0.1:$PORT"
    assert config.build == "python3 -m venv .venv && .venv/bin/pip install ."


def test_go_and_unknown_apps(tmp_path: Path) -> None:
    """A Go app builds a binary; an unknown app gets a placeholder and a comment."""
    go = app_folder(tmp_path, "svc", {"go.mod": "module svc\n"})
    assert load_config(write_starter(go)).config.start == "./bin/app"

    bare = app_folder(tmp_path, "bare", {})
    text = starter_text(bare)
    assert "could not tell how this app starts" in text
    assert load_config(write_starter(bare)).config.build is None


def test_every_key_is_commented(tmp_path: Path) -> None:
    """Every key in the starter is explained, with its default, on or above its line."""
    folder = app_folder(tmp_path, "x", {"package.json": "{}"})
    lines = starter_text(folder).splitlines()
    keys: set[str] = set()
    explained: set[str] = set()
    for number, line in enumerate(lines):
        key, sep, value = line.split("#")[0].strip().partition(":")
        if not sep or line.lstrip().startswith("#") or not value.strip():
            continue  # a comment, or a section such as health: or staging:
        keys.add(key)
        above = _comments_above(lines, number)
        if any(word in line + above for word in ("default", "required")):
            explained.add(key)
    assert {"app", "state", "build", "start", "path", "healthy_after", "listen"} <= keys
    assert keys - explained == set()


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """An existing verger.yml is kept unless force is given; the refusal exits 1."""
    folder = app_folder(tmp_path, "x", {"verger.yml": "app: mine\n"})
    with pytest.raises(VergerError) as caught:
        write_starter(folder)
    assert caught.value.hint == "use --force to overwrite"
    assert caught.value.exit_code == 1
    assert (folder / "verger.yml").read_text() == "app: mine\n"

    write_starter(folder, force=True)
    assert load_config(folder).config.app == "x"


def test_app_name_is_sanitized() -> None:
    """Folder names become valid app names, with a fallback when nothing is left."""
    assert app_name(Path("/srv/My App.v2")) == "my-app-v2"
    assert app_name(Path("/srv/2024")) == "app"
    assert app_name(Path("/srv/" + "a" * 60)) == "a" * 40


def _comments_above(lines: list[str], number: int) -> str:
    found = ""
    while number > 0 and lines[number - 1].startswith("#"):
        number -= 1
        found = lines[number] + found
    return found
