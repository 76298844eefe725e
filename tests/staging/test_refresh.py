"""A refresh on real PostgreSQL: masked, consistent, swapped in, and refused when unsafe."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from conftest import SERVER

from verger.config import load_config
from verger.errors import BusyError, DeployError
from verger.staging import (
    LeakError,
    MaskError,
    RefreshError,
    RestartError,
    UnclassifiedError,
    mask,
    refresh,
)


def _phone(value: str) -> str:
    parsed = phonenumbers.parse(value, "US")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _fiction(e164: str) -> bool:
    return re.fullmatch(r"\+1[2-9]\d\d55501\d\d", e164) is not None


def test_refresh_swaps_in_a_masked_copy_and_keeps_the_old_one(site):
    """After a refresh, staging holds production's rows, masked, and the old copy is _previous."""
    outcome = refresh(site.loaded(), site.store(), use_snapshot=True)

    counts = site.sql("SELECT count(*) FROM members", site.staging_url)
    assert counts == [(300,)]
    assert outcome.rows_masked > 300
    assert site.sql("SELECT note FROM marker", site.staging_url + "_previous") == [
        ("old copy",)
    ]
    text = site.sql("SELECT string_agg(m::text, ' ') FROM members m", site.staging_url)
    assert "church.org" not in text[0][0].lower()
    assert "555-10" not in text[0][0]
    assert not site.sql(
        "SELECT 1 FROM members WHERE full_name LIKE ANY (ARRAY['%Zoë%', '%José%', "
        "'%山田%', '%Anna Smith%'])",
        site.staging_url,
    )


def test_emails_land_on_reserved_domains_and_phones_in_fiction_ranges(site):
    """Every masked email is on example.com/net/org and every phone is a 555-01xx number."""
    refresh(site.loaded(), site.store(), use_snapshot=True)

    emails = site.sql("SELECT email FROM members WHERE email <> ''", site.staging_url)
    assert emails and all(
        re.fullmatch(r"u[0-9a-f]{16}@example\.(com|net|org)", e) for (e,) in emails
    )
    phones = site.sql("SELECT phone FROM members WHERE phone <> ''", site.staging_url)
    assert phones and all(_fiction(_phone(p)) for (p,) in phones)
    assert all(re.fullmatch(r"\(\d{3}\) 555-01\d\d", p) for (p,) in phones)


def test_one_phone_and_one_email_map_to_one_fake_in_every_table(site):
    """A phone and an email, in any format or case, get one fake in members and messages."""
    refresh(site.loaded(), site.store(), use_snapshot=True)

    rows = site.sql(
        "SELECT m.phone, m.email, g.to_phone, g.body FROM members m"
        " JOIN messages g ON g.member_id = m.id"
        " WHERE m.phone <> '' AND m.email <> '' AND g.body <> '' AND m.id <> 4",
        site.staging_url,
    )
    assert len(rows) > 250
    for phone, email, to_phone, body in rows:
        assert _phone(to_phone) == _phone(phone)
        found = [
            _phone(m.raw_string)
            for m in phonenumbers.PhoneNumberMatcher(body, "US", leniency=0)
        ]
        assert _phone(phone) in found, body
        assert email.strip().lower() in body.lower(), body


def test_unique_pair_of_church_and_phone_stays_unique(site):
    """The unique constraint on (church_id, phone) holds, and equal numbers stay equal."""
    refresh(site.loaded(), site.store(), use_snapshot=True)

    pairs = site.sql(
        "SELECT count(*), count(DISTINCT (church_id, phone)) FROM members"
        " WHERE phone IS NOT NULL",
        site.staging_url,
    )
    assert pairs[0][0] == pairs[0][1]
    same = site.sql("SELECT phone FROM members WHERE id IN (2, 4)", site.staging_url)
    assert same[0] == same[1]
    assert site.sql(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'u'"
        " AND conrelid = 'members'::regclass",
        site.staging_url,
    ) == [(1,)]


def test_self_referencing_foreign_key_holds(site):
    """Every members.referred_by still names a member, and as in production."""
    refresh(site.loaded(), site.store(), use_snapshot=True)

    query = "SELECT id, referred_by FROM members ORDER BY id"
    assert site.sql(query, site.staging_url) == site.sql(query)
    assert site.sql(
        "SELECT count(*) FROM members m LEFT JOIN members r ON r.id = m.referred_by"
        " WHERE m.referred_by IS NOT NULL AND r.id IS NULL",
        site.staging_url,
    ) == [(0,)]


