"""The dashboard's files ship with the package and name nothing outside it."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from verger.web.app import STATIC

ROOT = Path(__file__).parent.parent.parent


def test_every_static_file_is_package_data() -> None:
    """pyproject's package-data takes every file of web/static into a built wheel."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["verger.web"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir()]
    assert {"static/index.html", "static/dashboard.js", "static/dashboard.css"} <= set(
        files
    )
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_the_page_loads_only_its_own_files() -> None:
    """Every src and href of the page is a file under /static/ that exists."""
    page = (STATIC / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links
    for link in links:
        assert link.startswith("/static/"), link
        assert (STATIC / link.removeprefix("/static/")).is_file(), link
    script = (STATIC / "dashboard.js").read_text()
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in script
