"""Checks of the machine: the HAProxy binary when it is needed, free disk."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from verger.checks.base import Check, Context, nearest_existing, register

MIB = 1024 * 1024
# Each release is a full copy of the app (node_modules, a venv), so 1 GiB is
# a few releases; below 256 MiB a build is likely to fail half-way.
DISK_WARN_BELOW = 1024 * MIB
DISK_FAIL_BELOW = 256 * MIB


@register("haproxy", order=50)
def check_haproxy(context: Context) -> Iterator[Check]:
    """The haproxy binary is installed when an environment uses router: haproxy."""
    loaded = context.loaded
    if loaded is None:
        yield Check("haproxy", "skip", "the config is not valid", severity="info")
        return
    users = [
        name
        for name, environment in loaded.config.environments.items()
        if environment.router == "haproxy"
    ]
    if not users:
        yield Check(
            "haproxy", "skip", "no environment uses router: haproxy", severity="info"
        )
        return
    yield haproxy_check(users)


def haproxy_check(users: list[str], binary: str = "haproxy") -> Check:
    """Whether ``binary`` is on PATH and answers ``-v``."""
    needed = f"needed by {', '.join(users)}"
    path = shutil.which(binary)
    if path is None:
        return Check(
            "haproxy",
            "fail",
            f"{binary} is not installed ({needed})",
            "install it with apt-get install haproxy, or use router: builtin",
        )
    try:
        done = subprocess.run(
            [path, "-v"], capture_output=True, text=True, timeout=3, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("haproxy", "fail", f"{path} -v failed: {exc}", "reinstall haproxy")
    version = (done.stdout or done.stderr).strip().splitlines()
    shown = version[0] if version else path
    return Check("haproxy", "ok", f"{shown} ({needed})")


@register("disk", order=80)
def check_disk(context: Context) -> Iterator[Check]:
    """The disk that holds .verger has room for releases and state."""
    yield disk_check(context.state_dir)


def disk_check(
    folder: Path,
    warn_below: int = DISK_WARN_BELOW,
    fail_below: int = DISK_FAIL_BELOW,
) -> Check:
    """Free space on the disk holding ``folder`` (or its closest existing parent)."""
    where = nearest_existing(folder)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check(
            "disk",
            "fail",
            f"cannot read free space at {where}: {exc}",
            "check the folder exists and can be read",
        )
    free = f"{usage.free / MIB / 1024:.1f} GiB free at {where}"
    if usage.free < fail_below:
        return Check(
            "disk", "fail", free, "free space: old releases live in .verger/releases"
        )
    if usage.free < warn_below:
        return Check(
            "disk",
            "warn",
            free,
            "free space soon: each release is a full copy of the app",
            severity="warning",
        )
    return Check("disk", "ok", free)
