"""What of each original value the leak scan must later prove is gone.

The originals are read a second time, beside the masking, by a process
forked from this one: it takes the keyed fingerprints of every masked value
(and of every email and phone number written in masked text) while the main
process masks, so the two use both cores. Being forked, it shares the
fingerprints' key with the process that runs the scan.
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from verger.children import die_with_parent
from verger.config.staging import Rule
from verger.staging.children import Forked
from verger.staging.databases import RefreshError
from verger.staging.fakes import Faker, normal_email, normal_text
from verger.staging.plan import HIDING
from verger.staging.stream import NULL, Origin, lines, unescape

# Shorter values (initials, "n/a") are too common to prove a leak anywhere else.
SHORTEST = 4
# Distinct values remembered per column, so a repeat is not fingerprinted again.
REMEMBERED = 2_000_000
Hunter = Callable[[str, set[int]], None]


class Hunt(Forked):
    """The hunting process: started with the reads to make, asked for its set at the end."""

    def __init__(
        self, origin: Origin, faker: Faker, reads: list[tuple[str, list[Rule]]]
    ) -> None:
        super().__init__(_hunt, origin, faker, reads)

    def fingerprints(self) -> set[int]:
        try:
            answer: Any = self.answers.recv()
        except EOFError:
            answer = "the hunting process ended without an answer"
        self.process.join()
        if isinstance(answer, str):
            raise RefreshError(
                f"fingerprinting production's values failed: {answer}",
                "check that the source database is reachable, then refresh again",
            )
        return set(answer)


def _hunt(
    parent: int,
    origin: Origin,
    faker: Faker,
    reads: list[tuple[str, list[Rule]]],
    sender: Connection,
) -> None:
    die_with_parent(parent)
    seen: set[int] = set()
    try:
        for query, rules in reads:
            _read(origin, faker, query, rules, seen)
    except Exception as exc:
        sender.send(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
    else:
        sender.send(seen)
    sender.close()


def _read(
    origin: Origin, faker: Faker, query: str, rules: list[Rule], seen: set[int]
) -> None:
    hunters = [hunter(faker, rule) for rule in rules]
    done: list[set[bytes]] = [set() for _ in rules]
    for chunk in lines(origin, query):
        for line in chunk:
            for index, raw in enumerate(line.split(b"\t")):
                if raw == NULL or raw in done[index]:
                    continue
                if len(done[index]) < REMEMBERED:
                    done[index].add(raw)
                hunters[index](unescape(raw.decode()), seen)


def hunter(faker: Faker, rule: Rule) -> Hunter:
    """What of an original value the leak scan must later prove is gone."""
    hiding = rule.rule in HIDING or rule.whole

    def hunt(value: str, seen: set[int]) -> None:
        if hiding:
            text = normal_text(value)
            if len(text) >= SHORTEST:
                seen.add(faker.fingerprint("v", text))
        if rule.rule == "email":
            seen.add(faker.fingerprint("e", normal_email(value)))
        elif rule.rule == "phone":
            found = faker.e164(value)
            if found is not None:
                seen.add(faker.fingerprint("p", found))
        elif rule.rule == "text":
            seen.update(faker.embedded(value))

    return hunt
