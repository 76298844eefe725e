"""Production names written in other spellings than production's: found, masked, reported."""

from __future__ import annotations

import unicodedata

import pytest

from verger.staging import LeakError, refresh
from verger.staging.fakes import Faker
from verger.staging.known import Known

SALT = "a-test-salt-of-more-than-16-characters"
NAMES = [
    "José Núñez",
    "Siobhan O'Connell",
    "Łukasz Kowalski",
    "Ngozi Adeyemi-Okafor",
    "Bartholomew Quigley",
]


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# Each production name, and a spelling of it as people write it.
SPELLINGS = [
    ("José Núñez", _nfd("José Núñez")),
    ("Siobhan O'Connell", "Siobhan O\u2019Connell"),
    ("Siobhan O'Connell", "Siobhan O\u2018Connell"),
    ("Siobhan O'Connell", "Siobhan O\u02bcConnell"),
    ("Łukasz Kowalski", "Lukasz Kowalski"),
    ("Ngozi Adeyemi-Okafor", "Ngozi Adeyemi Okafor"),
    ("Ngozi Adeyemi-Okafor", "Ngozi Adeyemi\u2010Okafor"),
    ("Ngozi Adeyemi-Okafor", "Ngozi Adeyemi\u2011Okafor"),
    ("Ngozi Adeyemi-Okafor", "Ngozi Adeyemi\u2013Okafor"),
    ("Bartholomew Quigley", "Bartholomew Quigley2"),
]


def _known(*names: str) -> Known:
    known = Known()
    known.add_all("name", names)
    known.finish()
    return known


def _faker(*names: str) -> Faker:
    faker = Faker(SALT, "US")
    faker.known.add_all("name", names)
    faker.known.finish()
    return faker


def _found(known: Known, text: str) -> list[tuple[str, str]]:
    return [(text[span.start : span.end], span.value) for span in known.find(text)]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.mark.parametrize(("name", "written"), SPELLINGS)
def test_each_spelling_is_found_as_its_production_name(name, written):
    """A decomposed, curly-apostrophe, plain-letter, unhyphenated, Unicode-hyphen or
    digit-suffixed spelling is found as the production name, where it is written."""
    found = _found(_known(*NAMES), f"Ask {written}!")

    assert found == [(written.rstrip("2"), name)]


@pytest.mark.parametrize(("name", "written"), SPELLINGS)
def test_each_spelling_gets_its_names_fake_in_text(name, written):
    """Faker.text writes the name's own fake where the spelling was, digits kept."""
    faker = _faker(*NAMES)

    masked = faker.text(f"Ask {written}!")

    digits = written[len(written.rstrip("2")) :]
    assert masked == f"Ask {faker.name(name)}{digits}!"


def test_a_decomposed_name_keeps_none_of_its_marks():
    """The marks after a decomposed name's last letter go with the name, not onto the fake."""
    faker = _faker("Zoë Renée")

    masked = faker.text(_nfd("Zoë Renée, welcome"))

    assert masked == f"{faker.name('Zoë Renée')}, welcome"


def test_offsets_stay_in_the_original_text_with_marks_and_odd_spaces():
    """Marks and whitespace runs before a name both shift it; its span is where it was."""
    text = _nfd("Café  crème\n\nthen José\t Núñez came")

    assert _found(_known("José Núñez"), text) == [(_nfd("José\t Núñez"), "José Núñez")]


def test_a_decomposed_name_is_the_accented_member_not_the_plain_one():
    """With José Núñez and Jose Nunez both in production, a decomposed José Núñez is José's,
    in either order."""
    known = _known("Jose Nunez", "José Núñez")

    assert _found(known, _nfd("José Núñez")) == [(_nfd("José Núñez"), "José Núñez")]
    assert _found(known, _nfd("Núñez, José")) == [(_nfd("Núñez, José"), "José Núñez")]
    assert _found(known, "Jose Nunez") == [("Jose Nunez", "Jose Nunez")]


def test_a_name_stored_decomposed_or_curly_is_found_composed_and_straight():
    """Production's own odd spelling is learnt in the common one: NFC, ASCII apostrophe."""
    known = _known(_nfd("Zoë Ångström"), "Siobhan O\u2019Connell")

    assert _found(known, "Zoë Ångström") == [("Zoë Ångström", _nfd("Zoë Ångström"))]
    assert _found(known, "Siobhan O'Connell") == [
        ("Siobhan O'Connell", "Siobhan O\u2019Connell")
    ]