def test_nulls_stay_null_and_empty_strings_stay_empty(site):
    """NULL and '' in masked columns come through unchanged."""
    refresh(site.loaded(), site.store(), use_snapshot=True)

    query = (
        "SELECT id, phone IS NULL, phone = '', email IS NULL, email = ''"
        " FROM members ORDER BY id"
    )
    assert site.sql(query, site.staging_url) == site.sql(query)
    assert site.sql(
        "SELECT count(*) FROM messages WHERE body = ''", site.staging_url
    ) == [(1,)]


def test_non_ascii_names_are_replaced_within_the_column_width(site):
    """Names in any script become fakes of the same word count that fit varchar(40)."""
    refresh(site.loaded(), site.store(), use_snapshot=True)

    before = dict(site.sql("SELECT id, full_name FROM members"))
    after = dict(site.sql("SELECT id, full_name FROM members", site.staging_url))
    for key, name in after.items():
        assert name != before[key]
        assert 0 < len(name) <= 40
        assert len(name.split()) == min(3, len(before[key].split()))


def test_dates_move_by_at_most_the_configured_days(site):
    """date_noise moves each birth date by 1 to 10 days."""
    refresh(site.loaded(), site.store(), use_snapshot=True)

    before = dict(site.sql("SELECT id, born FROM members"))
    after = dict(site.sql("SELECT id, born FROM members", site.staging_url))
    moved = [abs((after[k] - before[k]).days) for k in before]
    assert all(1 <= days <= 10 for days in moved)


def test_same_salt_gives_the_same_copy_every_night(site):
    """Two refreshes from the same production give identical masked values."""
    query = "SELECT id, full_name, phone, email FROM members ORDER BY id"
    refresh(site.loaded(), site.store(), use_snapshot=True)
    first = site.sql(query, site.staging_url)
    refresh(site.loaded(), site.store(), use_snapshot=True)

    assert site.sql(query, site.staging_url) == first


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1:5432",
        "localhost:5432",
        "127.0.0.1:05432",
        "127.0.0.1:5432,127.0.0.1:5432",
        "db.invalid:5432",
    ],
)
def test_refused_when_the_target_is_production(site, spelling):
    """A staging URL reaching production's server and database is refused before any
    change, however the server is spelled: the servers are asked who they are."""
    loaded = site.loaded()
    same = site.production_url.replace("127.0.0.1:5432", spelling)
    if spelling.startswith("db.invalid"):
        same += "?hostaddr=127.0.0.1"
    from verger.config import load_config

    loaded = load_config(site.write_config(staging_url=same))

    with pytest.raises(RefreshError, match="is the production database"):
        refresh(loaded, site.store(), use_snapshot=True)
    assert site.sql("SELECT count(*) FROM members WHERE email LIKE '%hurch.ORG%'") == [
        (len(site.sql("SELECT 1 FROM members WHERE email LIKE '%hurch.ORG%'")),)
    ]
    assert not [n for n in site.databases() if "_refresh_" in n]


def test_refused_when_the_target_is_another_configured_database(site):
    """A staging URL naming another database under databases: is refused too."""
    path = site.write_config()
    text = path.read_text().replace(
        "databases:\n", f"databases:\n  reports: {site.staging_url}\n"
    )
    path.write_text(text)
    from verger.config import load_config

    with pytest.raises(RefreshError, match=r"also databases\.reports"):
        refresh(load_config(path), site.store(), use_snapshot=True)


def test_new_column_in_production_stops_the_refresh(site):
    """A column added to production since the last refresh is named, and staging is untouched."""
    site.sql("ALTER TABLE members ADD COLUMN nickname text")
    store = site.store()

    with pytest.raises(UnclassifiedError) as raised:
        refresh(site.loaded(), store, use_snapshot=True)

    assert "members.nickname" in raised.value.message
    assert "verger staging classify" in raised.value.hint
    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    assert not [n for n in site.databases() if "_refresh_" in n]
    assert store.refreshes(site.staging)[0].status == "failed"


