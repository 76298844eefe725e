"""Routers: the built-in proxy and HAProxy, chosen per environment by ``router:``."""

from __future__ import annotations

import importlib
from pathlib import Path

from verger.deploy.routers.base import Router, Upstream
from verger.deploy.routers.stats import Stats

# Backend name in verger.yml -> module and class; imported only when used.
KINDS: dict[str, tuple[str, str]] = {
    "builtin": ("verger.deploy.routers.builtin", "BuiltinRouter"),
    "haproxy": ("verger.deploy.routers.haproxy", "HAProxyRouter"),
}


def make_router(
    kind: str, environment: str, listen: str, run_dir: Path, drain_timeout: float = 30.0
) -> Router:
    """The router backend ``kind`` for one environment."""
    module_name, class_name = KINDS[kind]
    cls: type[Router] = getattr(importlib.import_module(module_name), class_name)
    return cls(environment, listen, run_dir, drain_timeout)


__all__ = ["KINDS", "Router", "Stats", "Upstream", "make_router"]
