"""Production's names, emails and phone numbers, found inside any text at once.

The masking replaces a production name written in a message with the fake
its column got, and the leak scan reports any such value still written
anywhere in the copy. Both search each text once with an Aho-Corasick
automaton built from the distinct production values, so the cost does not
grow with the number of names; phone numbers are compared by their digits,
in national and international form.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import ahocorasick
import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE


def _marks() -> tuple[str, str]:
    """The combining marks as two regular expression classes: in and past the BMP."""
    ranges: list[list[int]] = []
    for point in range(0x300, 0x1F000):
        if unicodedata.combining(chr(point)):
            if ranges and ranges[-1][1] == point - 1:
                ranges[-1][1] = point
            else:
                ranges.append([point, point])
    written = [
        (first, f"{re.escape(chr(first))}-{re.escape(chr(last))}")
        for first, last in ranges
    ]
    return (
        "".join(text for first, text in written if first < 0x10000),
        "".join(text for first, text in written if first >= 0x10000),
    )


# Shorter values (initials, "n/a") are too common to stand for anyone.
SHORTEST = 4
NON_DIGITS = re.compile(r"\D")
# Where CJK and the scripts written without spaces begin: no word boundary there.
UNSPACED = 0x2E80
UNSPACED_CHAR = re.compile(f"[{chr(UNSPACED)}-{chr(0x10FFFF)}]")
# Two words joined by a hyphen, a dot or an underscore (John-Smith, john.smith,
# john_smith: handles, file names, slugs), searched again as if apart. A dot
# and a space ("John. Smith") is left out: in prose it ends a sentence far
# more often than it parts a name, and the scan would fail kept text for it.
JOINED = re.compile(r"[^\W\d_][-._][^\W\d_]")
JOINERS = str.maketrans("-._", "   ")
# Apostrophes and hyphens as keyboards and word processors write them (O'Connell
# with U+2019, Adeyemi-Okafor with U+2010), read as the ASCII ones in names and
# in text alike. One character for one, so what is found in the copy is where
# it was in the text. An em dash is left out: unspaced it parts clauses in prose
# ("Olivia—Quartermaine Road is shut"), and JOINED would take them for a name.
PUNCTUATION = dict.fromkeys("\u2018\u2019\u02bc\u02bb\u00b4\u2032\uff07", "'") | (
    dict.fromkeys("\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d", "-")
)
ODD_PUNCTUATION = re.compile(f"[{''.join(PUNCTUATION)}]")
# What stands between the words of a name written in text, kept in its fake.
BETWEEN = re.compile(r"\s*[-._,\u2010-\u2013]\s*|\s+")
# Before a one-word name, a title that makes it a saint's, and so a church's,
# a school's or a street's (St Mary's, Saint Grace, San José); after one, a
# chapter and verse, which make it a book of the Bible (John 3:16). In a
# church's messages both are far more common than a member's bare first name.
# A possessive alone ("Mary's lift") is still taken for the person.
SAINTED = re.compile(r"(?:^|[^\w.])(?:st|ste|saint|sainte|san|santa|santo|são)\.? $")
VERSE = re.compile(r" ?\d{1,3}[:.]\d{1,3}")
# Whitespace other than one plain space between words ("John  Smith",
# "John\nSmith", "John\u00a0Smith"): known values have theirs collapsed.
# Written as any odd space or two plain ones, which searches twice as fast.
ODD_SPACE = re.compile(r"[^\S ]|  ")
SPACES = re.compile(r"\s+")
# Combining marks (canonical combining class above 0), as a text written
# decomposed (NFD: "José" as "Jose" and U+0301) puts them after their letters.
# Those past U+FFFF are tried only on such a character: in one class with the
# others, they make the search five times slower.
MARKS = re.compile("(?:[{}]|(?=[\U00010000-\U0010ffff])[{}])+".format(*_marks()))
# Letters that Unicode does not decompose but that people type as plain ASCII
# (Lukasz for Łukasz, Soren for Søren), as case folding writes them.
LETTERS = str.maketrans(
    {"ł": "l", "ø": "o", "đ": "d", "ð": "d", "\u0131": "i", "ħ": "h", "ŧ": "t"}
    | {"æ": "ae", "œ": "oe", "þ": "th"}
)
# What parts a surname written first from the given names, in a key.
AFTER_SURNAME = re.compile(r" ?, ?| ")
# Given names tried after the comma, and what may follow the last of them.
GIVEN_WORDS = 4
TRAILING = ".,;:!?)]}\"'"
# A North American number the way Faker.e164 writes it: parsing it gives its digits.
NANP_E164 = re.compile(r"\+1[2-9]\d{9}")
# The kinds of number a region's plan describes, as phonenumbers checks them.
NUMBER_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


@dataclass(frozen=True)
class Found:
    """One production value written at ``start:end`` of a text."""

    start: int
    end: int
    kind: str
    value: str
    # Written surname first, as in "Smith, John" or "Smith John".
    reordered: bool = False


def key(value: str) -> str:
    """A value as it is searched for: case folded, spaces collapsed.

    Composed (NFC), with its apostrophes and hyphens the ASCII ones: a name
    stored decomposed or with a curly apostrophe is found however a text writes it.
    """
    folded = " ".join(value.casefold().split())
    if folded.isascii():
        return folded
    return _ascii_punctuation(unicodedata.normalize("NFC", folded))


def plain(folded: str) -> str:
    """``folded`` with its accents dropped: "josé núñez" as "jose nunez".

    Letters without a decomposition are written as their plain ASCII ones
    (LETTERS): "łukasz" as "lukasz".

    Word by word, each distinct word worked out once: names share their words
    (a million members have a few thousand given names and surnames), and
    dropping accents never joins or parts words.
    """
    if folded.isascii():
        return folded
    return " ".join(
        word if word.isascii() else _plain_word(word) for word in folded.split(" ")
    )


def _plain_word(word: str) -> str:
    bare = _PLAIN_WORDS.get(word)
    if bare is None:
        decomposed = unicodedata.normalize("NFKD", word)
        bare = unicodedata.normalize(
            "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
        ).translate(LETTERS)
        if len(_PLAIN_WORDS) < PLAIN_WORDS:
            _PLAIN_WORDS[word] = bare
    return bare


# Words remembered without their accents; past that, a word is worked out again.
PLAIN_WORDS = 200_000
_PLAIN_WORDS: dict[str, str] = {}


@dataclass
class Known:
    """The distinct production values of the masked name, email and phone columns."""

    automaton: ahocorasick.Automaton = field(default_factory=ahocorasick.Automaton)
    phones: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    # Each number learnt, in the order it came: a dict is an ordered set.
    learnt: dict[str, None] = field(default_factory=dict)
    # The last and first words of names of more than one, to find "Smith John"
    # and to try as a name only words that may begin one.
    surnames: set[str] = field(default_factory=set)
    given: set[str] = field(default_factory=set)
    # Keys that write a value without its accents, which a value written so yields.
    _plain: set[str] = field(default_factory=set)
    _regions: list[str] | None = None

    def add(self, kind: str, value: str) -> None:
        """One production name or email, under its folded form and without accents.

        People often type a name without its accents ("Jose Nunez" for José
        Núñez), and a hyphenated one with a space ("Adeyemi Okafor"); a value
        that is written so in production keeps its own key.
        """
        folded = key(value)
        # Two characters of a script without spaces are a whole name (李雷).
        if len(folded) < SHORTEST and (
            len(folded) < 2 or folded.isascii() or not UNSPACED_CHAR.search(folded)
        ):
            return
        self._add(folded, kind, value, False)
        if kind != "name":
            # An address without its accents is another mailbox.
            return
        bare = plain(folded)
        if " " in folded:
            self.surnames.add(folded.rpartition(" ")[2])
            self.given.add(folded.partition(" ")[0])
        if bare != folded:
            self._add(bare, kind, value, True)
            if " " in bare:
                self.surnames.add(bare.rpartition(" ")[2])
                self.given.add(bare.partition(" ")[0])
        if "-" in folded:
            self._unhyphenated(folded, bare, value)

    def _unhyphenated(self, folded: str, bare: str, value: str) -> None:
        """A hyphenated name's keys with spaces for hyphens, found as "Adeyemi Okafor"."""
        self._add(" ".join(folded.replace("-", " ").split()), "name", value, True)
        if bare != folded:
            self._add(" ".join(bare.replace("-", " ").split()), "name", value, True)

    def _add(self, folded: str, kind: str, value: str, bare: bool) -> None:
        if folded in self.automaton:
            if bare or folded not in self._plain:
                return
            self._plain.discard(folded)
        elif bare:
            self._plain.add(folded)
        self.automaton.add_word(folded, (len(folded), kind, value))

    def add_all(self, kind: str, values: Iterable[str]) -> None:
        """Production names or emails, a column's chunk of them at a time."""
        add = self.add
        for value in values:
            add(kind, value)

    def add_phone(self, e164: str) -> None:
        """A production number, under every run of digits that writes it."""
        # A number is in several columns (a member's, and every message's to them).
        if e164 in self.learnt:
            return
        self.learnt[e164] = None
        self._regions = None
        for digits in self.spellings(e164):
            self.phones.setdefault(digits, e164)

    @staticmethod
    def spellings(e164: str) -> list[str]:
        """The runs of digits that write a number: international, national, with trunk."""
        code, national, _ = _national(e164)
        prefix = "1" if code == 1 else "0"
        return [d for d in (e164[1:], national, prefix + national) if len(d) >= 7]

    @property
    def regions(self) -> list[str]:
        """The regions of production's numbers, those with the most numbers first.

        A number written nationally is read in the first of them it is valid
        in, so the order must not hang on the order rows were read in, nor
        turn over when a few numbers come or go: most numbers first, then by
        name. Worked out on first use: a number in text is looked up in them
        only when the configured region does not know it, which most texts
        never need, and finding a number's region costs microseconds a number.
        """
        if self._regions is None:
            counts: dict[str, int] = {}
            for e164 in self.learnt:
                code, _, significant = _national(e164)
                region = region_of(code, significant)
                if region:
                    counts[region] = counts.get(region, 0) + 1
            self._regions = sorted(counts, key=lambda r: (-counts[r], r))
        return self._regions

    def finish(self) -> None:
        self._plain.clear()
        if len(self.automaton):
            self.automaton.make_automaton()
            self.ready = True

    def phone(self, written: str) -> str | None:
        """The production number (E.164) a written number is, whatever its format."""
        digits = NON_DIGITS.sub("", written)
        if digits.startswith("00"):
            digits = digits[2:]
        return self.phones.get(digits)

    def find(self, text: str) -> list[Found]:
        """Production names and emails in ``text``: longest first, never overlapping.

        Whitespace between words counts as one space, as in the values
        searched for: "John  Smith" and "John\nSmith" are John Smith. A text
        written decomposed is searched without its combining marks, which
        finds its names under their keys without accents. A composed one
        (NFC, as most are) keeps its marks: those that no letter takes are
        in the names' own keys the same way.
        """
        if not self.ready or len(text) < 2:
            return []
        if text.isascii() or unicodedata.is_normalized("NFC", text):
            return self._find_spaced(text)
        bare, breaks, shifts = _unmarked(text)
        if len(breaks) == 1:
            return self._find_spaced(text)
        return [
            self._exact(text, _with_marks(text, span, breaks, shifts))
            for span in self._find_spaced(bare)
        ]

    def _find_spaced(self, text: str) -> list[Found]:
        """``find`` in a text without combining marks."""
        if ODD_SPACE.search(text) is None:
            return self._find(text)
        collapsed, breaks, shifts = _collapsed(text)
        return [
            Found(
                _original(span.start, breaks, shifts),
                _original(span.end - 1, breaks, shifts) + 1,
                span.kind,
                span.value,
                span.reordered,
            )
            for span in self._find(collapsed)
        ]

    def _exact(self, text: str, span: Found) -> Found:
        """``span`` as the production name it writes with its accents, if one is.

        Found without its marks, "José Núñez" decomposed is under the key of
        "Jose Nunez", which may be another member's name; composed, it is the
        key of the one it writes.
        """
        if span.kind != "name":
            return span
        written = key(text[span.start : span.end])
        if span.reordered:
            # "núñez, josé" as "josé núñez"; a surname always has given names after.
            written = " ".join(AFTER_SURNAME.split(written, maxsplit=1)[::-1])
        entry = self.automaton.get(written, None)
        if entry is None or entry[1] != "name" or entry[2] == span.value:
            return span
        return Found(span.start, span.end, "name", entry[2], span.reordered)

    def _find(self, text: str) -> list[Found]:
        """``find`` in a text whose words are apart by single spaces."""
        folded, starts = _folded(text)
        spans = self._matches(text, folded, starts, False)
        if JOINED.search(folded):
            spans += self._matches(text, folded.translate(JOINERS), starts, True)
        if "," in folded:
            for place in _before_commas(folded):
                spans += self._surname_first(text, folded, starts, place, False)
        if self.surnames and not self.surnames.isdisjoint(folded.split()):
            spans += self._spaced_surnames(text, folded, starts)
        return _longest(spans)

    def _matches(
        self, text: str, folded: str, starts: list[int] | None, joined: bool
    ) -> list[Found]:
        """The automaton's whole-word matches; ``joined``: only names of many words."""
        spans = []
        for end, (size, kind, value) in self.automaton.iter(folded):
            if joined and (kind != "name" or " " not in folded[end - size + 1 : end]):
                continue
            first, last = end - size + 1, end + 1
            if starts is not None:
                first, last = starts[first], starts[end] + 1
            if _bounded(text, first, last) and _written(text, first, last, kind, value):
                spans.append(Found(first, last, kind, value))
        return spans

    def _spaced_surnames(
        self, text: str, folded: str, starts: list[int] | None
    ) -> list[Found]:
        """Names written surname first without a comma, as in "Smith John".

        Only capitalized, both words: without the comma, two lower-case words
        next to each other are far likelier prose than a reversed name.
        """
        spans = []
        for surname in self.surnames.intersection(folded.split()):
            at = folded.find(surname + " ")
            while at >= 0:
                if at == 0 or folded[at - 1] == " ":
                    place = (at, at + len(surname), at + len(surname) + 1)
                    spans += self._surname_first(text, folded, starts, place, True)
                at = folded.find(surname + " ", at + 1)
        return spans

    def _surname_first(
        self,
        text: str,
        folded: str,
        starts: list[int] | None,
        place: tuple[int, int, int],
        spaced: bool,
    ) -> list[Found]:
        """Full names written as lists write them: "Smith, John", "smith,mary ann".

        The word at ``place[0]:place[1]`` (folded) is tried as the surname of
        the up to ``GIVEN_WORDS`` words from ``place[2]``, after its comma (or,
        ``spaced``, its space),
        looked up as the name written the usual way; the longest that is a
        production name wins. Looked up only where a comma or a surname is,
        rather than kept in the automaton: a second key for every name would
        double the time to build it.
        """
        start, stop, after = place
        words = folded[after : after + 200].split(" ", GIVEN_WORDS)
        if words[0].rstrip(TRAILING) not in self.given:
            return []
        if spaced and not _capitals(text, starts, (start, after)):
            return []
        for count in range(min(GIVEN_WORDS, len(words)), 0, -1):
            given = " ".join(words[:count]).rstrip(TRAILING)
            entry = (
                self.automaton.get(f"{given} {folded[start:stop]}", None)
                if given
                else None
            )
            if entry is None or entry[1] != "name":
                continue
            first, end = start, after + len(given) - 1
            if starts is not None:
                first, end = starts[first], starts[end]
            if _bounded(text, first, end + 1):
                return [Found(first, end + 1, "name", entry[2], True)]
        return []


