"""The ``staging:`` section: how the staging database is refreshed from production.

Every column of every table is named once, under ``mask:`` with a rule or
under ``keep:``; a refresh stops at a column named in neither.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from verger.config.sections import Section

RuleKind = Literal[
    "email",
    "phone",
    "name",
    "text",
    "hash",
    "null",
    "fixed",
    "date_noise",
    "number_noise",
    "keep",
]


class Rule(Section):
    """How one column is anonymized: ``phone``, or ``{rule: fixed, value: x}``."""

    rule: RuleKind
    value: str | None = None
    whole: bool = False
    days: int = Field(default=30, ge=1, le=3650)
    ratio: float = Field(default=0.1, gt=0, le=1)

    @model_validator(mode="after")
    def _options(self) -> Rule:
        if self.rule == "fixed" and self.value is None:
            raise ValueError(
                "a fixed rule needs value:, such as {rule: fixed, value: x}"
            )
        if self.rule != "fixed" and self.value is not None:
            raise ValueError("value: applies to the fixed rule only")
        if self.whole and self.rule != "text":
            raise ValueError("whole: applies to the text rule only")
        return self


class Staging(Section):
    source: str = "production"
    target: str = "staging"
    environment: str | None = "staging"
    refresh: str | None = "0 0 * * *"
    salt: str | None = None
    region: str = "US"
    mask: dict[str, Rule] = Field(default_factory=dict)
    keep: list[str] = Field(default_factory=list)
    canaries: list[str] = Field(default_factory=list)

    @field_validator("mask", mode="before")
    @classmethod
    def _short_rules(cls, value: object) -> object:
        if isinstance(value, dict):
            # In YAML a bare null is no value at all; here it names the null rule.
            return {
                str(k): {"rule": "null" if v is None else v}
                if v is None or isinstance(v, str)
                else v
                for k, v in value.items()
            }
        return value

    @field_validator("mask")
    @classmethod
    def _mask_keys(cls, value: dict[str, Rule]) -> dict[str, Rule]:
        for key in value:
            _check_column(key)
        return value

    @field_validator("keep")
    @classmethod
    def _keep_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            _check_column(key)
        return value

    @field_validator("refresh")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(
                f"expected a cron expression such as '0 0 * * *', got {value!r}"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if len(value) != 2 or not value.isalpha():
            raise ValueError(
                f"expected a two-letter country code such as US, got {value!r}"
            )
        return value.upper()

    @field_validator("salt")
    @classmethod
    def _salt(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError(
                "is shorter than 16 characters; use a long random secret, such as "
                "the output of 'openssl rand -base64 32'"
            )
        return value

    @model_validator(mode="after")
    def _once(self) -> Staging:
        both = sorted(set(self.mask) & set(self.keep))
        if both:
            raise ValueError(
                f"{', '.join(both)} is under both mask: and keep:; name each column once"
            )
        if self.source == self.target:
            raise ValueError(
                f"staging.source and staging.target both name {self.source!r}; the "
                "target must be a database of its own"
            )
        return self


def _check_column(key: str) -> None:
    parts = key.split(".")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(
            f"{key!r} is not a column; write table.column (or schema.table.column)"
        )