def test_a_production_value_in_a_kept_column_fails_the_refresh(site):
    """A phone number hidden in a kept column is found, the copy dropped, staging kept."""
    site.sql("ALTER TABLE churches ADD COLUMN contact text")
    site.sql("UPDATE churches SET contact = 'ring 415 555 1003 after 6pm' WHERE id = 2")
    site.keep.append("churches.contact")
    store = site.store()

    with pytest.raises(LeakError, match=r"churches\.contact"):
        refresh(site.loaded(), store, use_snapshot=True)

    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    assert not [n for n in site.databases() if "_refresh_" in n]
    row = store.refreshes(site.staging)[0]
    assert (row.status, row.leaks) == ("failed", 1)


def test_a_canary_that_gets_through_is_reported(site):
    """A canary value planted in production and kept by mistake fails the refresh."""
    site.sql("UPDATE churches SET name = 'Canary Chapel ZX-4471' WHERE id = 3")
    site.canaries = ["zx-4471"]

    with pytest.raises(LeakError, match="canary 'zx-4471'"):
        refresh(site.loaded(), site.store(), use_snapshot=True)


def test_masking_a_key_column_is_refused(site):
    """A rule on a foreign key column is refused before anything is masked."""
    site.keep.remove("members.referred_by")
    site.mask["members.referred_by"] = "hash"

    with pytest.raises(
        MaskError, match=r"members\.referred_by is part of a primary or foreign key"
    ):
        refresh(site.loaded(), site.store(), use_snapshot=True)


def test_unique_column_larger_than_the_fiction_range_is_refused(site):
    """15,001 distinct UK numbers in a unique column cannot all get fiction numbers."""
    site.sql(
        "CREATE TABLE contacts (id serial PRIMARY KEY, phone text UNIQUE);"
        " INSERT INTO contacts (phone) SELECT '+447911' || lpad(g::text, 6, '0')"
        " FROM generate_series(1, 15001) g"
    )
    site.mask["contacts.phone"] = "phone"
    site.keep.append("contacts.id")

    with pytest.raises(MaskError, match="holds only 15000 numbers") as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True)
    assert "hash" in raised.value.hint


def test_a_second_refresh_at_the_same_time_is_refused(site):
    """While one refresh holds the lock, another is refused naming the database."""
    from verger.backup.lock import exclusive

    loaded = site.loaded()
    with (
        exclusive(
            loaded.root / ".verger" / "staging" / site.staging, "staging refresh"
        ),
        pytest.raises(BusyError, match=site.staging),
    ):
        refresh(loaded, site.store(), use_snapshot=True)


def test_a_unique_column_that_masking_would_break_fails_cleanly(site):
    """Twenty one-letter codes hashed into one hex digit (sixteen values) collide:
    one error, staging kept."""
    site.sql(
        "CREATE TABLE logins (id serial PRIMARY KEY, code varchar(1) UNIQUE);"
        " INSERT INTO logins (code) SELECT chr(96 + g) FROM generate_series(1, 20) g"
    )
    site.mask["logins.code"] = "hash"
    site.keep.append("logins.id")

    with pytest.raises(
        RefreshError, match="masking broke a unique constraint"
    ) as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True)

    assert "hash" in raised.value.hint
    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    assert not [n for n in site.databases() if "_refresh_" in n]


