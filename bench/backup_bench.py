"""Benchmark of backups: what verger adds over its engines, and measured RTO/RPO.

On a pgbench database (scale 50 by default, about 750 MB), in one run:

- full backup and restore throughput through verger (the CLI, as a user runs
  it) against the same pgBackRest commands run by hand with the same config
  file, and against pg_dump/pg_restore by hand with the same encryption
  (openssl), for the pg_dump engine;
- the RTO of ``verger dr drill`` (restore start to the copy accepting writes);
- the RPO of a drill with ``archive_timeout`` at 60 s: writes committed before
  the incident that the restored copy does not have.

Each figure is the median of ``--runs`` runs; verger and by-hand runs take
turns, so that caches favour neither. Both sides end with their copy on
disk: the by-hand dump is synced like verger's, and the by-hand logical
restore, like verger's, runs pg_restore without fsync and syncs the data
folder once at the end (``initdb --sync-only``). verger's modules are
byte-compiled first, as an installed package's are, so that Python does not
compile them on every command (a checkout run with PYTHONDONTWRITEBYTECODE
would). The table is printed and written to bench/results/backup.md.

    python bench/backup_bench.py --scale 50 --runs 3
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import verger as package
from verger.backup.cluster import ScratchCluster, free_port
from verger.backup.system import Runner, pg_program, resolve_user
from verger.backup.tables import checksums

PASSPHRASE = "benchmark passphrase, not a secret"
ROOT = Path(__file__).resolve().parent.parent


class Source(ScratchCluster):
    def configure(self, **settings: str) -> None:
        with self.connect() as conn:
            conn.autocommit = True
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self.stop()
        self.start(timeout=120, isolated=False)


def runner() -> Runner:
    return Runner(resolve_user("postgres" if os.geteuid() == 0 else None))


def write_config(
    folder: Path, source: Source, engine: str, archive_timeout: str
) -> Path:
    run_as = "\n  run_as: postgres" if os.geteuid() == 0 else ""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "verger.yml"
    path.write_text(
        f"""\
app: bench
start: "true"
environments:
  production: {{listen: 127.0.0.1:{free_port()}}}
databases:
  production: {source.url("app")}
backup:
  engine: {engine}
  repository: {{path: {folder / "repo"}}}
  passphrase: ${{VERGER_BACKUP_PASSPHRASE}}{run_as}
  scratch: {folder / "scratch"}
  archive_timeout: {archive_timeout}
  targets: {{rpo: 1m, rto: 30m}}