@pytest.mark.parametrize(
    ("name", "typed"),
    [
        ("Søren Ødegård", "Soren Odegard"),
        ("Đorđe Đukić", "Dorde Dukic"),
        ("I\u015f\u0131k Y\u0131lmaz", "Isik Yilmaz"),
        ("Ægir Cœurdelion", "Aegir Coeurdelion"),
        ("Þóra Hólm", "Thora Holm"),
    ],
)
def test_letters_without_a_decomposition_are_found_typed_plain(name, typed):
    """ø, đ, dotless i, æ, œ and þ typed as o, d, i, ae, oe and th still write the name."""
    assert _found(_known(name), f"{typed} came") == [(typed, name)]


def test_a_name_with_a_digit_before_it_or_a_letter_after_it_is_not_found():
    """Digits end a name but do not begin one, and letters still do neither."""
    known = _known("Bartholomew Quigley", "Grace")

    assert _found(known, "Bartholomew Quigleys and 2Bartholomew Quigley") == []
    assert _found(known, "Gracefully, Grace7 came") == [("Grace", "Grace")]


def test_a_one_word_name_before_a_verse_without_a_space_is_a_book():
    """'John3:16' is the book of John, as 'John 3:16' is; 'John3' is a handle."""
    known = _known("John", "Johnny")

    assert _found(known, "Read John3:16 and 1John 2") == []
    assert _found(known, "Ask Johnny3") == [("Johnny", "Johnny")]


def test_an_em_dash_between_names_in_prose_is_left():
    """An unspaced em dash parts clauses, so the words either side are not a full name."""
    known = _known("Olivia Quartermaine")

    assert _found(known, "Thanks olivia\u2014quartermaine road is shut") == []


def test_a_hyphenated_name_is_not_found_hyphen_dropped_inside_another_word():
    """Written with a space, the hyphenated name still needs whole words at its ends."""
    known = _known("Ngozi Adeyemi-Okafor")

    assert _found(known, "Ngozi Adeyemi Okaforville") == []


PEOPLE = """
INSERT INTO members (id, church_id, full_name, phone, email) VALUES
    (911, 1, 'José Núñez', '+14155557001', 'jn@mail.example'),
    (912, 2, 'Siobhan O''Connell', '+14155557002', 'so@mail.example'),
    (913, 3, 'Łukasz Kowalski', '+14155557003', 'lk@mail.example'),
    (914, 1, 'Ngozi Adeyemi-Okafor', '+14155557004', 'na@mail.example'),
    (915, 2, 'Bartholomew Quigley', '+14155557005', 'bq@mail.example');
"""
BODY = " | ".join(
    [
        _nfd("José Núñez"),
        "Siobhan O\u2019Connell",
        "Lukasz Kowalski",
        "Ngozi Adeyemi Okafor",
        "Bartholomew Quigley2",
    ]
)


def test_every_spelling_in_a_message_body_gets_its_members_fake(site):
    """A body quoting the five members in other spellings gets their fakes, in order."""
    site.sql(PEOPLE)
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body)"
        f" VALUES (911, '+14155557001', {_quoted(BODY)})"
    )

    refresh(site.loaded(), site.store(), use_snapshot=True)

    fakes = dict(site.sql("SELECT id, full_name FROM members", site.staging_url))
    body = site.sql(
        "SELECT body FROM messages WHERE id = (SELECT max(id) FROM messages)",
        site.staging_url,
    )
    masked = [fakes[member] for member in range(911, 916)]
    assert body == [(" | ".join(masked[:4]) + f" | {masked[4]}2",)]


@pytest.mark.parametrize("written", BODY.split(" | "))
def test_every_spelling_in_a_kept_column_fails_the_refresh(site, written):
    """Each spelling, kept by mistake, fails the refresh as a production name."""
    site.sql(PEOPLE)
    site.sql("ALTER TABLE churches ADD COLUMN about text")
    site.sql(f"UPDATE churches SET about = {_quoted('Led by ' + written)} WHERE id = 2")
    site.keep.append("churches.about")
    store = site.store()

    with pytest.raises(LeakError, match=r"churches\.about: the production name"):
        refresh(site.loaded(), store, use_snapshot=True)

    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]


def test_a_composed_text_keeps_the_marks_no_letter_takes():
    """A Yoruba name whose tone marks stay combining in NFC is found as written."""
    name = unicodedata.normalize("NFC", "Adéṣọ̀lá Bello")

    assert _found(_known(name), f"Hi {name}.") == [(name, name)]
