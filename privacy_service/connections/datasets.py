"""Fides datasets: the files that say which table and column holds which data category.

Files live in ``policies/datasets/*.yml`` (or ``*.yaml``), in the format Fides writes: a top-level
``dataset:`` list whose items are parsed by **fideslang** (:class:`fideslang.models.Dataset`), so a
Fides user's existing files load unchanged. Both spellings of the field metadata, ``fides_meta`` and
the older ``fidesops_meta``, are accepted (fideslang maps the old one itself).

What this service adds on top of fideslang, at load time:

- nested fields (``fields:`` under a field, for document stores) are refused: a SQL column is flat;
- a collection name may not contain ``.`` (a reference names ``collection.field``);
- a collection-level ``read_only: true`` (which fideslang's ``CollectionMeta`` does not model and would
  drop) is kept by marking every field of the collection ``read_only``.

:func:`check_datasets` is what ``privacy-service policy check`` reports: unknown categories, broken
references, collections no identity reaches. Messages name datasets, collections and fields, never values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from fideslang.models import Dataset, DatasetCollection, DatasetField, EdgeDirection, FidesMeta
from pydantic import ValidationError

from privacy_service.policy.document import PolicyDocument

DATASET_GLOBS = ("*.yml", "*.yaml")
_META_KEYS = ("fides_meta", "fidesops_meta")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """A name from a file may hold a line break: escaped, so one finding stays one line."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