def test_every_other_rule_gives_values_valid_for_their_column(site):
    """hash, fixed, null, whole text and number noise fit their columns' types and lengths."""
    site.sql(
        "CREATE TABLE accounts (id serial PRIMARY KEY, token varchar(12) UNIQUE,"
        " pin char(4) NOT NULL, ip inet, bio text, credits integer,"
        " balance numeric(8, 2));"
        " INSERT INTO accounts (token, pin, ip, bio, credits, balance)"
        " SELECT 'tok-' || g, lpad(g::text, 4, '0'), '10.0.0.1',"
        " 'Born in Łódź, reach me at ola' || g || '@mail.example', 100 * g, 10.5 * g"
        " FROM generate_series(1, 50) g"
    )
    site.mask.update(
        {
            "accounts.token": "hash",
            "accounts.pin": {"rule": "fixed", "value": "0000"},
            "accounts.ip": "null",
            "accounts.bio": {"rule": "text", "whole": True},
            "accounts.credits": {"rule": "number_noise", "ratio": 0.2},
            "accounts.balance": "number_noise",
        }
    )
    site.keep.append("accounts.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    before = {r[0]: r for r in site.sql("SELECT * FROM accounts")}
    for row in site.sql("SELECT * FROM accounts", site.staging_url):
        _, token, pin, ip, bio, credits, balance = row
        original = before[row[0]]
        assert re.fullmatch(r"[0-9a-f]{12}", token)
        assert (pin, ip) == ("0000", None)
        assert "@" not in bio and "Łódź" not in bio and len(bio) <= len(original[4])
        assert 0.8 * original[5] <= credits <= 1.2 * original[5]
        assert float(original[6]) * 0.9 <= float(balance) <= float(original[6]) * 1.1
    tokens = site.sql("SELECT count(DISTINCT token) FROM accounts", site.staging_url)
    assert tokens == [(50,)]


def test_a_failed_restart_after_the_swap_fails_the_refresh(site, receiver):
    """The copy is swapped in, but a failed redeploy is recorded and reported as a failure."""
    site.extra = f"notify:\n  webhooks: ['{receiver.url}']"

    def restart() -> str:
        raise DeployError(
            "the redeploy of v1 to staging did not pass: GET /smoke answered 500",
            "the release that was live keeps serving",
        )

    with pytest.raises(RestartError, match="restarting staging failed") as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True, restart=restart)

    assert raised.value.exit_code == 7
    assert "\n" not in raised.value.message and "verger deploy" in raised.value.hint
    assert site.sql("SELECT count(*) FROM members", site.staging_url) == [(300,)]
    row = site.store().refreshes(site.staging)[0]
    assert (row.status, row.leaks) == ("restart_failed", 0)
    assert "GET /smoke answered 500" in row.detail
    assert [body["event"] for body in receiver.received] == ["refresh_failed"]
    assert "the masked copy is in place" in receiver.received[0]["reason"]


