"""Rules at the edges of their columns: types, widths, partitions and the scan."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from verger.staging import LeakError, MaskError, refresh
from verger.staging.classify import classify


def test_number_noise_stays_inside_its_columns_type(site):
    """Noise on values at the edge of numeric(5,2), smallint and bigint keeps them
    inside the type, rounded to the numeric's scale, a numeric without one keeps
    the original's digits after the point, and the refresh succeeds."""
    site.sql(
        "CREATE TABLE ledger (id serial PRIMARY KEY, balance numeric(5, 2),"
        " small smallint, big bigint, amount numeric);"
        " INSERT INTO ledger (balance, small, big, amount)"
        " SELECT sign * (999.99 - g / 100.0), sign * (32767 - g) - (sign < 0)::int,"
        "        sign * (9223372036854775807 - g), sign * (10 + g + 0.5)"
        "   FROM generate_series(0, 19) g, (VALUES (1), (-1)) s(sign)"
    )
    site.mask.update(
        {
            "ledger.balance": {"rule": "number_noise", "ratio": 0.0001},
            "ledger.small": {"rule": "number_noise", "ratio": 0.5},
            "ledger.big": {"rule": "number_noise", "ratio": 0.5},
            "ledger.amount": "number_noise",
        }
    )
    site.keep.append("ledger.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    rows = site.sql("SELECT balance, small, big, amount FROM ledger", site.staging_url)
    assert len(rows) == 40
    for balance, small, big, amount in rows:
        assert abs(balance) <= Decimal("999.99")
        assert balance == balance.quantize(Decimal("0.01"))
        assert -32768 <= small <= 32767
        assert -(2**63) <= big < 2**63
        assert amount.as_tuple().exponent == -1
    edges = site.sql(
        "SELECT count(*) FROM ledger WHERE small IN (-32768, 32767)", site.staging_url
    )
    assert edges[0][0] > 0


def test_a_masked_value_its_column_refuses_names_the_table_and_column(site):
    """A noised number its domain's check refuses fails the refresh naming the column,
    and staging keeps its old copy."""
    site.sql(
        "CREATE DOMAIN percent AS integer CHECK (VALUE BETWEEN 0 AND 100);"
        " CREATE TABLE scores (id serial PRIMARY KEY, score percent);"
        " INSERT INTO scores (score) SELECT g FROM generate_series(60, 100) g"
    )
    site.mask["scores.score"] = {"rule": "number_noise", "ratio": 0.5}
    site.keep.append("scores.id")

    with pytest.raises(MaskError, match=r"masking scores\.score ") as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True)

    assert "percent" in raised.value.message
    assert "scores.score" in raised.value.hint
    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]


def _accounts(site) -> None:
    site.sql(
        "CREATE TABLE accounts (id serial PRIMARY KEY, pin char(4) NOT NULL,"
        " old_pin text);"
        " INSERT INTO accounts (pin) SELECT CASE WHEN g % 3 = 0 THEN '0000'"
        " ELSE lpad(g::text, 4, '7') END FROM generate_series(1, 30) g"
    )
    site.keep.append("accounts.id")


def test_a_fixed_value_that_production_also_holds_is_no_leak_in_its_column(site):
    """{rule: fixed, value: "0000"} over production PINs that include 0000 refreshes
    cleanly: the config's own value is no production value left behind."""
    _accounts(site)
    site.mask["accounts.pin"] = {"rule": "fixed", "value": "0000"}
    site.keep.append("accounts.old_pin")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    pins = site.sql("SELECT DISTINCT pin FROM accounts", site.staging_url)
    assert pins == [("0000",)]


def test_a_production_value_equal_to_a_fixed_value_still_leaks_in_other_columns(
    site,
):
    """The fixed value is exempt only in its own column: a kept column holding the
    same production PIN still fails the refresh, naming that column."""
    _accounts(site)
    site.sql("UPDATE accounts SET old_pin = pin WHERE pin = '0000'")
    site.mask["accounts.pin"] = {"rule": "fixed", "value": "0000"}
    site.keep.append("accounts.old_pin")

    with pytest.raises(LeakError, match=r"accounts\.old_pin: a production value"):
        refresh(site.loaded(), site.store(), use_snapshot=True)


def test_a_fixed_value_longer_than_its_column_is_refused_up_front(site):
    """A fixed value that a char(4) column would cut is refused before anything is
    masked, naming the column and its width."""
    _accounts(site)
    site.mask["accounts.pin"] = {"rule": "fixed", "value": "123456"}
    site.keep.append("accounts.old_pin")

    with pytest.raises(MaskError, match=r"accounts\.pin is character\(4\)") as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True)

    assert "4 characters or fewer" in raised.value.hint
    assert not [n for n in site.databases() if "_refresh_" in n]


