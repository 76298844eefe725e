"""Phone fakes on real PostgreSQL: stable night to night, distinct where unique, of their kind."""

from __future__ import annotations

import re

import phonenumbers
import pytest

from verger.staging import LeakError, MaskError, mask, refresh
from verger.staging.fakes import AU_MOBILES

# 3,000 London numbers drawn into Ofcom's 14,000 landline numbers: some 300 of
# them find their first slot already taken, so collisions are resolved.
LONDON = (
    "SELECT g, '+44 20 8' || lpad((g * 7919 % 1000)::text, 3, '0') || ' '"
    " || lpad((g * 104729 % 10000)::text, 4, '0')"
    " FROM generate_series(1, 3000) g ORDER BY g {}"
)
UK_FICTION = re.compile(
    r"\+44(?:7700900|1134960|1144960|1164960|1174960|1184960|1214960|1314960"
    r"|1414960|1514960|1614960|1914980|2079460|2896496|2920180)\d{3}"
)


def _contacts(site, order: str, extra: str = "") -> None:
    site.sql(
        "DROP TABLE IF EXISTS contacts;"
        " CREATE TABLE contacts (id int PRIMARY KEY, phone text NOT NULL);"
        f" INSERT INTO contacts {LONDON.format(order)};{extra}"
    )


def _fakes(site) -> dict[str, str]:
    """Each production number of contacts with the fake staging holds for it."""
    real = dict(site.sql("SELECT id, phone FROM contacts"))
    fake = dict(site.sql("SELECT id, phone FROM contacts", site.staging_url))
    # The digits alone: a fake keeps its original's layout, which may differ.
    return {real[key]: fake[key].replace(" ", "") for key in real}


def _e164(value: str) -> str:
    parsed = phonenumbers.parse(value, "US")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _type(e164: str) -> int:
    return phonenumbers.number_type(phonenumbers.parse(e164))


def test_fakes_do_not_depend_on_the_order_rows_are_read(site):
    """Rows in another physical order, or with a few added, keep each number's fake."""
    site.mask["contacts.phone"] = "phone"
    site.keep.append("contacts.id")
    _contacts(site, "ASC")
    refresh(site.loaded(), site.store(), use_snapshot=True)
    first = _fakes(site)

    _contacts(site, "DESC")
    refresh(site.loaded(), site.store(), use_snapshot=True)
    reversed_order = _fakes(site)

    added = " INSERT INTO contacts SELECT 5000 + g, '+44 20 7' || (1234500 + g)"
    _contacts(site, "DESC", added + " FROM generate_series(1, 10) g")
    refresh(site.loaded(), site.store(), use_snapshot=True)
    grown = _fakes(site)

    assert len(first) == 3000 and all(UK_FICTION.fullmatch(f) for f in first.values())
    assert reversed_order == first
    moved = [number for number in first if grown[number] != first[number]]
    # A number added moves another only by outranking it for its slot.
    assert len(moved) <= 10
    assert all(first[number] in grown.values() for number in moved)


