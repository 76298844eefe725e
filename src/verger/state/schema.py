"""The state store's schema, as numbered steps applied in order.

A store records the version it is at; opening it applies the steps after
that, each in one transaction, so an older store is upgraded in place.
Statements are written once in a dialect both SQLite and PostgreSQL accept;
``{id}`` stands for each engine's auto-increment primary key.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE environments (
            name TEXT PRIMARY KEY,
            router TEXT NOT NULL,
            router_pid INTEGER,
            router_started TEXT,
            live_release INTEGER,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE releases (
            id {id},
            environment TEXT NOT NULL,
            version TEXT NOT NULL,
            folder TEXT NOT NULL,
            source TEXT NOT NULL,
            status TEXT NOT NULL,
            slot TEXT,
            port INTEGER,
            pid INTEGER,
            pid_started TEXT,
            stop_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX releases_by_environment ON releases (environment, id)",
        """CREATE TABLE deploys (
            id {id},
            environment TEXT NOT NULL,
            kind TEXT NOT NULL,
            version TEXT NOT NULL,
            release_id INTEGER,
            previous_release_id INTEGER,
            status TEXT NOT NULL,
            step TEXT NOT NULL,
            verdict TEXT,
            reason TEXT,
            actor TEXT NOT NULL,
            forced INTEGER NOT NULL DEFAULT 0,
            switch_seconds DOUBLE PRECISION,
            started_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION
        )""",
        "CREATE INDEX deploys_by_environment ON deploys (environment, id)",
        """CREATE TABLE steps (
            id {id},
            deploy_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            detail TEXT,
            at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX steps_by_deploy ON steps (deploy_id, id)",
        """CREATE TABLE audit (
            id {id},
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            environment TEXT,
            detail TEXT
        )""",
    ],
    [
        "ALTER TABLE deploys ADD COLUMN rollback_seconds DOUBLE PRECISION",
    ],
    [
        "ALTER TABLE environments ADD COLUMN router_listen TEXT",
    ],
    [
        """CREATE TABLE backups (
            id {id},
            database TEXT NOT NULL,
            engine TEXT NOT NULL,
            label TEXT,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            actor TEXT NOT NULL,
            pid INTEGER,
            started_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION,
            size BIGINT,
            repo_size BIGINT,
            wal_start TEXT,
            wal_stop TEXT,
            marker TEXT,
            tables TEXT,
            detail TEXT,
            verified_at DOUBLE PRECISION,
            verify_seconds DOUBLE PRECISION,
            verify_detail TEXT
        )""",
        "CREATE INDEX backups_by_database ON backups (database, id)",
        """CREATE TABLE drills (
            id {id},
            database TEXT NOT NULL,
            backup_label TEXT,
            status TEXT NOT NULL,
            actor TEXT NOT NULL,
            pid INTEGER,
            started_at DOUBLE PRECISION NOT NULL,
            incident_at DOUBLE PRECISION,
            newest_marker_at DOUBLE PRECISION,
            writable_at DOUBLE PRECISION,
            rto_seconds DOUBLE PRECISION,
            rpo_seconds DOUBLE PRECISION,
            rto_target DOUBLE PRECISION NOT NULL,
            rpo_target DOUBLE PRECISION NOT NULL,
            detail TEXT,
            finished_at DOUBLE PRECISION
        )""",
        """CREATE TABLE jobs (
            name TEXT PRIMARY KEY,
            last_started DOUBLE PRECISION,
            last_finished DOUBLE PRECISION,
            last_status TEXT,
            last_detail TEXT,
            pid INTEGER
        )""",
    ],
    [
        """CREATE TABLE alert_notifications (
            group_key TEXT NOT NULL,
            receiver TEXT NOT NULL,
            firing TEXT NOT NULL,
            resolved TEXT NOT NULL,
            alerts TEXT NOT NULL,
            sent_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (group_key, receiver)
        )""",
        """CREATE TABLE silences (
            id {id},
            matchers TEXT NOT NULL,
            starts_at DOUBLE PRECISION NOT NULL,
            ends_at DOUBLE PRECISION NOT NULL,
            comment TEXT NOT NULL,
            actor TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expired_by TEXT
        )""",
        """CREATE TABLE incidents (
            id {id},
            group_key TEXT NOT NULL,
            title TEXT NOT NULL,
            severity TEXT NOT NULL,
            labels TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            detected_at DOUBLE PRECISION NOT NULL,
            acknowledged_at DOUBLE PRECISION,
            acknowledged_by TEXT,
            resolved_at DOUBLE PRECISION,
            resolved_by TEXT,
            alerts INTEGER NOT NULL DEFAULT 1
        )""",
        "CREATE INDEX incidents_by_group ON incidents (group_key, id)",
        """CREATE TABLE incident_notes (
            id {id},
            incident_id INTEGER NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL
        )""",
        "CREATE INDEX incident_notes_by_incident ON incident_notes (incident_id, id)",
    ],
    [
        """CREATE TABLE staging_refreshes (
            id {id},
            target TEXT NOT NULL,
            database TEXT NOT NULL,
            source TEXT,
            status TEXT NOT NULL,
            actor TEXT NOT NULL,
            pid INTEGER,
            started_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION,
            rows_masked BIGINT,
            leaks INTEGER,
            detail TEXT
        )""",
    ],
    [
        """CREATE TABLE alert_states (
            fingerprint TEXT NOT NULL,
            rule TEXT NOT NULL,
            labels TEXT NOT NULL,
            annotations TEXT NOT NULL,
            state TEXT NOT NULL,
            active_at DOUBLE PRECISION NOT NULL,
            fired_at DOUBLE PRECISION,
            resolved_at DOUBLE PRECISION,
            keep_firing_since DOUBLE PRECISION,
            value DOUBLE PRECISION,
            PRIMARY KEY (rule, fingerprint)
        )""",
        """CREATE TABLE heartbeats (
            name TEXT PRIMARY KEY,
            last_seen DOUBLE PRECISION NOT NULL
        )""",
    ],
]

LATEST = len(MIGRATIONS)