@pytest.mark.parametrize(
    ("declared", "rule", "offered", "not_offered"),
    [
        (
            "text",
            "date_noise",
            "email, phone, name, text, hash, fixed, null or keep",
            "number_noise",
        ),
        ("inet", "text", "fits inet: null or keep", "date_noise"),
        ("integer NOT NULL", "phone", "fits integer: number_noise or keep", "null"),
        ("bytea", "name", "fits bytea: hash, null or keep", "number_noise"),
    ],
)
def test_a_rule_for_another_type_is_refused_offering_the_rules_that_fit(
    site, declared, rule, offered, not_offered
):
    """The type-mismatch hint lists the rules that fit the column's own type."""
    site.sql(f"CREATE TABLE devices (id serial PRIMARY KEY, x {declared})")
    site.mask["devices.x"] = rule
    site.keep.append("devices.id")

    with pytest.raises(MaskError, match=rf"devices\.x is .*the {rule} rule") as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True)

    assert offered in raised.value.hint
    assert not_offered not in raised.value.hint


def test_hash_fits_a_bytea_column(site):
    """hash, offered for bytea, masks it: each value becomes its 32 hex digits as bytes."""
    site.sql(
        "CREATE TABLE photos (id serial PRIMARY KEY, data bytea);"
        " INSERT INTO photos (data) SELECT convert_to('Anna Smith ' || g, 'UTF8')"
        " FROM generate_series(1, 5) g"
    )
    site.mask["photos.data"] = "hash"
    site.keep.append("photos.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    rows = site.sql("SELECT convert_from(data, 'UTF8') FROM photos", site.staging_url)
    assert len(rows) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}", text) for (text,) in rows)


def test_classify_reads_json_and_arrays_and_warns_of_bytea(site):
    """classify samples json, jsonb and array columns in their text form, proposing
    null where they hold emails or names, and never keep for bytea."""
    site.sql(
        "CREATE TABLE profiles (id serial PRIMARY KEY, data jsonb, extra json,"
        " aliases text[], avatar bytea, settings jsonb, scan bytea NOT NULL);"
        " INSERT INTO profiles (data, extra, aliases, avatar, settings, scan)"
        " SELECT jsonb_build_object('contact', email),"
        "        json_build_object('who', json_build_object('full_name', full_name)),"
        "        ARRAY[email, 'x' || id || '@mail.example'],"
        "        convert_to(full_name, 'UTF8'), '{\"theme\": \"dark\"}', '\\x00'"
        "   FROM members WHERE email <> ''"
    )
    section = site.loaded().config.staging

    proposals = {
        p.column: p
        for p in classify(site.production_url, section, "US")
        if p.column.startswith("profiles.")
    }

    for column in ("profiles.data", "profiles.extra", "profiles.aliases"):
        assert proposals[column].rule == "null", proposals[column]
        assert "only rule that fits" in proposals[column].reason
    assert "'full_name' field" in proposals["profiles.extra"].reason
    assert proposals["profiles.avatar"].rule == "null"
    assert proposals["profiles.scan"].rule == "hash"
    assert "cannot read bytea" in proposals["profiles.scan"].reason
    assert proposals["profiles.settings"].rule == "keep"


def test_a_rule_on_a_partitioned_table_masks_its_partitions(site):
    """events.note: text masks every partition's notes, a partition's own rule wins,
    and the kept events.id keeps each partition's ids."""
    site.sql(
        "CREATE TABLE events (id int NOT NULL, note text) PARTITION BY RANGE (id);"
        " CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (0) TO (150);"
        " CREATE TABLE events_b PARTITION OF events FOR VALUES FROM (150) TO (1000);"
        " INSERT INTO events SELECT id, 'Write to ' || email FROM members"
        "  WHERE email <> ''"
    )
    site.mask["events.note"] = "text"
    site.mask["events_b.note"] = {"rule": "fixed", "value": "(removed)"}
    site.keep.append("events.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    masked = site.sql("SELECT note FROM events_a", site.staging_url)
    assert len(masked) > 100
    assert all("church.org" not in note.lower() for (note,) in masked)
    assert all(note.startswith("Write to ") for (note,) in masked)
    removed = site.sql("SELECT DISTINCT note FROM events_b", site.staging_url)
    assert removed == [("(removed)",)]
    ids = "SELECT id FROM events ORDER BY id"
    assert site.sql(ids, site.staging_url) == site.sql(ids)
