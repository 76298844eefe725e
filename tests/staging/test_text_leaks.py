"""Production names, emails and numbers written inside text: replaced, or reported."""

from __future__ import annotations

import re

import pytest

from verger.staging import LeakError, refresh

PEOPLE = """
INSERT INTO members (id, church_id, full_name, phone, email) VALUES
    (901, 1, 'Olivia Quartermaine', '+447911109523', 'olivia.q@mail.co.uk'),
    (902, 2, '李雷', '+61412345678', '李雷.12162@yahoo.co.uk'),
    (903, 3, 'José Pereira', '+14155557777', 'josé1@outlook.com');
INSERT INTO messages (member_id, to_phone, body) VALUES
    (901, '+447911109523', 'See you Sunday, OLIVIA quartermaine! Ring 07911 109523.'),
    (902, '+61412345678', 'thanks, 李雷 Silva 12162, your mobile 0412 345 678'),
    (902, '+61412345678', 'mail 李雷.12162@YAHOO.CO.UK or josé1@outlook.com'),
    (903, '+14155557777', 'José Pereira asked on 2024-01-15 for 07700 900123 and order 4471 9921');
"""


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _bodies(site) -> str:
    rows = site.sql(
        "SELECT string_agg(body, ' | ') FROM messages WHERE member_id > 900",
        site.staging_url,
    )
    return str(rows[0][0])


def test_names_quoted_in_text_get_the_fake_their_column_got(site):
    """A member's name in a message body becomes that member's fake name, in any case."""
    site.sql(PEOPLE)

    refresh(site.loaded(), site.store(), use_snapshot=True)

    bodies = _bodies(site)
    assert "quartermaine" not in bodies.casefold()
    assert "李雷" not in bodies and "josé pereira" not in bodies.casefold()
    fakes = dict(site.sql("SELECT id, full_name FROM members", site.staging_url))
    assert f"Sunday, {fakes[901]}!" in bodies
    assert f"thanks, {fakes[902]} Silva" in bodies
    assert f"{fakes[903]} asked" in bodies


def test_national_numbers_in_text_are_replaced_like_their_column(site):
    """UK and Australian numbers written nationally in text get their column's fake."""
    site.sql(PEOPLE)

    refresh(site.loaded(), site.store(), use_snapshot=True)

    bodies = _bodies(site)
    found = _digits(bodies)
    for real in ("07911109523", "7911109523", "0412345678", "412345678", "07700900123"):
        assert real not in found, bodies
    assert "4471 9921" not in bodies
    phones = dict(site.sql("SELECT id, phone FROM members", site.staging_url))
    assert _digits(phones[901])[-10:] in found
    assert "on 2024-01-15 for" in bodies


def test_unicode_emails_in_text_are_replaced_whole(site):
    """An email with a non-ASCII local part is replaced from its first character."""
    site.sql(PEOPLE)

    refresh(site.loaded(), site.store(), use_snapshot=True)

    bodies = _bodies(site)
    emails = re.findall(r"[\w.+-]+@[\w.-]+", bodies)
    assert len(emails) == 2
    assert all(re.fullmatch(r"u[0-9a-f]{16}@example\.(com|net|org)", e) for e in emails)
    assert "josé" not in bodies and "yahoo" not in bodies.lower()


@pytest.mark.parametrize(
    "kept",
    [
        "Led by Olivia Quartermaine",
        "ring 07911 109523 after six",
        "write to OLIVIA.Q@MAIL.CO.UK",
        "joséu52d0f1e2a3b4c5d6@example.com",
    ],
)
def test_production_values_inside_a_kept_column_fail_the_refresh(site, kept):
    """A name, a national number, an email or a half-masked email in a kept column is a leak."""
    site.sql(PEOPLE)
    site.sql("ALTER TABLE churches ADD COLUMN about text")
    site.sql(f"UPDATE churches SET about = '{kept}' WHERE id = 2")
    site.keep.append("churches.about")
    store = site.store()

    with pytest.raises(LeakError, match=r"churches\.about"):
        refresh(site.loaded(), store, use_snapshot=True)

    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    assert store.refreshes(site.staging)[0].status == "failed"


