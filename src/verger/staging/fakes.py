"""Deterministic fakes: the same input under the same salt gives the same output.

Every fake comes from an HMAC-SHA256 of the normalized input under the
secret salt, so a member's email in ``members`` and in a message body map to
the same fake in every table and every night, and nobody without the salt
can go back. Emails go to the domains reserved for examples (RFC 2606);
phone numbers go to ranges reserved for fiction (North America, Britain,
Australia) and elsewhere to a range the country's plan leaves unused, always
in the original's country.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import operator
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers

from verger.errors import VergerError
from verger.staging.known import Known, replaced, respelled

# Local parts and domains in any script (josé1@outlook.com, 李雷.1@yahoo.co.uk).
EMAIL = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
# What a fake email looks like, so the scan can tell one only partly replaced.
FAKE_EMAIL = re.compile(r"u[0-9a-f]{7,}@example\.(?:com|net|org)")
# Dates and times look like phone numbers to PHONE; they are left as written.
DATE_SHAPE = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"
)
# A run of digits with the separators people write between them; phonenumbers decides.
# Bounded by digits alone: a letter or an underscore touching a number
# (ph4155550134, 415-555-0134x12, _4155550134_) does not hide it.
PHONE = re.compile(r"(?<![\d+])\+?\(?\d[\d ().\-/]{5,17}\d(?!\d)")
# Seven digits with few separators between them: the least a phone number has.
SEVEN_DIGITS = re.compile(r"\d(?:[ ().\-/]{0,2}\d){6}")
# A date standing alone, or before a time (2024-04-15 10:30), not the first
# groups of a longer number (91-22-2345 6789, 06.12.34.56.78).
DATE = rf"(?<!\d)(?:{DATE_SHAPE.pattern})(?![-./]?\d|[ ().\-/]{{1,2}}\d{{3}})"
# What numbers are read among in text: the hex digits of a fake email are the
# fake's own, rewriting them would part a member's email from its fake in the
# other tables, and dates are left as written. Only ``number`` is a number.
# The lookahead skips at once the places none of the three can begin, which
# makes the search as fast as PHONE's alone.
NUMBERS = re.compile(
    rf"(?=[\d+(u])(?:{FAKE_EMAIL.pattern}|{DATE}|(?P<number>{PHONE.pattern}))"
)
NON_DIGITS = re.compile(r"\D")
ASCII_DIGIT = re.compile("[0-9]")
# +1 415 555 1001, (415) 555-1001, 415.555.1001, 1-415-555-1001 and the like.
NANP_SHAPE = re.compile(r"(\+?1[ .-]?)?(\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}")
NANP_REGIONS = frozenset({"US", "CA", "PR", "GU", "VI", "AS", "MP"})
# Entries kept in each of the fakes' caches; past that, values are computed again.
CACHED = 2_000_000
# Fewer layouts kept: each holds two strings, and most rows repeat a few.
WRITTEN_CACHED = 500_000
DOMAINS = ("example.com", "example.net", "example.org")
# The shortest fake email: "u", 8 hex digits (4 billion apart) and a domain.
EMAIL_WIDTH = 1 + 8 + 1 + len(DOMAINS[0])
# A whole one, of 16 hex digits.
WHOLE_EMAIL = EMAIL_WIDTH + 8
CONSONANTS = "bdfghklmnprstvz"
VOWELS = "aeiou"
# The syllable each byte of a digest stands for in a fake name.
SYLLABLES = tuple(
    CONSONANTS[b % len(CONSONANTS)] + VOWELS[b // 16 % len(VOWELS)] for b in range(256)
)
# Filler words for text masked whole: plainly not anyone's message.
WORDS = tuple(
    [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "elit",
        "sed",
        "do",
        "tempor",
        "ut",
        "labore",
        "et",
        "magna",
    ]
)


class MaskError(VergerError):
    """A column cannot be anonymized the way the config says."""

    exit_code = 7


def normal_email(value: str) -> str:
    return value.strip().lower()


def normal_text(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


@dataclass(frozen=True)
class Block:
    """Numbers reserved for fiction: ``count`` numbers from ``start`` (digits, no +).

    ``kind`` is the kind of line they pass for: ``mobile``, ``landline``, or
    ``any`` where the plan does not tell the two apart (North America).
    """

    start: int
    count: int
    kind: str = "any"


def _nanp_blocks() -> list[Block]:
    """555-0100 to 555-0199 in every area code the plan could assign."""
    blocks = []
    for area in range(200, 1000):
        middle, last = area // 10 % 10, area % 10
        if middle == 9 or (middle == 1 and last == 1):
            continue
        blocks.append(Block(int(f"1{area}5550100"), 100))
    return blocks


# Ofcom's numbers for drama: 07700 900000-900999 for mobiles, and a thousand
# numbers in each of these geographic areas. Ofcom also reserves 0115 496 0xxx
# and 01632 960xxx, left out because phonenumbers (and so many applications)
# refuses them as invalid; 07700 900xxx it refuses too, but it is the only
# mobile range there is.
UK_AREAS = (
    "1134960",
    "1144960",
    "1164960",
    "1174960",
    "1184960",
    "1214960",
    "1314960",
    "1414960",
    "1514960",
    "1614960",
    "1914980",
    "2079460",
    "2896496",
    "2920180",
)
# ACMA's numbers for creative works: thirty mobile numbers, and (0x) 5550 xxxx
# and (0x) 7010 xxxx in each of the four geographic areas.
AU_MOBILES = (
    "491570006",
    "491570156",
    "491570157",
    "491570158",
    "491570159",
    "491570110",
    "491570313",
    "491570737",
    "491571266",
    "491571491",
    "491571804",
    "491572549",
    "491572665",
    "491572983",
    "491573770",
    "491573087",
    "491574118",
    "491574632",
    "491575254",
    "491575789",
    "491576398",
    "491576801",
    "491577426",
    "491577644",
    "491578957",
    "491578148",
    "491578888",
    "491579212",
    "491579760",
    "491579455",
)

# Other countries get unused numbers of their own (Faker._unassigned).
POOLS: dict[int, list[Block]] = {
    1: _nanp_blocks(),
    44: [
        Block(447700900000, 1000, "mobile"),
        *(Block(int(f"44{area}000"), 1000, "landline") for area in UK_AREAS),
    ],
    61: [
        *(Block(int(f"61{number}"), 1, "mobile") for number in AU_MOBILES),
        *(
            Block(int(f"61{area}{exchange}0000"), 10000, "landline")
            for area in (2, 3, 7, 8)
            for exchange in (5550, 7010)
        ),
    ],
}


def kind_of(real: str) -> str:
    """Whether a number (E.164) is a mobile or a landline, where its country says."""
    if real.startswith("+44"):
        if real[3:4] == "7" and real[4:5] not in ("0", "6"):
            return "mobile"
        return "landline" if real[3:4] in ("1", "2") else "any"
    if real.startswith("+61"):
        if real[3:4] in ("4", "5"):
            return "mobile"
        return "landline" if real[3:4] in ("2", "3", "7", "8") else "any"
    return "any"


class PhonePool:
    """Gives each real number a fiction number of its country, distinct where it can.

    Slots are handed out in ``reserve``, before any row is masked, to every
    number of the masked phone columns at once, in the order of their keyed
    digests: each takes the first free slot of a probe sequence drawn from its
    own digest, among the numbers of its kind (mobile or landline) while they
    last, then anywhere in the country's ranges. The slots depend on which
    numbers there are, never on the order rows are read in; a number added
    moves another only when it outranks it for a slot, and that one alone.
    """

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.capacity = sum(block.count for block in blocks)
        self.offsets = list(itertools.accumulate((b.count for b in blocks), initial=0))
        self.spans: dict[str, tuple[int, int]] = {}
        for index, block in enumerate(blocks):
            first, size = self.spans.get(block.kind, (self.offsets[index], 0))
            self.spans[block.kind] = (first, size + block.count)
        self.given: dict[str, int] = {}
        self.taken: set[int] = set()
        self.used = dict.fromkeys(self.spans, 0)

    def number(self, slot: int) -> int:
        index = bisect.bisect_right(self.offsets, slot) - 1
        return self.blocks[index].start + slot - self.offsets[index]

    def _full(self, kind: str) -> bool:
        return self.used[kind] >= self.spans[kind][1]

    def _probe(self, digest: bytes, first: int, size: int) -> int:
        """The first free slot in ``first:first+size`` on the digest's own sequence."""
        start = int.from_bytes(digest[:8], "big") % size
        step = 1 + int.from_bytes(digest[8:16], "big") % max(1, size - 1)
        while math.gcd(step, size) != 1:
            step += 1
        slot = start
        while first + slot in self.taken:
            slot = (slot + step) % size
        return first + slot

    def _take(self, real: str, slot: int) -> None:
        self.taken.add(slot)
        self.given[real] = slot
        self.used[self.blocks[bisect.bisect_right(self.offsets, slot) - 1].kind] += 1

    def reserve(self, ranked: list[tuple[bytes, str]]) -> list[tuple[bytes, str]]:
        """Slots for ``ranked`` (digest, number), best rank first; those left without one."""
        overflow = []
        for index, (digest, real) in enumerate(ranked):
            if len(self.taken) >= self.capacity:
                overflow += ranked[index:]
                break
            kind = kind_of(real)
            if kind in self.spans and not self._full(kind):
                self._take(real, self._probe(digest, *self.spans[kind]))
            else:
                overflow.append((digest, real))
        for index, (digest, real) in enumerate(overflow):
            if len(self.taken) >= self.capacity:
                return overflow[index:]
            self._take(real, self._probe(digest, 0, self.capacity))
        return []

    def assign(self, real: str, digest: bytes) -> int:
        """For a number never reserved, a free number, kept for none (or any, when full)."""
        kind = kind_of(real)
        if kind in self.spans and not self._full(kind):
            return self.number(self._probe(digest, *self.spans[kind]))
        if len(self.taken) < self.capacity:
            return self.number(self._probe(digest, 0, self.capacity))
        return self.number(int.from_bytes(digest[:8], "big") % self.capacity)