def _national(e164: str) -> tuple[int, str, str]:
    """Country code, national number and national significant number of ``e164``.

    Parsing costs tens of microseconds a number, and a million members have a
    million numbers: a North American one is read off its digits instead,
    which is what the parser gives for it.
    """
    if NANP_E164.fullmatch(e164):
        return 1, e164[2:], e164[2:]
    parsed = phonenumbers.parse(e164)
    significant = phonenumbers.national_significant_number(parsed)
    return parsed.country_code or 0, str(parsed.national_number), significant


def region_of(code: int, significant: str) -> str | None:
    """What ``phonenumbers.region_code_for_number`` says, from precompiled patterns.

    The library tries the patterns of each kind of number of each region
    sharing the country code, compiling and looking up each one per call; here
    each region's kinds are one pattern per length, compiled once.
    """
    regions = COUNTRY_CODE_TO_REGION_CODE.get(code)
    if regions is None:
        return None
    if len(regions) == 1:
        return regions[0]
    for region in regions:
        plan = _plan(region)
        if plan is None:
            continue
        if plan.leading is not None:
            if plan.leading.match(significant):
                return region
        elif plan.known(significant):
            return region
    return None


@dataclass
class _RegionPlan:
    """One region's number patterns, as ``_number_type_helper`` reads them."""

    leading: re.Pattern[str] | None
    general: tuple[tuple[int, ...], re.Pattern[str]] | None
    kinds: list[tuple[tuple[int, ...], str]]
    by_length: dict[int, re.Pattern[str] | None] = field(default_factory=dict)

    def known(self, number: str) -> bool:
        """Whether the number is of some kind: not ``PhoneNumberType.UNKNOWN``."""
        if self.general is None or not _matches(number, *self.general):
            return False
        size = len(number)
        if size not in self.by_length:
            fitting = [p for lengths, p in self.kinds if not lengths or size in lengths]
            self.by_length[size] = (
                re.compile("|".join(f"(?:{p})" for p in fitting)) if fitting else None
            )
        either = self.by_length[size]
        return either is not None and either.fullmatch(number) is not None