def test_a_unique_column_filling_the_fiction_range_gets_distinct_fakes(site):
    """15,000 UK numbers, exactly the range's size, get 15,000 distinct fiction numbers."""
    site.sql(
        "CREATE TABLE contacts (id serial PRIMARY KEY, phone text UNIQUE);"
        " INSERT INTO contacts (phone) SELECT '+447911' || lpad(g::text, 6, '0')"
        " FROM generate_series(1, 2000) g;"
        " INSERT INTO contacts (phone) SELECT '+44208' || lpad(g::text, 7, '0')"
        " FROM generate_series(1, 13000) g"
    )
    site.mask["contacts.phone"] = "phone"
    site.keep.append("contacts.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fakes = [row[0] for row in site.sql("SELECT phone FROM contacts", site.staging_url)]
    assert len(fakes) == len(set(fakes)) == 15000
    assert all(UK_FICTION.fullmatch(fake) for fake in fakes)
    mobiles = [fake for fake in fakes if fake.startswith("+447700900")]
    assert len(mobiles) == 1000


def test_one_number_written_two_ways_in_a_unique_pair_is_refused_early(site, caplog):
    """(415) 555-1002 and 1 (415) 555-1002 in one church: their fakes are written
    alike (the trunk 1 has no digit to take in the fake's layout), so the pair is
    refused before any row is copied."""
    site.sql(
        "INSERT INTO members (church_id, full_name, phone)"
        " SELECT church_id, 'Twin', '1 (415) 555-1002' FROM members WHERE id = 4"
    )
    caplog.set_level("INFO", logger="verger.staging")

    with pytest.raises(MaskError) as raised:
        refresh(site.loaded(), site.store(), use_snapshot=True)

    assert raised.value.message.startswith(
        "masking would break the unique index on members (church_id, phone)"
    )
    assert "\n" not in raised.value.message
    assert "members.phone" in raised.value.hint and "hash" in raised.value.hint
    assert "Masked" not in caplog.text
    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    assert not [name for name in site.databases() if "_refresh_" in name]


def test_one_number_written_two_ways_apart_in_the_index_is_masked(site):
    """The same number written two ways in two churches, or as +1 and (415), passes."""
    site.sql(
        "INSERT INTO members (church_id, full_name, phone) VALUES"
        " (1, 'Twin', '415.555.1002'), (3, 'Twin', '+1 415 555 1002')"
    )

    refresh(site.loaded(), site.store(), use_snapshot=True)

    rows = site.sql(
        "SELECT phone FROM members WHERE id IN"
        " (2, 4, (SELECT max(id) - 1 FROM members), (SELECT max(id) FROM members))"
        " ORDER BY id",
        site.staging_url,
    )
    shapes = [phonenumbers.parse(row[0], "US") for row in rows]
    assert len({phonenumbers.format_number(s, 0) for s in shapes}) == 1


def test_mobiles_stay_mobiles_and_landlines_landlines(site):
    """A British or Australian mobile gets a fiction mobile, a landline a fiction landline."""
    site.sql(
        "CREATE TABLE abroad (id int PRIMARY KEY, phone text NOT NULL);"
        " INSERT INTO abroad VALUES (1, '+61 412 345 678'), (2, '+61 2 9876 5432'),"
        " (3, '+61 3 9123 4567'), (4, '+44 7911 123456'), (5, '+44 20 7123 4567'),"
        " (6, '+44 161 234 5678'), (7, '+61 498 765 432')"
    )
    site.mask["abroad.phone"] = "phone"
    site.keep.append("abroad.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fake = dict(site.sql("SELECT id, phone FROM abroad", site.staging_url))
    mobile, fixed = (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
    )
    fake = {key: written.replace(" ", "") for key, written in fake.items()}
    for key in (1, 7):
        assert fake[key].removeprefix("+61") in AU_MOBILES
        assert _type(fake[key]) == mobile
    for key in (2, 3):
        assert re.fullmatch(r"\+61[2378](5550|7010)\d{4}", fake[key])
        assert _type(fake[key]) == fixed
    # phonenumbers calls Ofcom's drama mobiles invalid, so their range says it.
    assert re.fullmatch(r"\+447700900\d{3}", fake[4])
    for key in (5, 6):
        assert UK_FICTION.fullmatch(fake[key]) and _type(fake[key]) == fixed
    assert len(set(fake.values())) == 7


def test_two_processes_keep_a_unique_phone_pair_unique(site, monkeypatch, caplog):
    """Split between two processes, (church_id, phone) stays unique and numbers agree."""
    monkeypatch.setattr(mask, "PARALLEL_ROWS", 0)
    caplog.set_level("INFO", logger="verger.staging")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    assert "in a process of its own" in caplog.text
    pairs = site.sql(
        "SELECT count(*), count(DISTINCT (church_id, phone)) FROM members"
        " WHERE phone IS NOT NULL",
        site.staging_url,
    )
    assert pairs[0][0] == pairs[0][1] > 250
    rows = site.sql(
        "SELECT m.phone, g.to_phone FROM members m JOIN messages g ON g.member_id = m.id"
        " WHERE m.phone <> ''",
        site.staging_url,
    )
    assert all(_e164(phone) == _e164(to) for phone, to in rows)


def _text_fake(numbers: list[str], body: str) -> str:
    from verger.staging.fakes import Faker

    faker = Faker("a-test-salt-of-more-than-16-characters", "US")
    for number in numbers:
        faker.learn_phone(number)
    faker.known.finish()
    faker.settle()
    return faker.text(body)


def test_a_number_written_in_another_countrys_national_format_keeps_its_fake():
    """A number in text that the configured region does not know is read in the
    region with most production numbers first, then by name: its fake does not
    hang on the order numbers were read in, nor change when a number of another
    country is added to production."""
    body = "ring 0412 345 678 today"  # Valid in Australia, Germany and France.
    base = ["+61 2 9876 5432", "+61 3 9123 4567", "+44 20 7946 0000"]

    first = _text_fake(base, body)
    reordered = _text_fake(list(reversed(base)), body)
    grown = _text_fake(["+49 30 901820", "+33 1 42 68 53 00", *base], body)

    assert "0412 345 678" not in first
    assert first == reordered == grown


def test_a_fake_keeps_the_layout_of_its_original(site):
    """A fake is written in its original's layout: ten bare digits stay ten digits
    and fit a varchar(10) column, and spaces in an E.164 number stay where they
    were."""
    site.sql(
        "CREATE TABLE accounts (id int PRIMARY KEY, phone varchar(10), intl text);"
        " INSERT INTO accounts VALUES (1, '4155550199', '+44 20 7946 0958'),"
        " (2, '4155550142', '+61 2 9876 5432')"
    )
    site.mask.update({"accounts.phone": "phone", "accounts.intl": "phone"})
    site.keep.append("accounts.id")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    rows = site.sql("SELECT phone, intl FROM accounts ORDER BY id", site.staging_url)
    assert all(re.fullmatch(r"\d{3}55501\d\d", phone) for phone, _ in rows)
    assert re.fullmatch(r"\+44 \d\d \d{4} \d{4}", rows[0][1])
    assert re.fullmatch(r"\+61 \d \d{4} \d{4}", rows[1][1])
    assert rows[0][1] != "+44 20 7946 0958" and rows[1][0] != "4155550142"


# A member with a British number written nationally, and a message quoting it.
LONDONER = (
    "INSERT INTO members (id, church_id, full_name, phone) VALUES"
    " (901, 1, 'Olivia Quartermaine', '+447911109523'),"
    " (902, 2, 'Ada Lovelace', '020 7946 0018');"
    " INSERT INTO messages (member_id, to_phone, body) VALUES"
    " (902, '+447911109523', 'Ada is on 020 7946 0018 at home')"
)


def test_a_national_number_of_another_country_gets_one_fake_in_column_and_text(site):
    """A London number written nationally in a column (region US, production holding
    other British numbers) is read as London's there as in text: the message
    quoting it gets the very fake the column got."""
    site.sql(LONDONER)

    refresh(site.loaded(), site.store(), use_snapshot=True)

    phone = site.sql("SELECT phone FROM members WHERE id = 902", site.staging_url)
    body = site.sql("SELECT body FROM messages WHERE member_id = 902", site.staging_url)
    assert phone[0][0] != "020 7946 0018"
    assert UK_FICTION.fullmatch("+44" + phone[0][0].replace(" ", "")[1:])
    assert body == [(f"Ada is on {phone[0][0]} at home",)]


def test_a_national_number_of_another_country_in_a_kept_column_is_a_leak(site):
    """The London number of a masked message, kept by mistake in another column,
    fails the refresh: the scan reads it the way masking did."""
    site.sql(LONDONER)
    site.sql(
        "ALTER TABLE churches ADD COLUMN about text;"
        " UPDATE churches SET about = 'office: 020 7946 0018' WHERE id = 2;"
        " UPDATE members SET phone = '+14155550000' WHERE id = 902"
    )
    site.keep.append("churches.about")

    with pytest.raises(LeakError, match=r"churches\.about"):
        refresh(site.loaded(), site.store(), use_snapshot=True)


@pytest.mark.parametrize("written", ["+1 415 555 0123", "(415) 555-0123"])
def test_a_phone_canary_is_found_in_any_spelling(site, written):
    """A canary that is a phone number is found written another way: +1 415 555
    0123 as 4155550123, (415) 555-0123 as +1.415.555.0123."""
    site.canaries = [written]
    other = "4155550123" if written.startswith("+") else "+1.415.555.0123"
    site.sql(
        "ALTER TABLE churches ADD COLUMN about text;"
        f" UPDATE churches SET about = 'call {other} now' WHERE id = 2"
    )
    site.keep.append("churches.about")

    with pytest.raises(
        LeakError, match=rf"churches\.about: the canary '{re.escape(written)}'"
    ):
        refresh(site.loaded(), site.store(), use_snapshot=True)
