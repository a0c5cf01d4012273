"""Fides datasets: loaded unchanged with fideslang (both metadata spellings), checked by `policy check`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fideslang.models import Dataset

from privacy_service.connections.datasets import (
    DatasetError,
    check_datasets,
    field_categories,
    load_dataset_file,
    load_datasets,
    policy_category,
    read_only_fields,
    references,
)
from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.loader import load_policy
from tests.connections.conftest import DATASETS
from tests.connections.fixture_db import ODD_NOTE, ODD_TABLE
from tests.policy_files import POLICIES, copy_policies
from tests.unit.test_policy_check import run_check


@pytest.fixture(scope="module")
def policy() -> PolicyDocument:
    return load_policy(POLICIES)


def dataset_from(collections: list[dict[str, Any]], key: str = "shop") -> Dataset:
    return Dataset(fides_key=key, collections=collections)


def identity(name: str, kind: str = "email") -> dict[str, Any]:
    return {"name": name, "data_categories": ["user.contact.email"], "fides_meta": {"identity": kind}}


def ref(name: str, target: str, direction: str | None = None, dataset: str = "shop") -> dict[str, Any]:
    reference: dict[str, Any] = {"dataset": dataset, "field": target}
    if direction:
        reference["direction"] = direction
    return {"name": name, "data_categories": ["system.operations"], "fides_meta": {"references": [reference]}}


def pk(name: str = "id") -> dict[str, Any]:
    return {"name": name, "data_categories": ["system.operations"], "fides_meta": {"primary_key": True}}


def test_a_fides_dataset_file_loads_unchanged_in_both_spellings() -> None:
    (current,) = load_dataset_file(DATASETS / "wallet_ops.yml")
    (older,) = load_dataset_file(DATASETS / "wallet_ops_fidesops.yml")
    assert "fidesops_meta" in (DATASETS / "wallet_ops_fidesops.yml").read_text()
    assert "fidesops_meta" not in (DATASETS / "wallet_ops.yml").read_text()
    assert current.model_dump() == older.model_dump()
    customers = next(c for c in current.collections if c.name == "customers")
    email = next(f for f in customers.fields if f.name == "email")
    assert email.fides_meta is not None
    assert (email.fides_meta.identity, email.fides_meta.data_type, email.fides_meta.length) == ("email", "string", 120)
    assert {c.name for c in current.collections} >= {ODD_TABLE, "customers", "invoices"}
    assert field_categories(current, ODD_TABLE)[ODD_NOTE] == ["system.support_ticket"]


def test_a_collection_level_read_only_marks_every_field(wallet_ops: Dataset) -> None:
    invoices = next(c for c in wallet_ops.collections if c.name == "invoices")
    logins = next(c for c in wallet_ops.collections if c.name == "logins")
    assert read_only_fields(invoices) == {"amount_cents", "billing_name", "id", "order_id"}
    assert read_only_fields(logins) == {"logged_in_at"}


def test_directions_follow_fides(wallet_ops: Dataset) -> None:
    edges = {(e.from_collection, e.from_field, e.to_collection, e.to_field) for e in references(wallet_ops)}
    # direction: from on logins.customer_id -> customers.id: logins are found from customers.
    assert ("customers", "id", "logins", "customer_id") in edges
    assert ("logins", "customer_id", "customers", "id") not in edges
    # direction: to on orders.shipping_address_id -> addresses.id: addresses are found from orders.
    assert ("orders", "shipping_address_id", "addresses", "id") in edges
    assert ("addresses", "id", "orders", "shipping_address_id") not in edges
    # no direction: both ways.
    assert {("invoices", "order_id", "orders", "id"), ("orders", "id", "invoices", "order_id")} <= edges


def test_the_fixture_dataset_checks_clean(wallet_ops: Dataset, policy: PolicyDocument) -> None:
    assert check_datasets({"wallet_ops": wallet_ops}, policy) == []


def test_policy_category_is_the_nearest_ancestor_in_the_policy(policy: PolicyDocument) -> None:
    assert policy_category("user.contact.address.city", policy) == "user.contact.address"
    assert policy_category("user.contact.email", policy) == "user.contact.email"
    assert policy_category("system.operations", policy) is None


def test_a_missing_directory_holds_no_dataset(tmp_path: Path) -> None:
    assert load_datasets(tmp_path / "nowhere") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dataset: [\n", "not valid YAML at line"),
        ("collections: []\n", "top-level `dataset:` list"),
        ("dataset:\n  - fides_key: x\n", "dataset[0]: collections: missing"),
        ("dataset:\n  - fides_key: 'bad key!'\n    collections: []\n", "dataset[0]: fides_key"),
        (
            "dataset:\n  - fides_key: x\n    collections:\n      - name: a.b\n        fields: [{name: id}]\n",
            "a collection name must be non-empty without '.'",
        ),
        (
            "dataset:\n  - fides_key: x\n    collections:\n      - name: docs\n        fields:\n"
            "          - name: profile\n            fields: [{name: secret_value_xyz}]\n",
            "nested fields",
        ),
        (
            "dataset:\n  - fides_key: x\n    collections:\n      - name: t\n        fields:\n"
            "          - name: f\n            fides_meta: {data_type: 'secret_value_xyz'}\n",
            "dataset[0]: collections.0.fields.0",
        ),
    ],
)
def test_invalid_files_are_refused_naming_the_place_not_the_value(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "d.yml").write_text(text)
    with pytest.raises(DatasetError) as caught:
        load_datasets(tmp_path)
    assert expected in str(caught.value)
    assert "secret_value_xyz" not in str(caught.value)


def test_a_dataset_defined_twice_is_refused(tmp_path: Path) -> None:
    shutil.copy(DATASETS / "wallet_ops.yml", tmp_path / "a.yml")
    shutil.copy(DATASETS / "wallet_ops_fidesops.yml", tmp_path / "b.yaml")
    with pytest.raises(DatasetError, match="defined twice"):
        load_datasets(tmp_path)


def test_check_reports_unknown_categories_and_broken_references(policy: PolicyDocument) -> None:
    dataset = dataset_from(
        [
            {
                "name": "users",
                "fields": [
                    pk(),
                    identity("email"),
                    {"name": "shoe", "data_categories": ["user.shoe_size"]},
                    {"name": "sensor", "data_categories": ["user.sensor"]},
                ],
            },
            {
                "name": "orders",
                "fields": [
                    pk(),
                    ref("user_id", "users.id", "from"),
                    ref("ghost_id", "ghosts.id", "to"),
                    ref("missing", "users.nope", "to"),
                    ref("bad", "users", "to"),
                    ref("elsewhere", "users.id", "to", dataset="other"),
                ],
            },
        ]
    )
    messages = [str(f) for f in check_datasets({"shop": dataset}, policy)]
    assert any(m.startswith("error: dataset shop: users.shoe: unknown data category user.shoe_size") for m in messages)
    assert any(m.startswith("warning: dataset shop: users.sensor: data category user.sensor") for m in messages)
    assert any("orders.ghost_id: references ghosts.id, a collection the dataset does not have" in m for m in messages)
    assert any("orders.missing: references users.nope, a field the dataset does not have" in m for m in messages)
    assert any("orders.bad: reference users is not of the form collection.field" in m for m in messages)
    assert any("orders.elsewhere: references dataset other, which is not loaded" in m for m in messages)
    assert sum(m.startswith("error") for m in messages) == 5


def test_check_warns_about_unreachable_collections_naming_the_missing_link(policy: PolicyDocument) -> None:
    dataset = dataset_from(
        [
            {"name": "users", "fields": [pk(), identity("email")]},
            # points at users but only in the direction users <- audit, so users never lead to it
            {"name": "audit", "fields": [pk(), ref("user_id", "users.id", "to")]},
            {"name": "island", "fields": [pk(), {"name": "loyalty", "fides_meta": {"identity": "loyalty_id"}}]},
            {"name": "nokey", "fields": [ref("user_id", "users.id", "from")]},
        ]
    )
    messages = [str(f) for f in check_datasets({"shop": dataset}, policy)]
    assert (
        "warning: dataset shop: collection audit is reachable from no identity: its only link to a reached "
        "collection goes from audit.user_id to users.id; a reference followed the other way is missing "
        "(direction `from` on audit.user_id, or none)"
    ) in messages
    assert any("collection island is reachable from no identity: no field of it is an identity" in m for m in messages)
    assert any("island.loyalty: identity loyalty_id is not one this service verifies" in m for m in messages)
    assert any("nokey: no field is the primary_key" in m for m in messages)
    assert all(m.startswith("warning") for m in messages)


def test_policy_check_cli_fails_on_a_broken_dataset_and_passes_a_good_one(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    (folder / "datasets").mkdir()
    shutil.copy(DATASETS / "wallet_ops.yml", folder / "datasets" / "wallet_ops.yml")
    good = run_check(folder, tmp_path)
    assert good.returncode == 0, good.stderr
    assert "is valid" in good.stderr

    text = (DATASETS / "wallet_ops.yml").read_text().replace("[user.contact.address.city]", "[user.address.town]")
    (folder / "datasets" / "wallet_ops.yml").write_text(text)
    bad = run_check(folder, tmp_path)
    assert bad.returncode == 1
    assert "error: dataset wallet_ops: addresses.city: unknown data category user.address.town" in bad.stderr

    (folder / "datasets" / "wallet_ops.yml").write_text("dataset: {")
    broken = run_check(folder, tmp_path)
    assert broken.returncode == 1
    assert "datasets/wallet_ops.yml: is not valid YAML" in broken.stderr


def test_the_fides_example_layout_round_trips_through_yaml(wallet_ops: Dataset, tmp_path: Path) -> None:
    """What fideslang dumps (as Fides exports it) loads back to the same dataset."""
    dumped = {"dataset": [wallet_ops.model_dump(mode="json", exclude_none=True)]}
    (tmp_path / "export.yml").write_text(yaml.safe_dump(dumped, sort_keys=False))
    (again,) = load_dataset_file(tmp_path / "export.yml")
    assert again.model_dump() == wallet_ops.model_dump()


def test_a_name_with_a_line_break_stays_on_one_line(policy: PolicyDocument) -> None:
    dataset = dataset_from([{"name": "evil\nerror: forged", "fields": [{"name": "x\ry"}]}])
    messages = [str(f) for f in check_datasets({"shop": dataset}, policy)]
    assert messages
    assert all("\n" not in m and "\r" not in m for m in messages)
    assert any("evil\\nerror: forged" in m for m in messages)