def test_a_one_word_name_is_replaced_only_where_written_as_a_name(site):
    """A first name column's 'Grace' is replaced in text; the word 'grace' is left."""
    site.sql(
        "ALTER TABLE members ADD COLUMN first_name text;"
        " UPDATE members SET first_name = 'Grace' WHERE id = 7;"
        " INSERT INTO messages (member_id, to_phone, body)"
        " VALUES (7, '+14155550000', 'By the grace of God, GRACE and Grace came.')"
    )
    site.mask["members.first_name"] = "name"

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fake = site.sql("SELECT first_name FROM members WHERE id = 7", site.staging_url)
    body = site.sql(
        "SELECT body FROM messages WHERE body LIKE 'By the grace%'", site.staging_url
    )
    assert body == [(f"By the grace of God, {fake[0][0]} and {fake[0][0]} came.",)]


def test_a_full_name_in_any_case_or_surname_first_is_replaced_and_reported(site):
    """'Quartermaine, Olivia' and 'olivia quartermaine' in text get the member's fake,
    surname first where it was; in a kept column either is a leak."""
    site.sql(PEOPLE)
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body) VALUES"
        " (901, '+447911109523', 'Quartermaine, Olivia: seats 4; olivia quartermaine')"
    )

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fake = site.sql("SELECT full_name FROM members WHERE id = 901", site.staging_url)
    given, surname = fake[0][0].split()
    body = site.sql(
        "SELECT body FROM messages WHERE body LIKE '%seats 4%'", site.staging_url
    )
    assert body == [(f"{surname}, {given}: seats 4; {given} {surname}",)]

    site.sql("ALTER TABLE churches ADD COLUMN about text")
    site.sql("UPDATE churches SET about = 'Led by QUARTERMAINE, Olivia' WHERE id = 2")
    site.keep.append("churches.about")
    with pytest.raises(LeakError, match=r"churches\.about: the production name"):
        refresh(site.loaded(), site.store(), use_snapshot=True)


# A production name written with other whitespace than one space between its
# words, or surname first with other than ", " after the comma.
SPACED = [
    ("Hi Olivia  Quartermaine!", "Hi {given} {surname}!"),
    ("Hi Olivia\nQuartermaine", "Hi {given} {surname}"),
    ("Hi Olivia\u00a0Quartermaine", "Hi {given} {surname}"),
    ("Hi Olivia\t\tQuartermaine.", "Hi {given} {surname}."),
    ("Hi Quartermaine,Olivia", "Hi {surname},{given}"),
    ("Quartermaine,  Olivia came", "{surname}, {given} came"),
]


@pytest.mark.parametrize(("written", "masked"), SPACED)
def test_a_name_with_other_whitespace_in_text_is_replaced_whole(site, written, masked):
    """Two spaces, a newline, a no-break space or tabs between a name's words, or
    no or several spaces after a surname's comma: the whole name gets the fake,
    its whitespace one space, its comma kept as it was."""
    site.sql(PEOPLE)
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body)"
        f" VALUES (901, '+447911109523', '{written}')"
    )

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fake = site.sql("SELECT full_name FROM members WHERE id = 901", site.staging_url)
    given, surname = fake[0][0].split()
    body = site.sql(
        "SELECT body FROM messages WHERE id = (SELECT max(id) FROM messages)",
        site.staging_url,
    )
    assert body == [(masked.format(given=given, surname=surname),)]


@pytest.mark.parametrize("written", [written for written, _ in SPACED])
def test_a_name_with_other_whitespace_in_a_kept_column_is_a_leak(site, written):
    """The same names, planted in a kept column, fail the refresh as a production name."""
    site.sql(PEOPLE)
    site.sql("ALTER TABLE churches ADD COLUMN about text")
    site.sql(f"UPDATE churches SET about = '{written}' WHERE id = 2")
    site.keep.append("churches.about")
    store = site.store()

    with pytest.raises(LeakError, match=r"churches\.about: the production name"):
        refresh(site.loaded(), store, use_snapshot=True)

    assert store.refreshes(site.staging)[0].status == "failed"