def test_numbers_of_other_countries_stay_in_their_country_in_an_unused_range(site):
    """French, German and Indian numbers become possible, unallocated numbers there."""
    site.sql(
        "CREATE TABLE abroad (id serial PRIMARY KEY, phone text UNIQUE, note text);"
        " INSERT INTO abroad (phone, note) VALUES"
        " ('+33 6 12 34 56 78', 'ring +33 6 12 34 56 78 soon'),"
        " ('+49 1512 3456789', 'none'), ('+91 98765 43210', 'none')"
    )
    site.mask.update({"abroad.phone": "phone", "abroad.note": "text"})
    site.keep.append("abroad.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    rows = site.sql("SELECT phone, note FROM abroad ORDER BY id", site.staging_url)
    for (fake, _), region in zip(rows, ["FR", "DE", "IN"], strict=True):
        parsed = phonenumbers.parse(fake)
        assert phonenumbers.region_code_for_country_code(parsed.country_code) == region
        assert phonenumbers.is_possible_number(parsed)
        assert not phonenumbers.is_valid_number(parsed)
    assert rows[0][1] == f"ring {rows[0][0]} soon"


def test_a_text_key_and_its_references_masked_alike_still_join(site):
    """An email primary key and the foreign key naming it, both masked, still join."""
    site.sql(
        "CREATE TABLE logins (email text PRIMARY KEY, plan text);"
        " CREATE TABLE sessions (id serial PRIMARY KEY,"
        " login text NOT NULL REFERENCES logins(email));"
        " INSERT INTO logins SELECT 'User' || g || '@mail.example', 'free'"
        " FROM generate_series(1, 50) g;"
        " INSERT INTO sessions (login) SELECT 'User' || (1 + g % 50) || '@mail.example'"
        " FROM generate_series(1, 200) g"
    )
    site.mask.update({"logins.email": "email", "sessions.login": "email"})
    site.keep += ["logins.plan", "sessions.id"]

    refresh(site.loaded(), site.store(), use_snapshot=True)

    staging = site.staging_url
    joined = "SELECT count(*) FROM sessions s JOIN logins l ON l.email = s.login"
    assert site.sql(joined, staging) == [(200,)]
    emails = [row[0] for row in site.sql("SELECT email FROM logins", staging)]
    assert len(set(emails)) == 50 and all("@example." in e for e in emails)
    keys = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'sessions'::regclass"
    assert site.sql(keys + " AND contype = 'f'", staging) == [(1,)]


def test_two_processes_mask_alike_when_no_phone_column_is_unique(
    site, monkeypatch, caplog
):
    """Split between two processes, a phone keeps one fake everywhere; leaks are found."""
    monkeypatch.setattr(mask, "PARALLEL_ROWS", 0)
    site.sql("ALTER TABLE members DROP CONSTRAINT members_church_id_phone_key")
    site.sql("ALTER TABLE churches ADD COLUMN contact text")
    site.sql("UPDATE churches SET contact = 'ring 415 555 1003 after 6pm' WHERE id = 2")
    site.keep.append("churches.contact")
    caplog.set_level("INFO", logger="verger.staging")

    with pytest.raises(LeakError, match=r"churches\.contact"):
        refresh(site.loaded(), site.store(), use_snapshot=True)
    site.sql("UPDATE churches SET contact = NULL")
    refresh(site.loaded(), site.store(), use_snapshot=True)

    assert "rows of messages in a process of its own" in caplog.text
    rows = site.sql(
        "SELECT m.phone, g.to_phone, g.body FROM members m"
        " JOIN messages g ON g.member_id = m.id"
        " WHERE m.phone <> '' AND g.body <> '' AND m.id <> 4",
        site.staging_url,
    )
    assert len(rows) > 250
    for phone, to_phone, body in rows:
        assert _phone(to_phone) == _phone(phone)
        assert _fiction(_phone(phone))
        found = [
            _phone(m.raw_string)
            for m in phonenumbers.PhoneNumberMatcher(body, "US", leniency=0)
        ]
        assert _phone(phone) in found, body


def test_a_table_cut_between_two_processes_is_masked_as_by_one(
    site, monkeypatch, caplog
):
    """The largest table, cut between the two masking processes, gets each row once,
    with the fakes one process gives it."""
    monkeypatch.setattr(mask, "PARALLEL_ROWS", 0)
    site.sql("ALTER TABLE members DROP CONSTRAINT members_church_id_phone_key")
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body)"
        " SELECT 1 + g % 300, '+1415555' || (1000 + g % 300),"
        " 'Ring 415-555-' || (1000 + g % 300) || ' or Member' || (1 + g % 300)"
        " || '@church.org' FROM generate_series(1, 3000) g;"
        " ANALYZE"
    )
    rows = "SELECT id, member_id, to_phone, body FROM messages ORDER BY id"
    monkeypatch.setattr(mask, "SPLIT_ROWS", 10**9)
    refresh(site.loaded(), site.store(), use_snapshot=True)
    whole = site.sql(rows, site.staging_url)
    caplog.set_level("INFO", logger="verger.staging")

    monkeypatch.setattr(mask, "SPLIT_ROWS", 0)
    refresh(site.loaded(), site.store(), use_snapshot=True)

    assert "Masked 3301 rows of messages shared by two processes" in caplog.text
    assert len(whole) == 3301
    assert site.sql(rows, site.staging_url) == whole


def test_the_leak_scan_cut_in_two_finds_what_one_scan_finds(site, monkeypatch):
    """Leaks in the first and last rows of a table the scan cuts in two are all found."""
    from verger.staging import scan

    site.sql(
        "ALTER TABLE messages ADD COLUMN note text;"
        " INSERT INTO messages (member_id, to_phone, body)"
        " SELECT 1 + g % 300, '+14155551001', 'See you' FROM generate_series(1, 3000) g;"
        " UPDATE messages SET note = (SELECT email FROM members WHERE id = 7)"
        " WHERE id IN (SELECT min(id) FROM messages UNION SELECT max(id) FROM messages);"
        " ANALYZE"
    )
    site.keep.append("messages.note")
    told = []
    for rows in (10**9, 0):
        monkeypatch.setattr(scan, "SPLIT_ROWS", rows)
        with pytest.raises(LeakError, match=r"messages\.note") as caught:
            refresh(site.loaded(), site.store(), use_snapshot=True)
        told.append(caught.value.message)

    assert told[0] == told[1]
    assert "found 2 production values" in told[0]