def _matches(number: str, lengths: tuple[int, ...], pattern: re.Pattern[str]) -> bool:
    return (not lengths or len(number) in lengths) and bool(pattern.fullmatch(number))


_PLANS: dict[str, _RegionPlan | None] = {}


def _plan(region: str) -> _RegionPlan | None:
    if region not in _PLANS:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        _PLANS[region] = None if metadata is None else _read_plan(metadata)
    return _PLANS[region]


def _read_plan(metadata: PhoneMetadata) -> _RegionPlan:
    def pattern(desc: object) -> tuple[tuple[int, ...], str] | None:
        text = getattr(desc, "national_number_pattern", None) if desc else None
        if not text:
            return None
        return tuple(getattr(desc, "possible_length", ()) or ()), text

    general = pattern(metadata.general_desc)
    kinds = [p for name in NUMBER_TYPES if (p := pattern(getattr(metadata, name)))]
    leading = metadata.leading_digits
    return _RegionPlan(
        re.compile(leading) if leading is not None else None,
        (general[0], re.compile(general[1])) if general else None,
        kinds,
    )


def _folded(text: str) -> tuple[str, list[int] | None]:
    """``text`` case folded, with where each folded character came from when sizes differ."""
    folded = text.casefold()
    if not folded.isascii():
        folded = _ascii_punctuation(folded)
    if len(folded) == len(text):
        return folded, None
    starts: list[int] = []
    for index, char in enumerate(text):
        starts.extend([index] * len(char.casefold()))
    return folded, starts


