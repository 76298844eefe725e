"""Benchmark of the staging refresh: masking speed against pynonymizer, and a whole refresh.

A production database of ``--members`` members and ``--messages`` messages
(1 million and 5 million by default) is generated inside PostgreSQL with
generate_series: names (some non-ASCII), national-format phone numbers,
mixed-case emails, and message bodies quoting a phone and an email. Then,
in the same run and on identical copies (``CREATE DATABASE ... TEMPLATE``):

- verger builds a masked copy of its copy, the way a refresh does: schema
  without indexes, every table streamed through the masks (members: name,
  phone, email; messages: to_phone, and body with its embedded phones and
  emails replaced) while a second process fingerprints the originals for
  the leak scan, then indexes, keys and ANALYZE;
- pynonymizer (installed from PyPI into ``bench/.pynonymizer``, pinned, never
  a dependency of verger) anonymizes the same columns with its nearest
  strategies (name, phone_number, unique_email, paragraph; it cannot replace
  what is embedded in text, so it rewrites the whole body) in place, with
  its ``ANONYMIZE_DB`` step alone;
- a whole ``verger staging refresh --snapshot`` runs once: snapshot, guard,
  masking, leak scan, swap.

Each masking figure is the median of ``--runs`` runs, the two tools taking
turns; rows/s is the rows of the masked tables over that time. The table is
printed and written to bench/results/staging.md.

    python bench/staging_bench.py --members 1000000 --messages 5000000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from verger.config import load_config
from verger.config.staging import Staging
from verger.staging.catalog import read_tables
from verger.staging.fakes import Faker
from verger.staging.mask import build_masked
from verger.staging.plan import make_plan
from verger.staging.refresh import refresh
from verger.state import open_store

ROOT = Path(__file__).resolve().parent
SERVER = os.environ.get("VERGER_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432/")
PYNONYMIZER = "pynonymizer==2.5.0"
VENV = ROOT / ".pynonymizer"
SALT = "benchmark salt, not a secret at all"

SCHEMA = """
CREATE TABLE churches (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE members (
    id serial PRIMARY KEY,
    church_id int NOT NULL REFERENCES churches(id),
    full_name varchar(80) NOT NULL,
    phone varchar(20),
    email text
);
CREATE TABLE messages (
    id serial PRIMARY KEY,
    member_id int NOT NULL REFERENCES members(id),
    to_phone text NOT NULL,
    body text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
);
"""

# Phone of member g: area 200-899, exchange 600-899 (never 555), line 0000-9999.
AREA = "(200 + {g} % 700)"
EXCHANGE = "(600 + ({g} / 700) % 300)"
LINE = "lpad(({g} % 10000)::text, 4, '0')"

FILL = """
INSERT INTO churches (name) SELECT 'Church ' || g FROM generate_series(1, 100) g;
INSERT INTO members (church_id, full_name, phone, email)
SELECT 1 + g % 100,
       (ARRAY['Anna', 'José', 'Zoë', 'Łukasz', 'Mary', 'John', 'Wei'])[1 + g % 7]
         || ' ' || (ARRAY['Smith', 'Núñez', 'Ångström', 'Okafor', 'Lee'])[1 + g % 5]
         || ' ' || g,
       CASE WHEN g % 20 = 0 THEN NULL ELSE
       '(' || {area} || ') ' || {exchange} || '-' || {line} END,
       (ARRAY['Member', 'MEMBER', 'member'])[1 + g % 3] || g || '@Mail.Example'
  FROM generate_series(1, {members}) g;
INSERT INTO messages (member_id, to_phone, body)
SELECT 1 + g % {members},
       '+1' || {area_m} || {exchange_m} || {line_m},
       CASE WHEN g % 3 = 0 THEN 'Call me on ' || {area_m} || '-' || {exchange_m} || '-'
              || {line_m} || ' or mail member' || (1 + g % {members}) || '@mail.example'
            ELSE 'See you on Sunday at ' || (g % 12 + 1) || ' o''clock, bring a friend'
       END
  FROM generate_series(1, {messages}) g;
"""

MASK = {
    "members.full_name": "name",
    "members.phone": "phone",
    "members.email": "email",
    "messages.to_phone": "phone",
    "messages.body": "text",
}
KEEP = [
    "churches.id",
    "churches.name",
    "members.id",
    "members.church_id",
    "messages.id",
    "messages.member_id",
    "messages.sent_at",
]
STRATEGY = """\
tables:
  members:
    columns:
      full_name: name
      phone: phone_number
      email: unique_email
  messages:
    columns:
      to_phone: phone_number
      body: paragraph
"""


def admin(statement: str | sql.Composable) -> None:
    with psycopg.connect(SERVER + "postgres", autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def create(name: str, template: str | None = None) -> None:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    admin(query)


def drop(name: str) -> None:
    admin(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def fill(name: str, members: int, messages: int) -> None:
    member = f"(1 + g % {members})"
    script = FILL.format(
        members=members,
        messages=messages,
        area=AREA.format(g="g"),
        exchange=EXCHANGE.format(g="g"),
        line=LINE.format(g="g"),
        area_m=AREA.format(g=member),
        exchange_m=EXCHANGE.format(g=member),
        line_m=LINE.format(g=member),
    )
    with psycopg.connect(SERVER + name, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(script)
        conn.execute("VACUUM ANALYZE")


def install_pynonymizer() -> Path:
    program = VENV / "bin" / "pynonymizer"
    if not program.exists():
        print(f"installing {PYNONYMIZER} into {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", PYNONYMIZER], check=True
        )
    return program


def verger_mask(name: str) -> float:
    """Seconds to build a masked copy of ``name`` (schema, masked rows, indexes)."""
    section = Staging(salt=SALT, mask=MASK, keep=KEEP)  # type: ignore[arg-type]
    url, target = SERVER + name, f"{name}_masked"
    create(target)
    try:
        started = time.monotonic()
        with psycopg.connect(url) as conn:
            plan = make_plan(read_tables(conn), section)
            faker = Faker(SALT, "US")
            build_masked(conn, url, None, SERVER + target, plan, faker, quiet)
        return time.monotonic() - started
    finally:
        drop(target)


def quiet(done: int, total: int) -> None:
    return None


def pynonymizer_mask(program: Path, name: str, strategy: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [
            str(program),
            "--db-type",
            "postgres",
            "--db-host",
            "127.0.0.1",
            "--db-user",
            "postgres",
            "--db-name",
            name,
            "--strategy",
            str(strategy),
            "--only-step",
            "ANONYMIZE_DB",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PGPASSWORD": ""},
    )
    return time.monotonic() - started


def whole_refresh(source: str, folder: Path) -> dict[str, float]:
    target = f"{source}_stg"
    create(target)
    config = folder / "verger.yml"
    config.write_text(
        "app: bench\nstart: 'true'\nenvironments:\n  staging: {listen: '127.0.0.1:1'}\n"
        f"databases:\n  production: {SERVER}{source}\n  staging: {SERVER}{target}\n"
        f"staging:\n  salt: {SALT}\n  environment: null\n"
        f"  mask: {json.dumps(MASK)}\n  keep: {json.dumps(KEEP)}\n"
    )
    loaded = load_config(config)
    store = open_store(".verger/state.db", folder)
    try:
        outcome = refresh(loaded, store, use_snapshot=True)
    finally:
        store.close()
        for name in (target, f"{target}_previous"):
            drop(name)
    return {"seconds": outcome.seconds, "rows": outcome.rows_masked}


def table(
    args: argparse.Namespace,
    ours: list[float],
    theirs: list[float],
    whole: dict[str, float],
) -> str:
    rows = args.members + args.messages
    a, b = statistics.median(ours), statistics.median(theirs)
    return "\n".join(
        [
            f"Staging benchmark: {args.members:,} members and {args.messages:,} "
            f"messages ({rows:,} rows masked), median of {args.runs} runs; "
            f"{os.cpu_count()} cores shared with other work.",
            "",
            "| masking | median s | rows/s | vs pynonymizer |",
            "|---|---|---|---|",
            f"| verger | {a:.1f} | {rows / a:,.0f} | {b / a:.2f}x faster |",
            f"| {PYNONYMIZER} | {b:.1f} | {rows / b:,.0f} | 1.00x |",
            "",
            "| whole refresh (snapshot, guard, mask, leak scan, swap) | s | rows/s |",
            "|---|---|---|",
            f"| verger staging refresh --snapshot | {whole['seconds']:.1f} "
            f"| {rows / whole['seconds']:,.0f} |",
            "",
            "pynonymizer updates the columns in place from a seed table and "
            "rewrites whole message bodies; verger writes a new copy with its "
            "indexes and keys, replaces the phones and emails inside bodies, "
            "keeps fakes consistent across tables and fingerprints every "
            "original for the leak scan. Runs: "
            + ", ".join(f"{x:.1f}s" for x in ours)
            + " (verger); "
            + ", ".join(f"{x:.1f}s" for x in theirs)
            + " (pynonymizer).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    program = install_pynonymizer()
    source = f"vbench_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="verger-staging-bench-"))
    strategy = work / "strategy.yml"
    strategy.write_text(STRATEGY)
    ours: list[float] = []
    theirs: list[float] = []
    try:
        print(
            f"generating {args.members:,} members, {args.messages:,} messages ...",
            flush=True,
        )
        create(source)
        fill(source, args.members, args.messages)
        for run in range(args.runs):
            for tool in ("verger", "pynonymizer"):
                copy = f"{source}_{tool}_{run}"
                create(copy, source)
                try:
                    if tool == "verger":
                        ours.append(verger_mask(copy))
                    else:
                        theirs.append(pynonymizer_mask(program, copy, strategy))
                finally:
                    drop(copy)
                print(
                    f"run {run + 1} {tool}: {(ours if tool == 'verger' else theirs)[-1]:.1f}s",
                    flush=True,
                )
        whole = whole_refresh(source, work)
    finally:
        drop(source)
        shutil.rmtree(work, ignore_errors=True)
    text = table(args, ours, theirs, whole)
    print(text)
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "staging.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