# A production name written other ways than its column has it.
WRITTEN = [
    ("Quartermaine , Olivia came", "{surname} , {given} came"),
    ("Quartermaine Olivia came", "{surname} {given} came"),
    ("olivia-quartermaine.pdf", "{given}-{surname}.pdf"),
    ("@olivia.quartermaine said", "@{given}.{surname} said"),
    ("Olivia_Quartermaine", "{given}_{surname}"),
    ("José Pereira, Jose Pereira, PEREIRA, Jose", "{g3} {s3}, {g3} {s3}, {s3}, {g3}"),
]


@pytest.mark.parametrize(("written", "masked"), WRITTEN)
def test_a_name_written_otherwise_in_text_is_replaced_keeping_its_separators(
    site, written, masked
):
    """A space before the surname's comma, surname first without a comma, words
    joined by a hyphen, a dot or an underscore, or accents dropped (Jose for
    José): the name gets its member's fake, in its order, with its separators."""
    site.sql(PEOPLE)
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body)"
        f" VALUES (901, '+447911109523', '{written}')"
    )

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fakes = dict(site.sql("SELECT id, full_name FROM members", site.staging_url))
    given, surname = fakes[901].split()
    g3, s3 = fakes[903].split()
    body = site.sql(
        "SELECT body FROM messages WHERE id = (SELECT max(id) FROM messages)",
        site.staging_url,
    )
    assert body == [(masked.format(given=given, surname=surname, g3=g3, s3=s3),)]


@pytest.mark.parametrize(
    "kept",
    [
        "Led by QUARTERMAINE , Olivia",
        "Led by Quartermaine Olivia",
        "see olivia-quartermaine.pdf",
        "Led by Jose Pereira",
    ],
)
def test_a_name_written_otherwise_in_a_kept_column_is_a_leak(site, kept):
    """The same spellings, kept by mistake, fail the refresh as a production name."""
    site.sql(PEOPLE)
    site.sql("ALTER TABLE churches ADD COLUMN about text")
    site.sql(f"UPDATE churches SET about = '{kept}' WHERE id = 2")
    site.keep.append("churches.about")

    with pytest.raises(LeakError, match=r"churches\.about: the production name"):
        refresh(site.loaded(), site.store(), use_snapshot=True)


@pytest.mark.parametrize(
    "prose",
    [
        "Olivia. Quartermaine Hall is shut",
        "quartermaine olivia",
        "Thanks Olivia, Quartermaine Road is shut",
    ],
)
def test_name_parts_in_ordinary_prose_are_left(site, prose):
    """A sentence ending between the words, both in lower case without a comma,
    or a given name before a comma and a place: none is taken for the name."""
    site.sql(PEOPLE)
    site.sql("ALTER TABLE churches ADD COLUMN about text")
    site.sql(f"UPDATE churches SET about = '{prose}' WHERE id = 2")
    site.keep.append("churches.about")

    refresh(site.loaded(), site.store(), use_snapshot=True)

    about = site.sql("SELECT about FROM churches WHERE id = 2", site.staging_url)
    assert about == [(prose,)]


def test_a_one_word_name_as_a_saint_or_a_book_is_left_and_as_a_person_replaced(site):
    """A first name column's 'Mary' and 'John' are left in St Mary's, St. Mary,
    Saint Mary and John 3:16, and replaced in Mary's lift and John came; a
    church named St Mary's in a kept column is no leak."""
    site.sql(
        "ALTER TABLE members ADD COLUMN first_name text;"
        " UPDATE members SET first_name = 'Mary' WHERE id = 7;"
        " UPDATE members SET first_name = 'John' WHERE id = 8;"
        " UPDATE churches SET name = 'St Mary''s' WHERE id = 2;"
        " INSERT INTO messages (member_id, to_phone, body) VALUES (7, '+14155550000',"
        " 'At St Mary''s, St. Mary and Saint Mary read John 3:16; Mary''s lift; John came')"
    )
    site.mask["members.first_name"] = "name"

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fakes = dict(site.sql("SELECT id, first_name FROM members", site.staging_url))
    body = site.sql(
        "SELECT body FROM messages WHERE body LIKE 'At St%'", site.staging_url
    )
    assert body == [
        (
            "At St Mary's, St. Mary and Saint Mary read John 3:16;"
            f" {fakes[7]}'s lift; {fakes[8]} came",
        )
    ]
    church = site.sql("SELECT name FROM churches WHERE id = 2", site.staging_url)
    assert church == [("St Mary's",)]
