"""Named checks of the config and the machine, shared by ``verger check``.

Each check is a small function registered with ``register``; ``run_checks``
runs them all and never raises. Importing this package registers the
built-in checks in the order they are shown.
"""

from verger.checks import (  # noqa: F401  (registers)
    alerting,
    app,
    backup,
    dashboard,
    host,
    monitor,
    network,
    store,
)
from verger.checks.base import (
    COLUMNS,
    Check,
    Context,
    Severity,
    Status,
    checks_to_data,
    checks_to_rows,
    register,
    registered,
    run_checks,
    worst,
)

__all__ = [
    "COLUMNS",
    "Check",
    "Context",
    "Severity",
    "Status",
    "checks_to_data",
    "checks_to_rows",
    "register",
    "registered",
    "run_checks",
    "worst",
]
