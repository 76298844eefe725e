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
import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers

from verger.errors import VergerError
from verger.staging.known import Known, reordered, replaced

# Local parts and domains in any script (josé1@outlook.com, 李雷.1@yahoo.co.uk).
EMAIL = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
# What a fake email looks like, so the scan can tell one only partly replaced.
FAKE_EMAIL = re.compile(r"u[0-9a-f]{7,}@example\.(?:com|net|org)")
# Dates and times look like phone numbers to PHONE; they are left as written.
DATE_SHAPE = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"
)
# A run of digits with the separators people write between them; phonenumbers decides.
PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().\-]{5,17}\d(?!\w)")
# Seven digits with few separators between them: the least a phone number has.
SEVEN_DIGITS = re.compile(r"\d(?:[ ().-]{0,2}\d){6}")
NON_DIGITS = re.compile(r"\D")
# +1 415 555 1001, (415) 555-1001, 415.555.1001, 1-415-555-1001 and the like.
NANP_SHAPE = re.compile(r"(\+?1[ .-]?)?(\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}")
NANP_REGIONS = frozenset({"US", "CA", "PR", "GU", "VI", "AS", "MP"})
# Entries kept in each of the fakes' caches; past that, values are computed again.
CACHED = 2_000_000
DOMAINS = ("example.com", "example.net", "example.org")
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
    """Numbers reserved for fiction: ``count`` numbers from ``start`` (digits, no +)."""

    start: int
    count: int


def _nanp_blocks() -> list[Block]:
    """555-0100 to 555-0199 in every area code the plan could assign."""
    blocks = []
    for area in range(200, 1000):
        middle, last = area // 10 % 10, area % 10
        if middle == 9 or (middle == 1 and last == 1):
            continue
        blocks.append(Block(int(f"1{area}5550100"), 100))
    return blocks


# Ofcom's drama numbers and ACMA's fiction ranges; other countries get unused
# numbers of their own (Faker._unassigned).
POOLS: dict[int, list[Block]] = {
    1: _nanp_blocks(),
    44: [
        Block(447700900000, 1000),
        Block(442079460000, 1000),
        Block(441632960000, 1000),
        *(
            Block(int(f"44{area}4960000"), 1000)
            for area in (113, 114, 115, 116, 117, 118, 121, 131, 141, 151, 161)
        ),
    ],
    61: [
        Block(61255500000, 10000),
        Block(61370100000, 10000),
        Block(61755500000, 10000),
        Block(61870100000, 10000),
    ],
}