"""
    )
    return path


def verger(config: Path, *args: str) -> dict[str, object]:
    env = {**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE}
    done = subprocess.run(
        [sys.executable, "-m", "verger", "-c", str(config), "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode not in (0, 6):
        raise SystemExit(f"verger {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        return dict(json.loads("\n".join(lines)))
    except ValueError:
        return {}


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def as_postgres(args: list[str], env: dict[str, str] | None = None) -> None:
    runner().run(args, env=env, timeout=6 * 3600)


def shell(script: str, env: dict[str, str]) -> None:
    as_postgres(["sh", "-ec", script], env=env)


class Bench:
    def __init__(self, work: Path, scale: int, runs: int) -> None:
        self.work = work
        self.scale = scale
        self.runs = runs
        self.runner = runner()
        self.runner.own(work, 0o755)
        self.source = Source(self.runner, work / "pg", "source")
        self.results: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.results.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.results[name])

    def prepare(self) -> None:
        self.source.init()
        self.source.start(timeout=120, isolated=False)
        with self.source.connect() as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE app")
        print(f"pgbench -i -s {self.scale} ...", flush=True)
        as_postgres(
            [
                shutil.which("pgbench") or pg_program("pgbench"),
                "-i",
                "-q",
                "-s",
                str(self.scale),
                "-h",
                str(self.source.sockets),
                "-p",
                str(self.source.port),
                "app",
            ]
        )
        with self.source.connect("app") as conn:
            row = conn.execute("SELECT pg_database_size('app')").fetchone()
        assert row is not None
        self.size = int(str(row[0]))
        self.physical = write_config(
            self.work / "physical", self.source, "pgbackrest", "60s"
        )
        self.logical = write_config(
            self.work / "logical", self.source, "pg_dump", "60s"
        )
        verger(self.physical, "backup", "setup")
        self.source.configure()
        verger(self.physical, "backup", "setup")
        self.pgbackrest_conf = (
            self.physical.parent / ".verger" / "backup" / "production"
        )
        self.stanza = "bench-production"

    # -- pgBackRest -------------------------------------------------------

    def pgbackrest(self, *args: str) -> list[str]:
        return [
            "pgbackrest",
            f"--config={self.pgbackrest_conf / 'pgbackrest.conf'}",
            f"--stanza={self.stanza}",
            *args,
        ]

    def newest_label(self) -> str:
        done = self.runner.run(self.pgbackrest("info", "--output=json"))
        return str(json.loads(done.stdout)[0]["backup"][-1]["label"])

    def physical_round(self, index: int) -> None:
        verger_first = index % 2 == 0
        for turn in (True, False) if verger_first else (False, True):
            if turn:
                self.add(
                    "pgbackrest backup, verger",
                    timed(
                        lambda: verger(self.physical, "backup", "run", "--no-verify")
                    ),
                )
            else:
                self.add(
                    "pgbackrest backup, by hand",
                    timed(
                        lambda: as_postgres(self.pgbackrest("backup", "--type=full"))
                    ),
                )
        label = self.newest_label()
        for turn in (True, False) if verger_first else (False, True):
            target = self.work / f"restore-{index}-{int(turn)}"
            if turn:
                seconds = timed(
                    lambda target=target: verger(
                        self.physical, "restore", "--latest", "--target", str(target)
                    )
                )
                self.add("pgbackrest restore, verger", seconds)
            else:
                self.add(
                    "pgbackrest restore, by hand", self.hand_restore(label, target)
                )
            shutil.rmtree(target, ignore_errors=True)

    def hand_restore(self, label: str, target: Path) -> float:
        """What a person does: restore, start, wait until it takes writes, stop."""
        copy = ScratchCluster(self.runner, self.work / "scratch-hand", "hand")
        copy.data = target
        started = time.perf_counter()
        as_postgres(
            self.pgbackrest(
                "restore",
                f"--pg1-path={target}",
                f"--set={label}",
                "--archive-mode=off",
            )
        )
        copy.start(timeout=3600, settings={"hot_standby": "off"}, isolated=False)
        # Stopped, as verger's restore leaves its target: the same work timed.
        copy.stop()
        seconds = time.perf_counter() - started
        shutil.rmtree(copy.folder, ignore_errors=True)
        return seconds

    # -- pg_dump ----------------------------------------------------------

    def logical_round(self, index: int) -> None:
        env = {
            "P": PASSPHRASE,
            "SOURCE": self.source.url("app"),
            "FILE": str(self.work / "hand.dump.enc"),
        }
        self.runner.own(self.work / "hand", 0o755)
        # openssl enc has no AES-GCM; CBC with PBKDF2 is the usual by-hand choice.
        # Synced, as verger syncs its dump before it lists the backup.
        dump = (
            f'"{pg_program("pg_dump")}" -Fc -d "$SOURCE" | '
            'openssl enc -aes-256-cbc -pbkdf2 -pass env:P -out "$FILE" && '
            'sync "$FILE"'
        )
        verger_first = index % 2 == 0
        for turn in (True, False) if verger_first else (False, True):
            if turn:
                self.add(
                    "pg_dump backup, verger",
                    timed(lambda: verger(self.logical, "backup", "run", "--no-verify")),
                )
            else:
                self.add("pg_dump backup, by hand", timed(lambda: shell(dump, env)))
        for turn in (True, False) if verger_first else (False, True):
            target = self.work / f"logical-{index}-{int(turn)}"
            if turn:
                seconds = timed(
                    lambda target=target: verger(
                        self.logical, "restore", "--latest", "--target", str(target)
                    )
                )
                self.add("pg_dump restore, verger", seconds)
            else:
                self.add("pg_dump restore, by hand", self.hand_logical(env, target))
            shutil.rmtree(target, ignore_errors=True)
        self.attribute()

    def attribute(self) -> None:
        """What the pg_dump gap is made of: start-up, and the table checks alone.

        The checks (every table's row count and checksum, read in the dump's
        snapshot) are verger's own work, which pg_dump by hand does not do;
        here they run serially on an idle source, not beside pg_dump.
        """
        self.add(
            "start-up",
            timed(lambda: verger(self.logical, "history")),
        )
        self.add(
            "table checks",
            timed(lambda: checksums(self.source.url("app"))),
        )

    def hand_logical(self, env: dict[str, str], target: Path) -> float:
        """The same steps as verger's: a cluster without fsync, pg_restore, one sync.

        Without the sync at the end, the by-hand copy would not be on disk
        when it stops, and verger's is (a plain initdb and fsync on all the
        way, as a person might run it, is slower still: every commit and
        checkpoint waits for the disk).
        """
        copy = ScratchCluster(self.runner, self.work / "scratch-hand", "hand")
        copy.data = target
        started = time.perf_counter()
        copy.init()
        copy.start(timeout=600)
        with copy.connect() as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE app")
        shell(
            'openssl enc -d -aes-256-cbc -pbkdf2 -pass env:P -in "$FILE" | '
            f'"{pg_program("pg_restore")}" --no-owner --no-privileges -d "$TARGET"',
            {**env, "TARGET": copy.url("app")},
        )
        copy.stop()
        as_postgres([pg_program("initdb"), "--sync-only", "-D", str(target)])
        seconds = time.perf_counter() - started
        shutil.rmtree(copy.folder, ignore_errors=True)
        return seconds

    # -- drills -----------------------------------------------------------

    def drills(self) -> None:
        verger(self.physical, "backup", "run", "--no-verify")
        for index in range(self.runs):
            print(
                f"drill {index + 1} of {self.runs} (about 70s of markers first)",
                flush=True,
            )
            result = verger(self.physical, "dr", "drill", "--lead", "70s")
            self.add("drill RTO", float(str(result["rto_seconds"])))
            self.add("drill RPO", float(str(result["rpo_seconds"])))

    def close(self) -> None:
        self.source.remove()


def table(bench: Bench) -> str:
    mb = bench.size / 1e6
    lines = [
        f"Backup benchmark: pgbench scale {bench.scale} ({mb:.0f} MB database), "
        f"median of {bench.runs} runs; {os.cpu_count()} cores. verger runs through "
        "its CLI (Python start-up included); by hand runs the same engine commands "
        "with the same config and encryption, and a restore by hand is timed until "
        "the copy has accepted writes and is stopped again, as verger leaves it.",
        "",
        "| operation | verger s | by hand s | verger MB/s | by hand MB/s | verger adds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for operation in (
        "pgbackrest backup",
        "pgbackrest restore",
        "pg_dump backup",
        "pg_dump restore",
    ):
        ours, theirs = f"{operation}, verger", f"{operation}, by hand"
        if ours not in bench.results:
            continue
        a, b = bench.median(ours), bench.median(theirs)
        lines.append(
            f"| {operation} | {a:.1f} | {b:.1f} | {mb / a:.0f} | {mb / b:.0f} "
            f"| {100 * (a / b - 1):+.1f}% |"
        )
    if "table checks" in bench.results:
        lines += [
            "",
            "Of the pg_dump backup's gap, measured alone in the same run: verger's "
            f"start-up {bench.median('start-up'):.2f} s (Python, the CLI, its config and "
            "the catalog: `verger history`), and the table checks, read serially "
            "on an idle source, "
            f"{bench.median('table checks'):.2f} s. During a backup the checks run "
            "beside pg_dump in its snapshot, competing with it for the cores.",
        ]
    lines += [
        "",
        "| drill (pgbackrest, archive_timeout 60s) | median s | max s | target |",
        "|---|---:|---:|---|",
    ]
    for name, target in (("drill RTO", "30 m"), ("drill RPO", "≤ 60 s")):
        if name in bench.results:
            values = bench.results[name]
            lines.append(
                f"| {name} | {statistics.median(values):.1f} | {max(values):.1f} | {target} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-drills", action="store_true")
    options = parser.parse_args()
    compileall.compile_dir(Path(package.__file__).parent, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="verger-bench-", dir="/tmp"))
    bench = Bench(work, options.scale, options.runs)
    try:
        bench.prepare()
        for index in range(options.runs):
            print(f"round {index + 1} of {options.runs}", flush=True)
            bench.physical_round(index)
            bench.logical_round(index)
        if not options.skip_drills:
            bench.drills()
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    text = table(bench)
    print(text)
    out = ROOT / "bench" / "results" / "backup.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
