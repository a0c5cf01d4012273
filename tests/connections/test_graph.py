"""The traversal plan: identities, references in both directions, several hops, cycles, dependency order."""

from __future__ import annotations

from typing import Any

from fideslang.models import Dataset

from privacy_service.connections.graph import (
    IDENTITY_KINDS,
    FieldSource,
    IdentitySource,
    Lookup,
    TraversalPlan,
    build_plan,
)
from tests.connections.fixture_db import ODD_TABLE
from tests.connections.test_datasets import dataset_from, identity, pk, ref


def position(plan: TraversalPlan) -> dict[str, int]:
    return {step.collection: index for index, step in enumerate(plan.steps)}


def lookups(plan: TraversalPlan, collection: str) -> set[Lookup]:
    return set(plan.step(collection).lookups)


def test_the_wallet_plan_follows_every_reference_once(wallet_ops: Dataset) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    at = position(plan)
    assert plan.unreachable == ()
    assert set(at) == {c.name for c in wallet_ops.collections}
    assert lookups(plan, "customers") == {
        Lookup("email", IdentitySource("email")),
        Lookup("phone", IdentitySource("phone")),
        Lookup("id", IdentitySource("external_id")),
    }
    # Several incoming references: addresses wait for every collection that can name one.
    assert lookups(plan, "addresses") == {
        Lookup("customer_id", FieldSource("customers", "id")),
        Lookup("id", FieldSource("orders", "shipping_address_id")),
        Lookup("id", FieldSource("payment_cards", "billing_address_id")),
    }
    assert at["addresses"] > max(at["customers"], at["orders"], at["payment_cards"])
    # The cycle orders <-> invoices: orders are met first; the reference back from invoices is not followed.
    assert lookups(plan, "orders") == {Lookup("customer_id", FieldSource("customers", "id"))}
    assert lookups(plan, "invoices") == {Lookup("order_id", FieldSource("orders", "id"))}
    # Several identity fields and references at once; employees only by their own e-mail.
    assert lookups(plan, "service_tickets") == {
        Lookup("contact_email", IdentitySource("email")),
        Lookup("customer_id", FieldSource("customers", "id")),
        Lookup("employee_id", FieldSource("employees", "id")),
    }
    assert lookups(plan, "employees") == {Lookup("email", IdentitySource("email"))}
    assert lookups(plan, ODD_TABLE) == {Lookup("ticket-id", FieldSource("service_tickets", "id"))}
    assert plan.step("customers").primary_key == ("id",)
    assert plan.key_fields("customers") == {"id"}
    assert plan.key_fields("orders") == {"id", "shipping_address_id"}


def test_a_self_reference_is_not_followed(wallet_ops: Dataset) -> None:
    """customers.referred_by -> customers.id would lead from Alice to the customers she referred."""
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    assert all(lookup.source != FieldSource("customers", "referred_by") for s in plan.steps for lookup in s.lookups)
    assert all(lookup.source != FieldSource("customers", "id") for lookup in plan.step("customers").lookups)


def test_only_the_identities_given_are_entry_points(wallet_ops: Dataset) -> None:
    plan = build_plan(wallet_ops, {"phone", "unknown_kind"})
    assert lookups(plan, "customers") == {Lookup("phone", IdentitySource("phone"))}
    assert plan.unreachable == ("employees", "newsletter_subscribers")
    assert lookups(plan, "service_tickets") == {Lookup("customer_id", FieldSource("customers", "id"))}
    assert build_plan(wallet_ops, set()).steps == ()


def test_the_plan_is_built_once_per_dataset_and_kinds(wallet_ops: Dataset) -> None:
    first = build_plan(wallet_ops, ["email", "phone"])
    assert build_plan(wallet_ops, ("phone", "email")) is first
    assert build_plan(wallet_ops, ["email"]) is not first


def test_a_directed_cycle_of_three_ends(wallet_ops: Dataset) -> None:
    dataset = dataset_from(
        [
            {"name": "a", "fields": [pk(), identity("email"), ref("c_id", "c.id", "from")]},
            {"name": "b", "fields": [pk(), ref("a_id", "a.id", "from")]},
            {"name": "c", "fields": [pk(), ref("b_id", "b.id", "from")]},
        ]
    )
    plan = build_plan(dataset, IDENTITY_KINDS)
    assert [s.collection for s in plan.steps] == ["a", "b", "c"]
    assert lookups(plan, "a") == {Lookup("email", IdentitySource("email"))}
    assert lookups(plan, "c") == {Lookup("b_id", FieldSource("b", "id"))}


def test_a_diamond_waits_for_both_sides() -> None:
    collections: list[dict[str, Any]] = [
        {"name": "x", "fields": [pk(), identity("email")]},
        {"name": "y", "fields": [pk(), ref("x_id", "x.id", "from"), ref("z_id", "z.id", "from")]},
        {"name": "z", "fields": [pk(), ref("x_id", "x.id", "from")]},
        {"name": "w", "fields": [pk(), ref("y_id", "y.id", "from")]},
    ]
    plan = build_plan(dataset_from(collections), IDENTITY_KINDS)
    assert [s.collection for s in plan.steps] == ["x", "z", "y", "w"]
    assert lookups(plan, "y") == {Lookup("x_id", FieldSource("x", "id")), Lookup("z_id", FieldSource("z", "id"))}


def test_hops_through_an_undirected_chain_and_skip_processing() -> None:
    collections: list[dict[str, Any]] = [
        {"name": "people", "fields": [pk(), identity("ext", "customer_id")]},
        {"name": "hop1", "fields": [pk(), ref("people_id", "people.id")]},
        {"name": "hop2", "fields": [pk(), ref("hop1_id", "hop1.id")]},
        {"name": "hop3", "fields": [pk(), ref("hop2_id", "hop2.id")]},
        {"name": "skipped", "fides_meta": {"skip_processing": True}, "fields": [pk(), ref("p", "people.id")]},
    ]
    plan = build_plan(dataset_from(collections), {"external_id"})
    assert [s.collection for s in plan.steps] == ["people", "hop1", "hop2", "hop3"]
    assert lookups(plan, "hop3") == {Lookup("hop2_id", FieldSource("hop2", "id"))}
    assert "skipped" not in position(plan)
    assert plan.unreachable == ()