def test_tabs_newlines_and_backslashes_survive_the_stream(site):
    """Masked and kept text with tabs, newlines and backslashes arrives as it was."""
    site.sql(
        "CREATE TABLE notes (id serial PRIMARY KEY, note text, label text);"
        " INSERT INTO notes (note, label) VALUES"
        " (E'line one\\n\\tmail Anna@Church.ORG \\\\ done', E'a\\tb\\\\c\\nd'),"
        " (E'\\\\N', E'\\\\N'), (NULL, NULL)"
    )
    site.mask["notes.note"] = "text"
    site.keep += ["notes.id", "notes.label"]

    refresh(site.loaded(), site.store(), use_snapshot=True)

    rows = site.sql("SELECT note, label FROM notes ORDER BY id", site.staging_url)
    note, label = rows[0]
    assert re.fullmatch(r"line one\n\tmail u[0-9a-f]{16}@example\.\w+ \\ done", note)
    assert label == "a\tb\\c\nd"
    assert rows[1:] == [("\\N", "\\N"), (None, None)]


def test_refused_when_a_refresh_would_rename_production():
    """Production named like the copy a refresh keeps (<staging>_previous) on the same
    server is refused: the next swap would drop it."""
    from verger.staging.databases import refuse_production

    server = "postgresql://postgres@localhost:5432/"
    with pytest.raises(RefreshError, match="renames or drops"):
        refuse_production(server + "church_stg", server + "church_stg_previous", {})
    refuse_production(server + "church_stg", server + "church_prod", {})


@pytest.mark.parametrize("name", ["postgres", "template0", "template1"])
def test_refused_when_staging_is_a_system_database(name):
    """A staging target that is one of PostgreSQL's own databases is refused before
    anything is copied: renaming template1 aside would make every later
    CREATE DATABASE copy staging's tables."""
    from verger.staging.databases import refuse_production

    server = "postgresql://postgres@localhost:5432/"
    with pytest.raises(RefreshError, match="keeps for itself"):
        refuse_production(server + name, server + "church_prod", {})


def test_refused_when_the_salt_names_an_unset_variable(site, monkeypatch):
    """staging.salt: ${VAR} with VAR unset is refused, naming the variable, instead
    of masking with the literal text, which anyone reading verger.yml knows."""
    from verger.staging import salt_of

    monkeypatch.delenv("VERGER_TEST_UNSET_SALT", raising=False)
    section = site.loaded().config.staging.model_copy(
        update={"salt": "${VERGER_TEST_UNSET_SALT}"}
    )
    with pytest.raises(RefreshError, match=r"names \$\{VERGER_TEST_UNSET_SALT\}"):
        salt_of(section)


def test_a_leaked_value_counts_once_and_the_message_says_how_many(site):
    """A leaked value counts once, and the leak error tells each kind of finding
    with how many values it covers, so the count and the list agree."""
    site.sql(
        "ALTER TABLE messages ADD COLUMN note text;"
        " UPDATE messages SET note = (SELECT email FROM members m WHERE m.id = member_id)"
        " WHERE id <= 40"
    )
    site.keep.append("messages.note")

    with pytest.raises(LeakError) as caught:
        refresh(site.loaded(), site.store(), use_snapshot=True)

    message = caught.value.message
    assert "found 40 production values" in message
    assert "messages.note: a production email (40 values)" in message
    assert "more" not in message


def test_a_staging_url_naming_its_database_by_option_is_never_written_live(site):
    """A staging URL whose dbname option names the database over its path builds
    the new copy in a database of its own: a leak leaves live staging untouched,
    and a clean refresh swaps the copy in under the option's name."""
    url = f"{SERVER}{site.prefix}_path?dbname={site.staging}&application_name=a%20b"
    site.sql("ALTER TABLE churches ADD COLUMN contact text")
    site.sql("UPDATE churches SET contact = 'ring 415 555 1003 after 6pm' WHERE id = 2")
    site.keep.append("churches.contact")

    with pytest.raises(LeakError):
        refresh(load_config(site.write_config(url)), site.store(), use_snapshot=True)
    assert site.sql("SELECT to_regclass('churches')", site.staging_url) == [(None,)]
    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]

    site.sql("UPDATE churches SET contact = NULL")
    refresh(load_config(site.write_config(url)), site.store(), use_snapshot=True)
    assert site.sql("SELECT count(*) FROM members", site.staging_url) == [(300,)]
    assert f"{site.prefix}_path" not in site.databases()