class DatasetError(Exception):
    """A dataset file cannot be used; ``message`` names the place, never a value from the file."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        self.message = _one_line(message)
        super().__init__(f"{path.name}: {self.message}")


@dataclass(frozen=True, slots=True)
class Finding:
    level: Literal["error", "warning"]
    dataset: str
    message: str

    def __str__(self) -> str:
        return _one_line(f"{self.level}: dataset {self.dataset}: {self.message}")


@dataclass(frozen=True, slots=True)
class Reference:
    """One edge of a dataset: rows of ``to_collection`` are found where ``to_field`` equals a value of
    ``from_collection.from_field``. A reference without ``direction`` gives two edges."""

    from_collection: str
    from_field: str
    to_collection: str
    to_field: str


def load_datasets(directory: Path) -> dict[str, Dataset]:
    """Every dataset in ``directory`` by ``fides_key``; a missing directory holds none."""
    datasets: dict[str, Dataset] = {}
    if not directory.is_dir():
        return datasets
    files = sorted({path for pattern in DATASET_GLOBS for path in directory.glob(pattern)})
    for path in files:
        for dataset in _load_file(path):
            if dataset.fides_key in datasets:
                raise DatasetError(path, f"dataset {dataset.fides_key} is defined twice")
            datasets[dataset.fides_key] = dataset
    return datasets


def load_dataset_file(path: Path) -> list[Dataset]:
    """The datasets of one file (tests and tools load a file outside ``policies/datasets``)."""
    return _load_file(path)


def _load_file(path: Path) -> list[Dataset]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot be read ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(path, f"is not valid YAML{where}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("dataset"), list):
        raise DatasetError(path, "must hold a top-level `dataset:` list (the Fides dataset format)")
    datasets = []
    for index, item in enumerate(raw["dataset"]):
        if not isinstance(item, dict):
            raise DatasetError(path, f"dataset[{index}] is not a mapping")
        read_only = _read_only_collections(item)
        try:
            dataset = Dataset(**item)
        except ValidationError as exc:
            raise DatasetError(path, f"dataset[{index}]: {_describe(exc)}") from None
        except (TypeError, ValueError) as exc:
            raise DatasetError(path, f"dataset[{index}]: invalid ({type(exc).__name__})") from None
        _refuse_unsupported(path, dataset)
        datasets.append(_mark_read_only(dataset, read_only))
    return datasets


def _describe(exc: ValidationError) -> str:
    """Where each error is and what kind it is; pydantic's messages may repeat input, so they stay out."""
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "(top)"
        parts.append(f"{location}: {error['type']}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def _read_only_collections(item: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for collection in item.get("collections") or []:
        if not isinstance(collection, dict):
            continue
        for key in _META_KEYS:
            meta = collection.get(key)
            if isinstance(meta, dict) and meta.get("read_only") is True and isinstance(collection.get("name"), str):
                names.add(collection["name"])
    return names


def _refuse_unsupported(path: Path, dataset: Dataset) -> None:
    for collection in dataset.collections:
        if "." in collection.name or not collection.name:
            raise DatasetError(path, f"dataset {dataset.fides_key}: a collection name must be non-empty without '.'")
        for field in collection.fields:
            if field.fields:
                raise DatasetError(
                    path,
                    f"dataset {dataset.fides_key}: {collection.name}.{field.name} has nested fields, "
                    "which a SQL table cannot hold (nested fields are not supported)",
                )


def _mark_read_only(dataset: Dataset, collections: set[str]) -> Dataset:
    for collection in dataset.collections:
        if collection.name not in collections:
            continue
        for field in collection.fields:
            if field.fides_meta is None:
                field.fides_meta = FidesMeta(read_only=True)
            else:
                field.fides_meta.read_only = True
    return dataset


# -- reading a dataset --------------------------------------------------------------------------


def collection(dataset: Dataset, name: str) -> DatasetCollection:
    for candidate in dataset.collections:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def field_meta(field: DatasetField) -> FidesMeta:
    return field.fides_meta or FidesMeta()


def field_categories(dataset: Dataset, collection_name: str) -> dict[str, list[str]]:
    """Field name -> its data categories (the collection's and the dataset's categories when it has none)."""
    found = collection(dataset, collection_name)
    inherited = list(found.data_categories or dataset.data_categories or [])
    return {field.name: list(field.data_categories or inherited) for field in found.fields}


def primary_key(found: DatasetCollection) -> tuple[str, ...]:
    return tuple(field.name for field in found.fields if field_meta(field).primary_key)


def read_only_fields(found: DatasetCollection) -> frozenset[str]:
    return frozenset(field.name for field in found.fields if field_meta(field).read_only)


def split_address(address: str) -> tuple[str, str] | None:
    """``collection.field`` -> (collection, field); collection names hold no '.' (refused at load)."""
    name, dot, rest = address.partition(".")
    return (name, rest) if dot and name and rest else None


def references(dataset: Dataset) -> list[Reference]:
    """The dataset's edges within itself, each oriented the way data flows.

    Fides' meaning: on field ``A.f``, ``references: [{field: B.g, direction: to}]`` means rows of ``B``
    are found from ``A`` (``B.g`` in the values of ``A.f``); ``direction: from`` means rows of ``A`` are
    found from ``B``; no direction means both. References to other datasets or to missing
    collections/fields are left out here (:func:`check_datasets` reports them).
    """
    fields = {(c.name, f.name) for c in dataset.collections for f in c.fields}
    edges: list[Reference] = []
    for found in dataset.collections:
        for field in found.fields:
            for reference in field_meta(field).references or []:
                target = split_address(reference.field)
                if reference.dataset != dataset.fides_key or target is None or target not in fields:
                    continue
                here = (found.name, field.name)
                if reference.direction in (None, EdgeDirection.TO):
                    edges.append(Reference(*here, *target))
                if reference.direction in (None, EdgeDirection.FROM):
                    edges.append(Reference(*target, *here))
    return edges


# -- categories ---------------------------------------------------------------------------------


@cache
def taxonomy_categories() -> frozenset[str]:
    """fideslang's default taxonomy of data categories (``user.contact.email``, ``system.operations``, ...)."""
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    return frozenset(category.fides_key for category in DEFAULT_TAXONOMY.data_category)


def policy_category(category: str, policy: PolicyDocument) -> str | None:
    """The policy's category covering a dataset category: itself, else its nearest ancestor
    (``user.contact.address.city`` -> ``user.contact.address``); None when the policy covers none."""
    parts = category.split(".")
    while parts:
        key = ".".join(parts)
        if policy.is_category(key):
            return key
        parts.pop()
    return None


# -- check ---------------------------------------------------------------------------------------


def check_datasets(datasets: Mapping[str, Dataset], policy: PolicyDocument) -> list[Finding]:
    """Everything ``policy check`` says about the datasets; an ``error`` fails the check."""
    findings: list[Finding] = []
    for key in sorted(datasets):
        findings.extend(_check_dataset(datasets[key], datasets, policy))
    return findings


def _check_dataset(dataset: Dataset, datasets: Mapping[str, Dataset], policy: PolicyDocument) -> Iterable[Finding]:
    from privacy_service.connections.graph import IDENTITY_KINDS, build_plan, identity_kind

    key = dataset.fides_key

    def error(message: str) -> Finding:
        return Finding("error", key, message)

    def warning(message: str) -> Finding:
        return Finding("warning", key, message)

    known = taxonomy_categories()
    for where, categories in _category_uses(dataset):
        for category in categories:
            if not policy.is_category(category) and category not in known:
                yield error(f"{where}: unknown data category {category} (not in the policy nor fideslang's taxonomy)")
            elif category.startswith("user") and policy_category(category, policy) is None:
                yield warning(
                    f"{where}: data category {category} is covered by no category of the policy, "
                    "so these fields are neither exported nor erased"
                )

    fields = {(c.name, f.name) for c in dataset.collections for f in c.fields}
    for found in dataset.collections:
        read_only = read_only_fields(found)
        if not primary_key(found):
            erasable = sorted(
                {
                    p
                    for f in found.fields
                    if f.name not in read_only
                    for c in (f.data_categories or found.data_categories or dataset.data_categories or [])
                    if (p := policy_category(c, policy)) is not None
                }
            )
            if erasable:
                yield error(
                    f"{found.name}: no field is the primary_key, so an erasure cannot mask its rows and reports "
                    f"them as not erased, yet it holds categories the policy erases ({', '.join(erasable)}): "
                    "mark its key field primary_key, or its fields read_only"
                )
            else:
                yield warning(f"{found.name}: no field is the primary_key, so its rows can be read but not masked")
        override = found.fides_meta.masking_strategy_override if found.fides_meta else None
        if override is not None and override.strategy in ("delete", "delete_row") and read_only:
            yield warning(
                f"{found.name}: masking_strategy_override deletes rows, but its read_only fields "
                f"({', '.join(sorted(read_only))}) are never deleted: its rows are masked instead"
            )
        for field in found.fields:
            meta = field_meta(field)
            where = f"{found.name}.{field.name}"
            if meta.identity is not None and identity_kind(meta.identity) is None:
                yield warning(
                    f"{where}: identity {meta.identity} is not one this service verifies "
                    f"({', '.join(sorted(IDENTITY_KINDS))}), so it is no entry point"
                )
            for reference in meta.references or []:
                target = split_address(reference.field)
                if reference.dataset != key:
                    if reference.dataset not in datasets:
                        yield error(f"{where}: references dataset {reference.dataset}, which is not loaded")
                    else:
                        yield error(
                            f"{where}: references dataset {reference.dataset}: references across datasets "
                            "are not supported (each connection is walked on its own)"
                        )
                elif target is None:
                    yield error(f"{where}: reference {reference.field} is not of the form collection.field")
                elif target not in fields:
                    missing = "field" if any(c.name == target[0] for c in dataset.collections) else "collection"
                    yield error(f"{where}: references {reference.field}, a {missing} the dataset does not have")

    plan = build_plan(dataset, IDENTITY_KINDS)
    reached = {step.collection for step in plan.steps}
    edges = references(dataset)
    for name in plan.unreachable:
        blocked = [e for e in edges if e.from_collection == name and e.to_collection in reached]
        if blocked:
            edge = blocked[0]
            yield warning(
                f"collection {name} is reachable from no identity: its only link to a reached collection goes "
                f"from {name}.{edge.from_field} to {edge.to_collection}.{edge.to_field}; a reference followed "
                f"the other way is missing (direction `from` on {name}.{edge.from_field}, or none)"
            )
        else:
            yield warning(
                f"collection {name} is reachable from no identity: no field of it is an identity and no "
                "reference connects it to a collection that is reached"
            )


def _category_uses(dataset: Dataset) -> Iterable[tuple[str, list[str]]]:
    if dataset.data_categories:
        yield "(dataset)", list(dataset.data_categories)
    for found in dataset.collections:
        if found.data_categories:
            yield found.name, list(found.data_categories)
        for field in found.fields:
            if field.data_categories:
                yield f"{found.name}.{field.name}", list(field.data_categories)