class Faker:
    """The fakes for one refresh: deterministic under ``salt``, injective where it counts."""

    def __init__(self, salt: str, region: str) -> None:
        key = salt.encode()
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        # HMAC's two padded keys, hashed once: each digest then costs two copies.
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0")))
        self.region = region
        self.pools = {code: PhonePool(blocks) for code, blocks in POOLS.items()}
        self.emails: dict[str, str] = {}
        self._phones: dict[str, str | None] = {}
        self._numbers: dict[str, int] = {}
        # Each (fake, original) written out once: a number recurs in every row.
        self._written_as: dict[tuple[int, str], str] = {}
        # The numbers of the masked phone columns, each with the first unique
        # column it is in (None in none), learnt before any row is masked.
        self._learnt: dict[str, str | None] = {}
        # A unique column's first value for each of its numbers, to find values
        # that write one number two ways (twins), which masking makes alike.
        self._written: dict[tuple[str, str], str] = {}
        self.twins: dict[str, set[str]] = {}
        # Numbers of countries without fiction ranges: those given, and theirs.
        self._elsewhere: dict[int, set[int]] = {}
        self._abroad: dict[str, int] = {}
        self._in_text: dict[str, tuple[str, int | None]] = {}
        # Values of phone columns read in production's regions once all are known.
        self._unsure: list[tuple[str, str | None]] = []
        self._reading: list[str] | None = None
        # Production's names, emails and numbers, filled before any row is masked.
        self.known = Known()
        # Each unique email column's addresses by normal form (the first value
        # read, then others writing it otherwise), with the column's width.
        self._addresses: dict[str, tuple[int | None, dict[str, str | list[str]]]] = {}
        # A unique column's own fakes for the values needing one (settle_emails).
        self._own: dict[str, dict[str, str]] = {}

    def digest(self, kind: str, value: str) -> bytes:
        """HMAC-SHA256 (RFC 2104) of ``kind:value``, from pads hashed once."""
        inner = self._inner.copy()
        inner.update(f"{kind}:{value}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def fingerprint(self, kind: str, value: str) -> int:
        """A 64-bit digest of a normalized value, for the leak scan's sets.

        Fingerprints live only in this process's memory (and that of the
        hunting process forked from it, which shares its key), from masking to
        the scan, so Python's own string hash (SipHash under a per-process
        random key) is enough, and many times faster than an HMAC per value.
        """
        return hash((kind, value))

    # -- emails -------------------------------------------------------------

    def email(
        self, value: str, width: int | None = None, where: str | None = None
    ) -> str:
        """The fake of an email; ``where`` names a unique column, held apart in it."""
        if not value.strip():
            return value
        own = self._own.get(where) if where is not None else None
        if own is not None and value in own:
            return own[value]
        real = normal_email(value)
        fake = self.emails.get(real)
        if fake is None:
            fake = self._new_email(real)
        return self._fit_email(fake, width, where or "an email column")

    def _new_email(self, real: str) -> str:
        # 64 bits of the address's own digest, whatever addresses came before
        # it: two of a million share a fake with a chance of 3 in 100 million.
        digest = self.digest("email", real)
        domain = DOMAINS[digest[0] % len(DOMAINS)]
        fake = f"u{digest.hex()[:16]}@{domain}"
        self.emails[real] = fake
        return fake

    def _fit_email(self, fake: str, width: int | None, where: str) -> str:
        if width is None or len(fake) <= width:
            return fake
        check_email_width(where, width)
        local, _, domain = fake.partition("@")
        return f"{local[: width - len(domain) - 1]}@{domain}"

    def learn_email(self, value: str, where: str, width: int | None) -> None:
        """One value of the unique email column ``where``, read before any row is masked."""
        if not value.strip():
            return
        known = self._addresses.setdefault(where, (width, {}))[1]
        real = normal_email(value)
        first = known.setdefault(real, value)
        if first == value:
            return
        if isinstance(first, str):
            known[real] = [first, value]
        elif value not in first:
            first.append(value)

    def settle_emails(self) -> None:
        """Fakes that keep each unique email column unique, given before any row is.

        Values that differ in case or spaces only (A@x.org, a@x.org) are one
        address, and get one fake everywhere: here, the one written as its
        normal form (a@x.org) keeps it, or else the first in order, and the
        others get fakes of their own, from the digest of the value as
        written. Text quoting any of them gets the one that kept it.
        Where the column is too narrow for a whole fake, fakes cut to its
        width that would meet are drawn again, in the order of their digests.
        """
        for where, (width, known) in self._addresses.items():
            own: dict[str, str] = {}
            for real, written in known.items():
                if isinstance(written, list):
                    # The normal form first (False sorts before True), then in order.
                    ranked = sorted((v != real, v) for v in written)
                    for _, value in ranked[1:]:
                        own[value] = self._own_email(value, 0)
            if width is not None and width < WHOLE_EMAIL:
                self._apart(known, own, width)
            if own:
                self._own[where] = own
        self._addresses.clear()

    def _own_email(self, value: str, attempt: int) -> str:
        digest = self.digest(f"email:{attempt}", value)
        return f"u{digest.hex()[:16]}@{DOMAINS[digest[0] % len(DOMAINS)]}"

    def _apart(
        self, known: dict[str, str | list[str]], own: dict[str, str], width: int
    ) -> None:
        """Fakes cut to ``width`` drawn again, where two would meet, until none do."""
        values = [v for w in known.values() for v in ([w] if isinstance(w, str) else w)]
        given: set[str] = set()
        for value in sorted(values, key=lambda v: self.digest("email", v)):
            fake = self._fit_email(own.get(value) or self.email(value), width, "")
            attempt = 1
            while fake in given:
                fake = self._fit_email(self._own_email(value, attempt), width, "")
                own[value] = fake
                attempt += 1
            given.add(fake)
            if value in own:
                own[value] = fake

    # -- phone numbers ------------------------------------------------------

    def e164(self, value: str) -> str | None:
        """The number in E.164, or None when it is not a possible phone number.

        One rule wherever a number is written, a column or a text, so it gets
        one fake: as written when international; else in the configured
        region if valid there; else in the first of ``reading`` it is valid
        in ("020 7946 0018" is London's where production has British numbers,
        whatever the region); else in the configured region if possible there.
        """
        if value in self._phones:
            return self._phones[value]
        found, sure = self._read(value)
        # Read before the regions are settled, an unsure reading may change.
        if (sure or self._reading is not None) and len(self._phones) < CACHED:
            self._phones[value] = found
        return found

    @property
    def reading(self) -> list[str]:
        """The regions a national number is tried in: configured, then production's.

        Fixed by ``settle``, so every process reads a number alike all night.
        """
        if self._reading is not None:
            return self._reading
        return [self.region, *(r for r in self.known.regions if r != self.region)]

    def _read(self, value: str) -> tuple[str | None, bool]:
        """``e164``'s reading, and whether it stands without production's regions."""
        found = self._nanp(value)
        if found is not None:
            return found, True
        try:
            parsed = phonenumbers.parse(value, self.region)
        except phonenumbers.NumberParseException:
            return None, True
        if value.lstrip().startswith("+") or phonenumbers.is_valid_number(parsed):
            return _possible(parsed), True
        for region in self.reading[1:]:
            try:
                other = phonenumbers.parse(value, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(other):
                return _possible(other), False
        return _possible(parsed), False

    def _nanp(self, value: str) -> str | None:
        """The common North American shapes without the full parser, which is slow."""
        if self.region not in NANP_REGIONS and not value.lstrip().startswith("+1"):
            return None
        if not NANP_SHAPE.fullmatch(value.strip()):
            return None
        digits = NON_DIGITS.sub("", value)
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        # An area code from 0 or 1 is another country's national number.
        if len(digits) != 10 or digits[0] in "01":
            return None
        return f"+1{digits}"

    def learn_phone(self, value: str, unique: str | None = None) -> None:
        """One value of a masked phone column, learnt before any row is masked.

        ``unique`` names the column when a unique index covers it: its numbers
        are given fiction numbers first, and values writing one number in two
        ways are kept in ``twins`` for the check that masking keeps it unique.
        """
        if not value.strip():
            return
        found, sure = self._read(value)
        if not sure:
            # Read once production's regions are known (see settle).
            self._unsure.append((value, unique))
            return
        self._learn(value, found, unique)

    def _learn(self, value: str, found: str | None, unique: str | None) -> None:
        real = found or f"raw:{normal_text(value)}"
        if real.startswith("+"):
            self.known.add_phone(real)
        if unique is None:
            self._learnt.setdefault(real, None)
            return
        if self._learnt.get(real) is None:
            self._learnt[real] = unique
        first = self._written.setdefault((unique, real), value)
        if first != value:
            self.twins.setdefault(unique, set()).update((first, value))

    def settle(self) -> None:
        """A fiction number for every learnt number, all at once (see PhonePool).

        Numbers of unique columns go first, so the others cannot take the
        slots they need; within each group, numbers go in the order of their
        keyed digests, so the outcome is the same whatever order rows came in.
        Numbers written nationally that the configured region does not know
        are read first, in the regions of the numbers read without them.
        """
        self.settle_emails()
        self._reading = self.reading
        for value, unique in self._unsure:
            self._learn(value, self.e164(value), unique)
        self._unsure.clear()
        groups: tuple[dict[bytes, str], dict[bytes, str]] = ({}, {})
        for real, unique in self._learnt.items():
            groups[unique is None][self.digest("phone", real)] = real
        for group in groups:
            countries: dict[int, list[tuple[bytes, str]]] = {}
            for digest in sorted(group):
                real = group[digest]
                countries.setdefault(_country(real), []).append((digest, real))
            for code, ranked in countries.items():
                self._reserve(code, ranked)
        self._written.clear()
        self._learnt.clear()

    def _reserve(self, code: int, ranked: list[tuple[bytes, str]]) -> None:
        if code not in self.pools:
            ranked = [
                (d, r) for d, r in ranked if self._unassigned(r, code, True) is None
            ]
        pool = self.pools.get(code, self.pools[1])
        left = pool.reserve(ranked)
        # A group holds numbers of unique columns only, or of none.
        where = self._learnt[left[0][1]] if left else None
        if where is not None:
            raise MaskError(
                f"{where} is unique, and the fiction range for its numbers holds "
                f"only {pool.capacity} numbers",
                f"mask {where} with hash instead of phone",
            )
        # The range is full: these share numbers, each its digest's slot (as
        # assign gives it), kept now while the digest is at hand.
        room = max(0, CACHED - len(self._numbers))
        for digest, real in left[:room]:
            slot = int.from_bytes(digest[:8], "big") % pool.capacity
            self._numbers[real] = pool.number(slot)

    def _real(self, value: str) -> str:
        return self.e164(value) or f"raw:{normal_text(value)}"

    def phone(
        self,
        value: str,
        width: int | None = None,
        unique: bool = False,
        where: str = "",
    ) -> str:
        if not value.strip():
            return value
        real = self._real(value)
        fake = self._numbers.get(real)
        if fake is None:
            fake = self._number(real, unique, where)
        text = self._shape(fake, value)
        if width is not None and len(text) > width:
            text = f"+{fake}"
            if len(text) > width:
                raise MaskError(
                    f"{where} holds at most {width} characters, too few for a phone "
                    "number",
                    f"mask {where} with hash instead",
                )
        return text

    def _number(self, real: str, unique: bool = False, where: str = "") -> int:
        """The fake number of a real one (E.164), the same in every column."""
        code = _country(real)
        fake = self._abroad.get(real)
        if fake is None and code not in self.pools:
            fake = self._unassigned(real, code, False)
        if fake is None:
            pool = self.pools.get(code, self.pools[1])
            slot = pool.given.get(real)
            if slot is not None:
                fake = pool.number(slot)
            elif unique:
                # Only a number settled before masking is sure to have a fake
                # of its own; any other could repeat one.
                raise MaskError(
                    f"a number in {where}, which is unique, was not among those "
                    "read before masking",
                    f"run the refresh again; if it fails again, mask {where} with hash",
                )
            else:
                fake = pool.assign(real, self.digest("phone", real))
        if len(self._numbers) < CACHED:
            self._numbers[real] = fake
        return fake

    def _unassigned(self, real: str, code: int, reserve: bool) -> int | None:
        """A number of the same country and length in a range its plan leaves unused.

        Outside North America, Britain and Australia verger knows no range
        reserved for fiction, so it takes a number the country's numbering
        plan (as the phonenumbers metadata has it) allocates to no service:
        possible, as long as a real one, and reaching nobody. It skips the
        numbers ``settle`` gave, and with ``reserve`` keeps the one it finds.
        None when no such number turns up, and the number then goes to North
        America's fiction range.
        """
        parsed = phonenumbers.parse(real)
        size = len(str(parsed.national_number))
        taken = self._elsewhere.setdefault(code, set())
        low, span = 10 ** (size - 1), 9 * 10 ** (size - 1)
        for attempt in range(64):
            digest = self.digest(f"phone:{attempt}", real)
            number = low + int.from_bytes(digest[:8], "big") % span
            candidate = phonenumbers.PhoneNumber(
                country_code=code, national_number=number
            )
            if (
                number != parsed.national_number
                and number not in taken
                and phonenumbers.is_possible_number(candidate)
                and not phonenumbers.is_valid_number(candidate)
            ):
                fake = int(f"{code}{number}")
                if reserve:
                    taken.add(number)
                    self._abroad[real] = fake
                return fake
        return None

    def _shape(self, fake: int, value: str) -> str:
        """The fake written the way the original was.

        Its digits go into the original's layout where they are as many (so
        ``4155550199`` stays ten digits and fits its column, and a number
        written two ways stays two strings); otherwise it is written in E.164,
        or nationally, as the original was.
        """
        written = self._written_as.get((fake, value))
        if written is None:
            written = self._layout(fake, value)
            if len(self._written_as) < WRITTEN_CACHED:
                self._written_as[(fake, value)] = written
        return written

    def _layout(self, fake: int, value: str) -> str:
        international = value.lstrip().startswith("+")
        text = str(fake)
        if international:
            written = f"+{text}"
        elif len(text) == 11 and text[0] == "1":
            written = f"({text[1:4]}) {text[4:7]}-{text[7:]}"
        else:
            parsed = phonenumbers.parse(f"+{fake}")
            written = phonenumbers.format_number(
                parsed, phonenumbers.PhoneNumberFormat.NATIONAL
            )
        digits = NON_DIGITS.sub("", written)
        if value.isascii():
            # Where isdigit means 0-9: the layout's pieces between its digits.
            pieces = ASCII_DIGIT.split(value)
            if len(pieces) - 1 != len(digits):
                return written
            return "".join(map(operator.add, pieces, digits)) + pieces[-1]
        if sum(char.isdigit() for char in value) != len(digits):
            return written
        fill = iter(digits)
        return "".join(next(fill) if char.isdigit() else char for char in value)

    # -- names, text, hashes --------------------------------------------------

    def name(self, value: str, width: int | None = None) -> str:
        if not value.strip():
            return value
        digest = self.digest("name", normal_text(value))
        words = max(1, min(3, len(value.split())))
        parts = [
            self._word(digest[index * 6 : index * 6 + 6]) for index in range(words)
        ]
        return _fit(" ".join(parts), width)

    def _word(self, seed: bytes) -> str:
        word = SYLLABLES[seed[1]] + SYLLABLES[seed[2]]
        if seed[0] % 2:
            word += SYLLABLES[seed[3]]
        return word.capitalize()

    def text(
        self,
        value: str,
        width: int | None = None,
        whole: bool = False,
        seen: set[int] | None = None,
    ) -> str:
        """Emails, phone numbers and production's names in ``value`` replaced.

        All of it if ``whole``. A production name (or email, or number, in any
        format) gets the fake its own column gets; any other phone-looking
        run of digits, a fake of its own, whatever letters touch either
        (ph4155550134). The digits of the fake emails just written, and dates,
        are left as they are (NUMBERS).

        With ``seen``, what ``embedded`` would give of ``value`` is added to
        it on the way, so the text is searched once for both.
        """
        if not value.strip():
            return value
        if whole:
            if seen is not None:
                seen.update(self.embedded(value))
            return _fit(self._lorem(value), width)
        found: set[int] = set() if seen is None else seen
        masked = value
        if "@" in value:
            masked = EMAIL.sub(lambda m: self._email_in_text(m, found), value)
        masked = self._known_in_text(masked)
        if not SEVEN_DIGITS.search(value):
            return _fit(masked, width)
        if masked is not value and seen is not None:
            # An email may hide a number from the search of what is left:
            # embedded searches the original, so this does too.
            found.update(self._phones_in(value))
        if SEVEN_DIGITS.search(masked):
            masked = NUMBERS.sub(lambda m: self._phone_in_text(m, found), masked)
        return _fit(masked, width)

    def _known_in_text(self, value: str) -> str:
        """Production names (and emails the pattern missed) with their columns' fakes."""
        found = self.known.find(value)
        if not found:
            return value
        fakes = (
            self.email(span.value)
            if span.kind != "name"
            else respelled(
                self.name(span.value), value[span.start : span.end], span.reordered
            )
            for span in found
        )
        return replaced(value, found, fakes)

    def _email_in_text(self, match: re.Match[str], seen: set[int]) -> str:
        real = match.group(0)
        seen.add(self.fingerprint("e", normal_email(real)))
        return self.email(real)

    def _phone_in_text(self, match: re.Match[str], seen: set[int]) -> str:
        candidate = match.group(0)
        if match.lastgroup != "number":
            # A fake email or a date (see NUMBERS).
            return candidate
        known = self._in_text.get(candidate)
        if known is None:
            known = self._new_in_text(candidate)
            if len(self._in_text) < CACHED:
                self._in_text[candidate] = known
        if known[1] is not None:
            seen.add(known[1])
        return known[0]

    def _new_in_text(self, candidate: str) -> tuple[str, int | None]:
        """A number written in text: its production number's fake, else one of its own."""
        if DATE_SHAPE.fullmatch(candidate):
            return candidate, None
        real = self.known.phone(candidate) or self.e164(candidate)
        if real is None:
            return self._digits(candidate), None
        fake = self._numbers.get(real)
        if fake is None:
            fake = self._number(real)
        return self._shape(fake, candidate), self.fingerprint("p", real)

    def _digits(self, value: str) -> str:
        """Phone-looking digits no plan knows: other digits, the same separators."""
        digits = NON_DIGITS.sub("", value)
        if not 7 <= len(digits) <= 15:
            return value
        digest = self.digest("digits", digits)
        fake = iter(
            str(int.from_bytes(digest, "big")).zfill(len(digits))[-len(digits) :]
        )
        written = [next(fake) if char.isdigit() else char for char in value]
        if digits[0] == "0":
            written[value.index("0")] = "0"
        return "".join(written)

    def _lorem(self, value: str) -> str:
        digest = self.digest("text", value)
        words: list[str] = []
        index = 0
        while sum(len(w) + 1 for w in words) < len(value):
            words.append(WORDS[digest[index % len(digest)] % len(WORDS)])
            index += 1
        return " ".join(words)[: len(value)]

    def hash(self, value: str, width: int | None = None) -> str:
        if not value:
            return value
        return self.digest("hash", value).hex()[: min(width or 32, 32)]

    def shift(self, value: str, days: int) -> int:
        """Days to move a date by: between -days and +days, never 0."""
        seed = int.from_bytes(self.digest("date", value)[:4], "big")
        moved = seed % (2 * days + 1) - days
        return moved or days

    def factor(self, value: str, ratio: float) -> float:
        """A multiplier between 1 - ratio and 1 + ratio."""
        seed = int.from_bytes(self.digest("number", value)[:4], "big")
        return 1.0 + ratio * (seed / 0xFFFFFFFF * 2 - 1)

    # -- what the leak scan looks for -------------------------------------------

    def embedded(self, value: str) -> Iterator[int]:
        """Fingerprints of every email and phone number written inside ``value``."""
        if "@" in value:
            for match in EMAIL.finditer(value):
                yield self.fingerprint("e", normal_email(match.group(0)))
        if SEVEN_DIGITS.search(value):
            yield from self._phones_in(value)

    def _phones_in(self, value: str) -> Iterator[int]:
        """Each number in ``value`` read as masking reads it in text (_new_in_text)."""
        for match in numbers(value):
            written = match.group(0)
            if DATE_SHAPE.fullmatch(written):
                continue
            found = self.known.phone(written) or self.e164(written)
            if found is not None:
                yield self.fingerprint("p", found)


def numbers(value: str) -> Iterator[re.Match[str]]:
    """The phone-looking runs of ``value``, read as masking reads them (NUMBERS)."""
    for match in NUMBERS.finditer(value):
        if match.lastgroup == "number":
            yield match


def check_email_width(where: str, width: int | None) -> None:
    """Refused before any row is masked when a column cannot hold a fake email."""
    if width is not None and width < EMAIL_WIDTH:
        raise MaskError(
            f"{where} holds at most {width} characters, too few for a fake email, "
            f"which needs {EMAIL_WIDTH}",
            f"widen {where} to {EMAIL_WIDTH} characters, or mask it with hash",
        )


def _possible(parsed: phonenumbers.PhoneNumber) -> str | None:
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _country(real: str) -> int:
    """The country calling code of an E.164 number; 1 for what did not parse."""
    if not real.startswith("+") or real.startswith("+1"):
        return 1
    if real.startswith(("+44", "+61")):
        return int(real[1:3])
    return phonenumbers.parse(real).country_code or 1


def _fit(text: str, width: int | None) -> str:
    return text if width is None else text[:width]