def _ascii_punctuation(text: str) -> str:
    """``text`` with ASCII apostrophes and hyphens for the others (PUNCTUATION).

    One replace per kind of character the text has: ``str.translate`` looks
    up each character of a non-ASCII text, several times slower.
    """
    for odd in set(ODD_PUNCTUATION.findall(text)):
        text = text.replace(odd, PUNCTUATION[odd])
    return text


def _collapsed(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` with each whitespace run one space, and where its characters were.

    A character at ``i`` of the copy is at ``i + shifts[k]`` of ``text``, ``k``
    the last of ``breaks`` at or before ``i``: one break after each run that
    lost characters, so a long text with few such runs keeps a short map.
    """
    parts: list[str] = []
    breaks, shifts = [0], [0]
    at = shift = 0
    for run in SPACES.finditer(text):
        parts += [text[at : run.start()], " "]
        at = run.end()
        if run.end() - run.start() > 1:
            # The character after the run, in the copy: after its one space.
            breaks.append(run.start() - shift + 1)
            shift += run.end() - run.start() - 1
            shifts.append(shift)
    parts.append(text[at:])
    return "".join(parts), breaks, shifts


def _original(index: int, breaks: list[int], shifts: list[int]) -> int:
    return index + shifts[bisect_right(breaks, index) - 1]


def _unmarked(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` without its combining marks, and where its characters were.

    The map is ``_collapsed``'s: a break after each run of marks.
    """
    parts: list[str] = []
    breaks, shifts = [0], [0]
    at = shift = 0
    for run in MARKS.finditer(text):
        parts.append(text[at : run.start()])
        at = run.end()
        # The character after the run, in the copy: where the run began.
        breaks.append(run.start() - shift)
        shift += run.end() - run.start()
        shifts.append(shift)
    parts.append(text[at:])
    return "".join(parts), breaks, shifts


def _with_marks(text: str, span: Found, breaks: list[int], shifts: list[int]) -> Found:
    """A span found in ``_unmarked(text)`` in ``text``, with its last letter's marks."""
    end = _original(span.end - 1, breaks, shifts) + 1
    marks = MARKS.match(text, end)
    return Found(
        _original(span.start, breaks, shifts),
        marks.end() if marks else end,
        span.kind,
        span.value,
        span.reordered,
    )


def _written(text: str, first: int, last: int, kind: str, value: str) -> bool:
    """Whether a match stands for the value: a one-word name only written as a name.

    A first or last name on its own (Will, Grace, Mark) is often a common
    word too; written in lower case it is taken for the word, not the person,
    and after a saint's title or before a verse for a place or a book (SAINTED).
    """
    if kind != "name" or len(value.split()) > 1:
        return True
    if text[first].islower() or SAINTED.search(text[max(0, first - 8) : first].lower()):
        return False
    return VERSE.match(text, last) is None


def _before_commas(folded: str) -> Iterator[tuple[int, int, int]]:
    """Each word before a comma, and where the words after it begin.

    The surname of a name written surname first, as in "Smith, John",
    "Smith,John" and "Smith , John". Found from the commas back: a pattern
    trying a word at every letter costs several times more.
    """
    comma = folded.find(",")
    while comma >= 0:
        stop = comma - 1 if comma and folded[comma - 1] == " " else comma
        start = max(folded.rfind(" ", 0, stop), folded.rfind(",", 0, stop)) + 1
        while start < stop and not folded[start].isalpha():
            start += 1
        after = comma + 2 if folded[comma + 1 : comma + 2] == " " else comma + 1
        if start < stop:
            yield start, stop, after
        comma = folded.find(",", comma + 1)


def _capitals(text: str, starts: list[int] | None, words: tuple[int, int]) -> bool:
    """Whether the words at ``words[0]`` and ``words[1]`` (folded) begin in capitals."""
    if starts is not None:
        words = (starts[words[0]], starts[words[1]])
    return all(index < len(text) and text[index].isupper() for index in words)


def _bounded(text: str, first: int, last: int) -> bool:
    """Whole words only, where the script puts spaces between words.

    Digits after a name end it, as handles add them ("quigley2", "Anna1987");
    prose glues no digits to a word, so a name followed by them is the name.
    Digits before one do not: they make a Bible book ("1John").
    """
    before = text[first - 1] if first > 0 else " "
    after = text[last] if last < len(text) else " "
    if after.isdecimal() and not text[last - 1].isdecimal():
        after = " "
    return not (_spaced(before) and _spaced(text[first])) and not (
        _spaced(after) and _spaced(text[last - 1])
    )


def _spaced(char: str) -> bool:
    return char.isalnum() and ord(char) < UNSPACED


def _longest(spans: Iterable[Found]) -> list[Found]:
    chosen: list[Found] = []
    for span in sorted(spans, key=lambda s: (s.start, s.start - s.end)):
        if not chosen or span.start >= chosen[-1].end:
            chosen.append(span)
    return chosen


def respelled(fake: str, written: str, reordered: bool) -> str:
    """A fake name in the order and with the separators of the name it replaces.

    "Kabo Lemi" for "Smith , John" is "Lemi , Kabo", for "john-smith"
    "Kabo-Lemi"; whitespace between words is one space, as names are found.
    Where the two have not as many words, words go apart by spaces, after the
    surname's own separator when it comes first.
    """
    words = fake.split(" ")
    if reordered and len(words) > 1:
        words = [words[-1], *words[:-1]]
    between = [SPACES.sub(" ", apart) for apart in BETWEEN.findall(written)]
    if len(between) != len(words) - 1:
        first = between[:1] if reordered else [" "]
        between = (first or [", "]) + [" "] * (len(words) - 2)
    return "".join(w + s for w, s in zip(words, [*between, ""], strict=False))


def replaced(text: str, found: list[Found], fakes: Iterator[str]) -> str:
    """``text`` with each found span replaced by the next fake, in order."""
    parts = []
    at = 0
    for span, fake in zip(found, fakes, strict=True):
        parts += [text[at : span.start], fake]
        at = span.end
    parts.append(text[at:])
    return "".join(parts)
