"""The validated shape of the policy files."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

CATEGORY_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class Category(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)


class PolicyDocument(BaseModel):
    """The structured policy: category keys, and which profile fields belong to which category."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    data_categories: dict[str, Category]
    profile_fields: dict[str, str]

    @model_validator(mode="after")
    def _references_exist(self) -> PolicyDocument:
        for key in self.data_categories:
            if not CATEGORY_KEY.match(key):
                raise ValueError(f"data_categories.{key}: not a dotted category key such as user.contact.email")
        for name, category in self.profile_fields.items():
            if category not in self.data_categories:
                raise ValueError(f"profile_fields.{name}: category {category} is not in data_categories")
        return self

    def is_category(self, key: str) -> bool:
        return key in self.data_categories
