"""Email fakes in unique columns on real PostgreSQL: distinct, and within the width."""

from __future__ import annotations

import pytest

from verger.staging import MaskError, refresh
from verger.staging.fakes import EMAIL_WIDTH, Faker

# The tests' salt (conftest.SALT), under which these two cut fakes meet.
SALT = "a-test-salt-of-more-than-16-characters"
MEETING = ["m72557@x.org", "m122835@x.org"]


def _accounts(site, width: str, values: list[str]) -> None:
    rows = ", ".join(f"({index}, '{value}')" for index, value in enumerate(values))
    site.sql(
        f"CREATE TABLE accounts (id int PRIMARY KEY, email {width} NOT NULL);"
        " CREATE UNIQUE INDEX accounts_email ON accounts (email);"
        f" INSERT INTO accounts VALUES {rows}"
    )
    site.mask["accounts.email"] = "email"
    site.keep.append("accounts.id")


def test_emails_differing_only_in_case_stay_apart_under_a_unique_index(site):
    """A@x.org, a@x.org and ' a@x.org' under one unique index get three fakes and
    the index builds; text quoting any of them gets the fake of the one written
    as its normal form (a@x.org), as a plain email column holding any would."""
    _accounts(site, "text", ["A@x.org", "a@x.org", " a@x.org", "b@x.org"])
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body)"
        " VALUES (1, '+14155551001', 'mail a@x.org or A@X.ORG')"
    )

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fakes = dict(site.sql("SELECT id, email FROM accounts", site.staging_url))
    assert len(set(fakes.values())) == 4
    body = site.sql(
        "SELECT body FROM messages WHERE body LIKE 'mail %'", site.staging_url
    )
    assert body == [(f"mail {fakes[1]} or {fakes[1]}",)]
    index = site.sql(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'accounts_email'",
        site.staging_url,
    )
    assert index and "UNIQUE" in index[0][0]


def test_fakes_cut_to_a_narrow_unique_column_stay_distinct(site):
    """In a varchar(21) unique column, two addresses whose cut fakes would be
    alike get distinct fakes, each 21 characters at most, and the index builds."""
    faker = Faker(SALT, "US")
    assert len({faker.email(real, EMAIL_WIDTH) for real in MEETING}) == 1
    _accounts(site, f"varchar({EMAIL_WIDTH})", [*MEETING, "other@x.org"])

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fakes = [row[0] for row in site.sql("SELECT email FROM accounts", site.staging_url)]
    assert len(set(fakes)) == 3
    assert all(len(fake) <= EMAIL_WIDTH and "@example." in fake for fake in fakes)


def test_a_column_too_narrow_for_a_fake_email_is_refused_before_copying(site):
    """A varchar(12) email column is refused in one line naming it and the width
    a fake needs; staging keeps its old copy."""
    _accounts(site, "varchar(12)", ["a@x.org"])

    with pytest.raises(MaskError) as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True)

    assert raised.value.message == (
        f"accounts.email holds at most 12 characters, too few for a fake email,"
        f" which needs {EMAIL_WIDTH}"
    )
    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    assert not [name for name in site.databases() if "_refresh_" in name]
