"""The ``verger`` command's entry point.

Loading the command line takes a moment; a Ctrl-C in it must end the
command with one line like any other interruption, not with a traceback
from whichever module was loading. So SIGINT is handled before anything
heavy is imported, and handed back to Python once the CLI has loaded.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def _interrupted_early(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write(
        "error: interrupted before the command started; nothing was done\n"
    )
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted_early)
    from verger.cli.main import main as run

    signal.signal(signal.SIGINT, signal.default_int_handler)
    run()
