"""Marker rows: small facts written to the source that a restore must bring back.

A physical backup cannot be compared table by table with the live database,
which moved on while it was taken. What can be checked is a row committed
just before the backup started: a restore of that backup must contain it.
Drills write markers continuously; the newest one a restore brings back
measures how much was lost (the RPO).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time

import psycopg

from verger.errors import BackupError

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS verger;
CREATE TABLE IF NOT EXISTS verger.markers (
    token text PRIMARY KEY,
    kind text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


def connect(dsn: str, timeout: float = 10) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, connect_timeout=int(timeout), autocommit=True)
    except psycopg.Error as exc:
        raise BackupError(
            f"cannot connect to the database: {str(exc).strip().splitlines()[0]}",
            "check the URL under databases: in verger.yml and that the server is up",
        ) from None


def write_marker(dsn: str, kind: str) -> tuple[str, float]:
    """Commit one marker row; return its token and commit time (epoch seconds)."""
    token = f"{kind}-{secrets.token_hex(8)}"
    with connect(dsn) as conn:
        conn.execute(SCHEMA)
        row = conn.execute(
            "INSERT INTO verger.markers (token, kind) VALUES (%s, %s)"
            " RETURNING extract(epoch FROM written_at)",
            (token, kind),
        ).fetchone()
    assert row is not None
    return token, float(row[0])  # type: ignore[arg-type]


def has_marker(conn: psycopg.Connection[tuple[object, ...]], token: str) -> bool:
    with contextlib.suppress(psycopg.errors.UndefinedTable):
        row = conn.execute(
            "SELECT 1 FROM verger.markers WHERE token = %s", (token,)
        ).fetchone()
        return row is not None
    return False


def newest_marker(
    conn: psycopg.Connection[tuple[object, ...]], kind: str, since: float = 0.0
) -> float | None:
    """The commit time of the newest marker of ``kind`` written after ``since``."""
    try:
        row = conn.execute(
            "SELECT extract(epoch FROM max(written_at)) FROM verger.markers"
            " WHERE kind = %s AND written_at >= to_timestamp(%s)",
            (kind, since),
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None or row[0] is None else float(row[0])  # type: ignore[arg-type]


def prune(dsn: str, kind: str, older_than: float) -> None:
    """Delete markers of ``kind`` older than ``older_than`` seconds."""
    with connect(dsn) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "DELETE FROM verger.markers WHERE kind = %s"
            " AND written_at < now() - make_interval(secs => %s)",
            (kind, older_than),
        )


def lsn(text: str) -> int:
    """A WAL position such as ``0/3000148`` as a number."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def archived_until(dsn: str) -> int | None:
    """The WAL position up to which the source's archive is complete, if known.

    Segments are archived in order, so everything before the end of
    ``last_archived_wal`` is in the archive.
    """
    try:
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT last_archived_wal, (SELECT setting::bigint FROM pg_settings"
                " WHERE name = 'wal_segment_size') FROM pg_stat_archiver"
            ).fetchone()
    except psycopg.Error as exc:
        raise BackupError(
            f"cannot read the archiver's progress: {str(exc).strip()}",
            "check that the source is up",
        ) from exc
    if row is None or not row[0] or len(str(row[0])) != 24:
        return None
    name, size = str(row[0]), int(str(row[1]))
    log, segment = int(name[8:16], 16), int(name[16:24], 16)
    return (log << 32) + (segment + 1) * size


class MarkerWriter:
    """Writes a marker every ``interval`` seconds in a thread, until stopped."""

    def __init__(self, dsn: str, kind: str, interval: float = 0.2) -> None:
        self.dsn = dsn
        self.kind = kind
        self.interval = interval
        self.newest: float | None = None
        # (commit time, WAL position just past the commit) of each marker.
        self.log: list[tuple[float, int]] = []
        self.written = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        with connect(self.dsn) as conn:
            conn.execute(SCHEMA)
        self._thread.start()

    def stop(self) -> float | None:
        """Stop writing; return the commit time of the last marker written."""
        self._stop.set()
        self._thread.join(timeout=10)
        return self.newest

    def newest_before(self, position: int) -> float | None:
        """The commit time of the newest marker whose commit lies before ``position``."""
        times = [at for at, after in self.log if after <= position]
        return max(times) if times else None

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.dsn)
                row = conn.execute(
                    "INSERT INTO verger.markers (token, kind) VALUES (%s, %s)"
                    " RETURNING extract(epoch FROM written_at)",
                    (f"{self.kind}-{secrets.token_hex(8)}", self.kind),
                ).fetchone()
                if row is not None:
                    self.newest = float(row[0])  # type: ignore[arg-type]
                    self.written += 1
                    after = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                    if after is not None:
                        self.log.append((self.newest, lsn(str(after[0]))))
            except (psycopg.Error, BackupError):
                self.failures += 1
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()
        time.sleep(0)
