"""The base of every verger.yml section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A block of verger.yml: unknown keys are errors, values never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