class PhonePool:
    """Assigns each real number a distinct fiction number in its country's pool."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.capacity = sum(block.count for block in blocks)
        self.offsets = list(itertools.accumulate((b.count for b in blocks), initial=0))
        self.given: dict[str, int] = {}
        self.taken: set[int] = set()
        self.order: list[int] = []
        self.next = 0

    def number(self, slot: int) -> int:
        index = bisect.bisect_right(self.offsets, slot) - 1
        return self.blocks[index].start + slot - self.offsets[index]

    def _free(self) -> int:
        """The next free slot in a fixed shuffled order: O(1) even when nearly full."""
        if not self.order:
            self.order = list(range(self.capacity))
            random.Random(self.capacity).shuffle(self.order)
        while self.order[self.next] in self.taken:
            self.next += 1
        return self.order[self.next]

    def assign(
        self, real: str, seed: int, unique: bool, where: str, shared: bool = True
    ) -> int:
        if not shared:
            return self.number(seed % self.capacity)
        if real in self.given:
            return self.number(self.given[real])
        slot = seed % self.capacity
        if len(self.taken) >= self.capacity:
            if unique:
                raise MaskError(
                    f"{where} is unique, and the fiction range for its numbers holds "
                    f"only {self.capacity} numbers",
                    f"mask {where} with hash instead of phone",
                )
            return self.number(slot)
        if slot in self.taken:
            slot = self._free()
        self.taken.add(slot)
        self.given[real] = slot
        return self.number(slot)


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
        self.fakes: set[str] = set()
        self._phones: dict[str, str | None] = {}
        # Set when more numbers are masked than the fiction ranges hold and no
        # phone column is unique: a number's fake is then its digest's slot,
        # a function of the number alone, the same in every process.
        self.overfull = False
        self._numbers: dict[str, int] = {}
        self._elsewhere: dict[int, set[int]] = {}
        self._in_text: dict[str, tuple[str, int | None]] = {}
        # Production's names, emails and numbers, filled before any row is masked.
        self.known = Known()

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

    def email(self, value: str, width: int | None = None) -> str:
        if not value.strip():
            return value
        real = normal_email(value)
        fake = self.emails.get(real)
        if fake is None:
            fake = self._new_email(real)
        return self._fit_email(fake, width, value)

    def _new_email(self, real: str) -> str:
        digest = self.digest("email", real)
        domain = DOMAINS[digest[0] % len(DOMAINS)]
        size = 16
        fake = f"u{digest.hex()[:size]}@{domain}"
        while fake in self.fakes:
            size += 2
            fake = f"u{digest.hex()[:size]}@{domain}"
        self.fakes.add(fake)
        self.emails[real] = fake
        return fake

    def _fit_email(self, fake: str, width: int | None, value: str) -> str:
        if width is None or len(fake) <= width:
            return fake
        local, _, domain = fake.partition("@")
        room = width - len(domain) - 1
        if room < 9:
            raise MaskError(
                f"a fake email does not fit in {width} characters (for {value[:0]}"
                "a column this short)",
                "widen the column, or mask it with hash",
            )
        return f"{local[:room]}@{domain}"

    # -- phone numbers ------------------------------------------------------

    def e164(self, value: str) -> str | None:
        """The number in E.164, or None when it is not a possible phone number."""
        if value in self._phones:
            return self._phones[value]
        found = self._nanp(value)
        if found is None:
            found = self._parsed(value)
        if len(self._phones) < CACHED:
            self._phones[value] = found
        return found

    def _parsed(self, value: str) -> str | None:
        try:
            parsed = phonenumbers.parse(value, self.region)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and not phonenumbers.is_possible_number(parsed):
            parsed = None
        if parsed is None:
            return None
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    def _nanp(self, value: str) -> str | None:
        """The common North American shapes without the full parser, which is slow."""
        if self.region not in NANP_REGIONS and not value.lstrip().startswith("+1"):
            return None
        if not NANP_SHAPE.fullmatch(value.strip()):
            return None
        digits = NON_DIGITS.sub("", value)
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        if len(digits) != 10:
            return None
        return f"+1{digits}"

    def phone(
        self,
        value: str,
        width: int | None = None,
        unique: bool = False,
        where: str = "",
    ) -> str:
        if not value.strip():
            return value
        real = self.e164(value) or f"raw:{normal_text(value)}"
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

    def _number(self, real: str, unique: bool, where: str) -> int:
        """The fake number of a real one (E.164), the same in every column."""
        code = _country(real)
        fake = None if code in self.pools else self._unassigned(real, code)
        if fake is None:
            pool = self.pools[code if code in self.pools else 1]
            seed = int.from_bytes(self.digest("phone", real)[:8], "big")
            fake = pool.assign(real, seed, unique, where, not self.overfull)
        if len(self._numbers) < CACHED:
            self._numbers[real] = fake
        return fake

    def _unassigned(self, real: str, code: int) -> int | None:
        """A number of the same country and length in a range its plan leaves unused.

        Outside North America, Britain and Australia verger knows no range
        reserved for fiction, so it takes a number the country's numbering
        plan (as the phonenumbers metadata has it) allocates to no service:
        possible, as long as a real one, and reaching nobody. None when no
        such number turns up, and the number then goes to North America's
        fiction range.
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
                and (self.overfull or number not in taken)
                and phonenumbers.is_possible_number(candidate)
                and not phonenumbers.is_valid_number(candidate)
            ):
                taken.add(number)
                return int(f"{code}{number}")
        return None

    def _shape(self, fake: int, value: str) -> str:
        """The fake written the way the original was: E.164, or national."""
        if value.lstrip().startswith("+"):
            return f"+{fake}"
        text = str(fake)
        if len(text) == 11 and text[0] == "1":
            return f"({text[1:4]}) {text[4:7]}-{text[7:]}"
        parsed = phonenumbers.parse(f"+{fake}")
        return phonenumbers.format_number(
            parsed, phonenumbers.PhoneNumberFormat.NATIONAL
        )

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
        run of digits, a fake of its own.

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
            masked = PHONE.sub(lambda m: self._phone_in_text(m, found), masked)
        return _fit(masked, width)

    def _known_in_text(self, value: str) -> str:
        """Production names (and emails the pattern missed) with their columns' fakes."""
        found = self.known.find(value)
        if not found:
            return value
        fakes = (
            self.email(span.value)
            if span.kind != "name"
            else reordered(self.name(span.value))
            if span.reordered
            else self.name(span.value)
            for span in found
        )
        return replaced(value, found, fakes)

    def _email_in_text(self, match: re.Match[str], seen: set[int]) -> str:
        real = match.group(0)
        seen.add(self.fingerprint("e", normal_email(real)))
        return self.email(real)

    def _phone_in_text(self, match: re.Match[str], seen: set[int]) -> str:
        candidate = match.group(0)
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
        real = self.known.phone(candidate) or self._e164_any(candidate)
        if real is None:
            return self._digits(candidate), None
        fake = self._numbers.get(real)
        if fake is None:
            fake = self._number(real, False, "")
        return self._shape(fake, candidate), self.fingerprint("p", real)

    def _e164_any(self, value: str) -> str | None:
        """The number in E.164 in the first region (configured, then seen) it is valid in."""
        if value.lstrip().startswith("+"):
            return self.e164(value)
        regions = [self.region, *(r for r in self.known.regions if r != self.region)]
        for region in regions:
            try:
                parsed = phonenumbers.parse(value, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                return phonenumbers.format_number(
                    parsed, phonenumbers.PhoneNumberFormat.E164
                )
        return None

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
        for match in PHONE.finditer(value):
            found = self.e164(match.group(0))
            if found is not None:
                yield self.fingerprint("p", found)


def _country(real: str) -> int:
    """The country calling code of an E.164 number; 1 for what did not parse."""
    if not real.startswith("+") or real.startswith("+1"):
        return 1
    if real.startswith(("+44", "+61")):
        return int(real[1:3])
    return phonenumbers.parse(real).country_code or 1


def _fit(text: str, width: int | None) -> str:
    return text if width is None else text[:width]
