"""What a release's version may be: it names folders and log files, and is
shown in the CLI, the webhooks and the app's environment."""

from __future__ import annotations

import re

from verger.errors import DeployError

VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
RULE = "1 to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"


def check_version(version: str) -> str:
    """Return ``version`` if it follows the rule, or refuse it naming the rule."""
    if not VERSION.fullmatch(version):
        raise DeployError(
            f"the version {version!r} is not accepted: a version is {RULE}",
            "pass --version with such a name, such as 1.4.0 or 2024-05-01.2",
        )
    return version
