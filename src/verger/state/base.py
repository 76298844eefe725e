"""The state store: environments, releases, deploys, their steps and the audit trail.

One class holds every query; a small backend per engine supplies the
connection, the placeholder style and the auto-increment spelling.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from verger.errors import StateError
from verger.state.schema import LATEST, MIGRATIONS

# Statuses a release row moves through.
RELEASE_RUNNING = ("starting", "green", "live", "previous")
# Statuses of a deploy that has ended.
DEPLOY_ENDED = ("succeeded", "failed", "rolled_back", "undone")
# Statuses of a backup: only "verified" counts as a backup a restore can rely on.
BACKUP_STATUSES = ("running", "done", "failed", "verified", "unrestorable", "expired")


def actor() -> str:
    """Who is acting: the login name and host, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Row:
    """A row as a read-only mapping with attribute access."""

    data: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self.data[name]


class Store(ABC):
    """Typed access to the state store, whatever engine holds it."""

    auto_id: str
    placeholder: str

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _transaction(self) -> Any:
        """A context manager that commits on success and rolls back on error."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store lives, for messages."""

    def __init__(self) -> None:
        self._conn = self._connect()
        self._upgrade()

    def close(self) -> None:
        self._conn.close()

    # -- plumbing ---------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        try:
            with self._transaction():
                cur = self._conn.cursor()
                yield cur
        except StateError:
            raise
        except Exception as exc:
            raise StateError(
                f"the state store at {self.describe()} failed: {exc}",
                "check that it is reachable and writable, then retry",
            ) from exc

    def _all(self, statement: str, args: Sequence[Any] = ()) -> list[Row]:
        with self._tx() as cur:
            cur.execute(self._sql(statement), tuple(args))
            names = [col[0] for col in cur.description]
            return [
                Row(dict(zip(names, values, strict=True))) for values in cur.fetchall()
            ]

    def _one(self, statement: str, args: Sequence[Any] = ()) -> Row | None:
        rows = self._all(statement, args)
        return rows[0] if rows else None

    def _run(self, statement: str, args: Sequence[Any] = ()) -> None:
        with self._tx() as cur:
            cur.execute(self._sql(statement), tuple(args))

    def _insert(self, statement: str, args: Sequence[Any]) -> int:
        with self._tx() as cur:
            cur.execute(self._sql(statement + " RETURNING id"), tuple(args))
            return int(cur.fetchone()[0])

    def _upgrade(self) -> None:
        with self._tx() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            cur.execute("SELECT version FROM schema_version")
            row = cur.fetchone()
            current = int(row[0]) if row else 0
            if row is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (0)")
        if current > LATEST:
            raise StateError(
                f"the state store at {self.describe()} is at schema version "
                f"{current}, newer than this verger knows ({LATEST})",
                "upgrade verger to the version that wrote it",
            )
        for number in range(current, LATEST):
            with self._tx() as cur:
                for statement in MIGRATIONS[number]:
                    cur.execute(statement.replace("{id}", self.auto_id))
                cur.execute(
                    self._sql("UPDATE schema_version SET version = ?"), (number + 1,)
                )

    def schema_version(self) -> int:
        row = self._one("SELECT version FROM schema_version")
        return int(row.version) if row else 0

    # -- environments -----------------------------------------------------

    def ensure_environment(self, name: str, router: str) -> None:
        if self.environment(name) is None:
            self._run(
                "INSERT INTO environments (name, router, updated_at) VALUES (?, ?, ?)",
                (name, router, time.time()),
            )

    def environment(self, name: str) -> Row | None:
        return self._one("SELECT * FROM environments WHERE name = ?", (name,))

    def environments(self) -> list[Row]:
        return self._all("SELECT * FROM environments ORDER BY name")

    def set_router(
        self,
        name: str,
        pid: int | None,
        started: str | None,
        kind: str | None = None,
        listen: str | None = None,
    ) -> None:
        """Record the router process serving an environment: its kind and address."""
        row = self.environment(name)
        kind = kind or (row.router if row else "builtin")
        self._run(
            "UPDATE environments SET router_pid = ?, router_started = ?, router = ?,"
            " router_listen = ?, updated_at = ? WHERE name = ?",
            (pid, started, kind, listen, time.time(), name),
        )

    def set_live(self, name: str, release_id: int | None) -> None:
        self._run(
            "UPDATE environments SET live_release = ?, updated_at = ? WHERE name = ?",
            (release_id, time.time(), name),
        )

    # -- releases ---------------------------------------------------------

    def add_release(
        self, environment: str, version: str, folder: str, source: str
    ) -> int:
        now = time.time()
        return self._insert(
            "INSERT INTO releases (environment, version, folder, source, status,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'building', ?, ?)",
            (environment, version, folder, source, now, now),
        )

    def release(self, release_id: int | None) -> Row | None:
        if release_id is None:
            return None
        return self._one("SELECT * FROM releases WHERE id = ?", (release_id,))

    def releases(self, environment: str, limit: int = 50) -> list[Row]:
        return self._all(
            "SELECT * FROM releases WHERE environment = ? ORDER BY id DESC LIMIT ?",
            (environment, limit),
        )

    def running_releases(self) -> list[Row]:
        marks = ", ".join("?" for _ in RELEASE_RUNNING)
        return self._all(
            f"SELECT * FROM releases WHERE status IN ({marks}) ORDER BY id",
            RELEASE_RUNNING,
        )

    def releases_with_status(self, *statuses: str) -> list[Row]:
        marks = ", ".join("?" for _ in statuses)
        return self._all(
            f"SELECT * FROM releases WHERE status IN ({marks}) ORDER BY id", statuses
        )

    def update_release(self, release_id: int, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        names = ", ".join(f"{name} = ?" for name in fields)
        self._run(
            f"UPDATE releases SET {names} WHERE id = ?", (*fields.values(), release_id)
        )

    # -- deploys and steps ------------------------------------------------

    def add_deploy(
        self,
        environment: str,
        kind: str,
        version: str,
        who: str,
        *,
        forced: bool = False,
        previous_release_id: int | None = None,
    ) -> int:
        return self._insert(
            "INSERT INTO deploys (environment, kind, version, status, step, actor,"
            " forced, previous_release_id, started_at)"
            " VALUES (?, ?, ?, 'running', 'queued', ?, ?, ?, ?)",
            (
                environment,
                kind,
                version,
                who,
                int(forced),
                previous_release_id,
                time.time(),
            ),
        )

    def deploy(self, deploy_id: int) -> Row | None:
        return self._one("SELECT * FROM deploys WHERE id = ?", (deploy_id,))

    def deploys(self, environment: str | None = None, limit: int = 20) -> list[Row]:
        if environment is None:
            return self._all("SELECT * FROM deploys ORDER BY id DESC LIMIT ?", (limit,))
        return self._all(
            "SELECT * FROM deploys WHERE environment = ? ORDER BY id DESC LIMIT ?",
            (environment, limit),
        )

    def unfinished_deploys(self, environment: str | None = None) -> list[Row]:
        rows = self._all(
            "SELECT * FROM deploys WHERE status IN ('running', 'interrupted')"
        )
        return [row for row in rows if environment in (None, row.environment)]

    def update_deploy(self, deploy_id: int, **fields: Any) -> None:
        if fields.get("status") in DEPLOY_ENDED:
            fields.setdefault("finished_at", time.time())
        names = ", ".join(f"{name} = ?" for name in fields)
        self._run(
            f"UPDATE deploys SET {names} WHERE id = ?", (*fields.values(), deploy_id)
        )

    def record_step(
        self, deploy_id: int, name: str, status: str, detail: str | None = None
    ) -> None:
        """Record a step; a step is recorded as started before it is taken."""
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO steps (deploy_id, name, status, detail, at)"
                    " VALUES (?, ?, ?, ?, ?)"
                ),
                (deploy_id, name, status, detail, time.time()),
            )
            if status == "started":
                cur.execute(
                    self._sql("UPDATE deploys SET step = ? WHERE id = ?"),
                    (name, deploy_id),
                )

    def steps(self, deploy_id: int) -> list[Row]:
        return self._all(
            "SELECT * FROM steps WHERE deploy_id = ? ORDER BY id", (deploy_id,)
        )

    def passed(self, environment: str, version: str) -> Row | None:
        """The newest deploy of ``version`` that passed in ``environment``, if any."""
        return self._one(
            "SELECT * FROM deploys WHERE environment = ? AND version = ?"
            " AND kind = 'deploy' AND status = 'succeeded' ORDER BY id DESC LIMIT 1",
            (environment, version),
        )

    # -- audit ------------------------------------------------------------

    def audit(
        self, who: str, action: str, environment: str | None = None, **detail: Any
    ) -> None:
        self._run(
            "INSERT INTO audit (at, actor, action, environment, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), who, action, environment, json.dumps(detail, default=str)),
        )

    def audit_trail(self, environment: str | None = None, limit: int = 50) -> list[Row]:
        if environment is None:
            return self._all("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return self._all(
            "SELECT * FROM audit WHERE environment = ? ORDER BY id DESC LIMIT ?",
            (environment, limit),
        )

    # -- backups and drills -----------------------------------------------

    def add_backup(self, database: str, engine: str, kind: str, who: str) -> int:
        return self._insert(
            "INSERT INTO backups (database, engine, kind, status, actor, pid,"
            " started_at) VALUES (?, ?, ?, 'running', ?, ?, ?)",
            (database, engine, kind, who, os.getpid(), time.time()),
        )

    def update_backup(self, backup_id: int, **fields: Any) -> None:
        if "tables" in fields and not isinstance(fields["tables"], str | None):
            fields["tables"] = json.dumps(fields["tables"])
        names = ", ".join(f"{name} = ?" for name in fields)
        self._run(
            f"UPDATE backups SET {names} WHERE id = ?", (*fields.values(), backup_id)
        )

    def backup(self, backup_id: int) -> Row | None:
        return self._one("SELECT * FROM backups WHERE id = ?", (backup_id,))

    def backup_by_label(self, database: str, label: str) -> Row | None:
        return self._one(
            "SELECT * FROM backups WHERE database = ? AND label = ?"
            " ORDER BY id DESC LIMIT 1",
            (database, label),
        )

    def backups(self, database: str, *statuses: str, limit: int = 1000) -> list[Row]:
        """A database's backups, newest first, optionally only those in ``statuses``."""
        rows = self._all(
            "SELECT * FROM backups WHERE database = ? ORDER BY id DESC LIMIT ?",
            (database, limit),
        )
        return [row for row in rows if not statuses or row.status in statuses]

    def add_drill(
        self, database: str, who: str, rto_target: float, rpo_target: float
    ) -> int:
        return self._insert(
            "INSERT INTO drills (database, status, actor, pid, started_at, rto_target,"
            " rpo_target) VALUES (?, 'running', ?, ?, ?, ?, ?)",
            (database, who, os.getpid(), time.time(), rto_target, rpo_target),
        )

    def update_drill(self, drill_id: int, **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        self._run(
            f"UPDATE drills SET {names} WHERE id = ?", (*fields.values(), drill_id)
        )

    def drills(self, database: str, limit: int = 100) -> list[Row]:
        return self._all(
            "SELECT * FROM drills WHERE database = ? ORDER BY id DESC LIMIT ?",
            (database, limit),
        )

    # -- staging refreshes -----------------------------------------------

    def add_refresh(self, target: str, database: str, who: str) -> int:
        return self._insert(
            "INSERT INTO staging_refreshes (target, database, status, actor, pid,"
            " started_at) VALUES (?, ?, 'running', ?, ?, ?)",
            (target, database, who, os.getpid(), time.time()),
        )

    def update_refresh(self, refresh_id: int, **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        self._run(
            f"UPDATE staging_refreshes SET {names} WHERE id = ?",
            (*fields.values(), refresh_id),
        )

    def refreshes(self, target: str, limit: int = 50) -> list[Row]:
        """A staging database's refreshes, newest first."""
        return self._all(
            "SELECT * FROM staging_refreshes WHERE target = ? ORDER BY id DESC LIMIT ?",
            (target, limit),
        )

    # -- scheduled jobs ---------------------------------------------------

    def job(self, name: str) -> Row | None:
        return self._one("SELECT * FROM jobs WHERE name = ?", (name,))

    def start_job(self, name: str, pid: int, at: float | None = None) -> None:
        """Record that a scheduled job started (``at``, default now) as process ``pid``."""
        self._run(
            "INSERT INTO jobs (name, last_started, last_status, pid)"
            " VALUES (?, ?, 'running', ?) ON CONFLICT (name) DO UPDATE SET"
            " last_started = excluded.last_started, last_finished = NULL,"
            " last_status = 'running', last_detail = NULL, pid = excluded.pid",
            (name, time.time() if at is None else at, pid),
        )

    def finish_job(
        self, name: str, status: str, detail: str | None, at: float | None = None
    ) -> None:
        """Record how a scheduled job's run ended: ok, failed, busy or interrupted."""
        self._run(
            "UPDATE jobs SET last_finished = ?, last_status = ?, last_detail = ?,"
            " pid = NULL WHERE name = ?",
            (time.time() if at is None else at, status, detail, name),
        )

    def jobs(self) -> list[Row]:
        return self._all("SELECT * FROM jobs ORDER BY name")

    # -- alert notifications, silences and incidents ----------------------

    def notification(self, group_key: str, receiver: str) -> Row | None:
        """What was last delivered for a group to a receiver, if anything."""
        return self._one(
            "SELECT * FROM alert_notifications WHERE group_key = ? AND receiver = ?",
            (group_key, receiver),
        )

    def notifications_firing(self) -> list[Row]:
        """Groups whose last delivery still had firing alerts, oldest first."""
        return self._all(
            "SELECT * FROM alert_notifications WHERE firing <> '[]' ORDER BY sent_at"
        )

    def record_notification(
        self,
        group_key: str,
        receiver: str,
        firing: Sequence[str],
        resolved: Sequence[str],
        alerts: Sequence[dict[str, Any]],
        sent_at: float,
    ) -> None:
        """Record a delivery: the fingerprints it told as firing and as resolved."""
        self._run(
            "INSERT INTO alert_notifications (group_key, receiver, firing, resolved,"
            " alerts, sent_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (group_key, receiver) DO UPDATE SET"
            " firing = excluded.firing, resolved = excluded.resolved,"
            " alerts = excluded.alerts, sent_at = excluded.sent_at",
            (
                group_key,
                receiver,
                json.dumps(sorted(firing)),
                json.dumps(sorted(resolved)),
                json.dumps(list(alerts), default=str),
                sent_at,
            ),
        )

    def add_silence(
        self,
        matchers: Sequence[str],
        starts_at: float,
        ends_at: float,
        comment: str,
        who: str,
    ) -> int:
        return self._insert(
            "INSERT INTO silences (matchers, starts_at, ends_at, comment, actor,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (json.dumps(list(matchers)), starts_at, ends_at, comment, who, time.time()),
        )

    def silence(self, silence_id: int) -> Row | None:
        return self._one("SELECT * FROM silences WHERE id = ?", (silence_id,))

    def silences(self, active_at: float | None = None, limit: int = 200) -> list[Row]:
        """Silences newest first; only those in effect at ``active_at`` when given."""
        if active_at is None:
            return self._all(
                "SELECT * FROM silences ORDER BY id DESC LIMIT ?", (limit,)
            )
        return self._all(
            "SELECT * FROM silences WHERE starts_at <= ? AND ends_at > ?"
            " ORDER BY id DESC LIMIT ?",
            (active_at, active_at, limit),
        )

    def expire_silence(self, silence_id: int, at: float, who: str) -> None:
        # A silence that had not started yet ends before it starts: it never muted.
        self._run(
            "UPDATE silences SET starts_at = CASE WHEN starts_at > ? THEN ?"
            " ELSE starts_at END, ends_at = ?, expired_by = ? WHERE id = ?",
            (at, at, at, who, silence_id),
        )

    def add_incident(
        self,
        group_key: str,
        title: str,
        severity: str,
        labels: dict[str, str],
        started_at: float,
        detected_at: float,
        alerts: int,
    ) -> int:
        return self._insert(
            "INSERT INTO incidents (group_key, title, severity, labels, status,"
            " started_at, detected_at, alerts) VALUES (?, ?, ?, ?, 'detected', ?, ?, ?)",
            (
                group_key,
                title,
                severity,
                json.dumps(labels),
                started_at,
                detected_at,
                alerts,
            ),
        )

    def incident(self, incident_id: int) -> Row | None:
        return self._one("SELECT * FROM incidents WHERE id = ?", (incident_id,))

    def incidents(self, limit: int = 50, open_only: bool = False) -> list[Row]:
        if open_only:
            return self._all(
                "SELECT * FROM incidents WHERE status <> 'resolved'"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        return self._all("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", (limit,))

    def open_incident(self, group_key: str) -> Row | None:
        """The group's incident that is not resolved yet, if there is one."""
        return self._one(
            "SELECT * FROM incidents WHERE group_key = ? AND status <> 'resolved'"
            " ORDER BY id DESC LIMIT 1",
            (group_key,),
        )

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        self._run(
            f"UPDATE incidents SET {names} WHERE id = ?",
            (*fields.values(), incident_id),
        )

    def add_incident_note(
        self, incident_id: int, kind: str, text: str, who: str, at: float | None = None
    ) -> int:
        """Add a line to an incident's timeline: a note, an ack, a resolve."""
        return self._insert(
            "INSERT INTO incident_notes (incident_id, at, actor, kind, text)"
            " VALUES (?, ?, ?, ?, ?)",
            (incident_id, time.time() if at is None else at, who, kind, text),
        )

    def incident_notes(self, incident_id: int) -> list[Row]:
        return self._all(
            "SELECT * FROM incident_notes WHERE incident_id = ? ORDER BY id",
            (incident_id,),
        )

    def latest_incident(self, group_key: str) -> Row | None:
        return self._one(
            "SELECT * FROM incidents WHERE group_key = ? ORDER BY id DESC LIMIT 1",
            (group_key,),
        )

    def prune_notifications(self, before: float) -> None:
        """Forget groups with nothing firing that were last sent to before ``before``."""
        self._run(
            "DELETE FROM alert_notifications WHERE firing = '[]' AND sent_at < ?",
            (before,),
        )

    # -- alert states -----------------------------------------------------

    def alert_states(self) -> list[Row]:
        """Every alert the rule evaluator knew when it last saved: pending, firing."""
        return self._all("SELECT * FROM alert_states ORDER BY rule, fingerprint")

    def save_alert_states(
        self, changed: Sequence[dict[str, Any]], removed: Sequence[str]
    ) -> None:
        """Write changed alerts and forget removed ones (by fingerprint) in one go."""
        columns = (
            "fingerprint", "rule", "labels", "annotations", "state", "active_at",
            "fired_at", "resolved_at", "keep_firing_since", "value",
        )  # fmt: skip
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
        upsert = self._sql(
            f"INSERT INTO alert_states ({', '.join(columns)}) VALUES "
            f"({', '.join('?' * len(columns))}) ON CONFLICT (rule, fingerprint) "
            f"DO UPDATE SET {updates}"
        )
        with self._tx() as cur:
            for fingerprint in removed:
                cur.execute(
                    self._sql("DELETE FROM alert_states WHERE fingerprint = ?"),
                    (fingerprint,),
                )
            for row in changed:
                cur.execute(upsert, tuple(row[c] for c in columns))

    # -- heartbeats -------------------------------------------------------

    def beat(self, name: str, at: float | None = None) -> None:
        """Record that the job behind heartbeat ``name`` reported in."""
        self._run(
            "INSERT INTO heartbeats (name, last_seen) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
            (name, time.time() if at is None else at),
        )

    def heartbeats(self) -> dict[str, float]:
        """When each heartbeat last reported in."""
        rows = self._all("SELECT name, last_seen FROM heartbeats")
        return {row.name: float(row.last_seen) for row in rows}
