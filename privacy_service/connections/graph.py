"""The traversal plan of a dataset: from the request's identities to every collection they reach.

Identity kinds are the identifiers the service verifies: ``email``, ``phone``, ``external_id``. A field's
Fides ``identity:`` name maps to a kind: ``email`` -> ``email``; ``phone_number`` (Fides' name) and
``phone`` -> ``phone``; ``external_id``, ``customer_id`` and ``user_id`` -> ``external_id``. Any other
identity name is no entry point (``policy check`` warns).

The plan is built once per dataset and set of identity kinds (cached) and holds no values:

- a collection is reached from an identity field of its own, or through a reference (see
  :func:`privacy_service.connections.datasets.references` for Fides' directions) from a collection
  reached before it; references are followed over any number of hops;
- every collection is visited once. Steps come in dependency order: a collection waits until every
  reached collection that can feed it has been visited, so its lookup uses all of its incoming
  references at once (rows matching any of them). In a cycle (``orders <-> invoices``, or a table
  referencing itself such as ``customers.referred_by -> customers.id``) the collection reached first
  goes first and the references coming back into it are not followed: following them would walk
  into rows that belong to other people (the customer who referred this one) and never end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fideslang.models import Dataset

from privacy_service.connections.datasets import field_meta, primary_key, references

IDENTITY_KINDS = frozenset({"email", "phone", "external_id"})
FIDES_IDENTITIES: Mapping[str, str] = MappingProxyType(
    {
        "email": "email",
        "phone_number": "phone",
        "phone": "phone",
        "external_id": "external_id",
        "customer_id": "external_id",
        "user_id": "external_id",
    }
)
_CACHE_SIZE = 256


def identity_kind(fides_identity: str) -> str | None:
    return FIDES_IDENTITIES.get(fides_identity)


@dataclass(frozen=True, slots=True)
class IdentitySource:
    kind: str


@dataclass(frozen=True, slots=True)
class FieldSource:
    collection: str
    field: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """Rows of the step's collection where ``field`` equals one of the source's values."""

    field: str
    source: IdentitySource | FieldSource


@dataclass(frozen=True, slots=True)
class Step:
    collection: str
    primary_key: tuple[str, ...]
    lookups: tuple[Lookup, ...]


@dataclass(frozen=True, slots=True)
class TraversalPlan:
    dataset: str
    steps: tuple[Step, ...]
    unreachable: tuple[str, ...]

    def step(self, collection: str) -> Step:
        for step in self.steps:
            if step.collection == collection:
                return step
        raise KeyError(collection)

    def key_fields(self, collection: str) -> frozenset[str]:
        """The fields of ``collection`` whose values later steps look up."""
        return frozenset(
            lookup.source.field
            for step in self.steps
            for lookup in step.lookups
            if isinstance(lookup.source, FieldSource) and lookup.source.collection == collection
        )


_plans: dict[tuple[int, frozenset[str]], tuple[Dataset, TraversalPlan]] = {}


def build_plan(dataset: Dataset, identity_kinds: Iterable[str]) -> TraversalPlan:
    """The plan for these identity kinds (unknown kinds are ignored), cached per dataset object."""
    kinds = frozenset(identity_kinds) & IDENTITY_KINDS
    key = (id(dataset), kinds)
    cached = _plans.get(key)
    if cached is not None and cached[0] is dataset:
        return cached[1]
    plan = _build(dataset, kinds)
    if len(_plans) >= _CACHE_SIZE:
        _plans.pop(next(iter(_plans)))
    _plans[key] = (dataset, plan)
    return plan


def _build(dataset: Dataset, kinds: frozenset[str]) -> TraversalPlan:
    names = [c.name for c in dataset.collections if not (c.fides_meta and c.fides_meta.skip_processing)]
    included = set(names)
    entries: dict[str, list[Lookup]] = {}
    for found in dataset.collections:
        if found.name not in included:
            continue
        for field in found.fields:
            identity = field_meta(field).identity
            kind = identity_kind(identity) if identity is not None else None
            if kind in kinds:
                entries.setdefault(found.name, []).append(Lookup(field.name, IdentitySource(kind)))
    edges = [
        edge
        for edge in references(dataset)
        if edge.from_collection in included
        and edge.to_collection in included
        and edge.from_collection != edge.to_collection
    ]

    # Which collections are reached at all, in the order a breadth-first walk meets them.
    order: list[str] = sorted(entries)
    reached = set(order)
    queue = deque(order)
    while queue:
        current = queue.popleft()
        for edge in edges:
            if edge.from_collection == current and edge.to_collection not in reached:
                reached.add(edge.to_collection)
                order.append(edge.to_collection)
                queue.append(edge.to_collection)
    rank = {name: index for index, name in enumerate(order)}
    feeds: dict[str, list[tuple[str, str, str]]] = {name: [] for name in order}
    for edge in edges:
        if edge.from_collection in reached and edge.to_collection in reached:
            feeds[edge.to_collection].append((edge.from_collection, edge.from_field, edge.to_field))

    placed = _dependency_order(order, rank, feeds, set(entries))
    by_name = {c.name: c for c in dataset.collections}
    position = {name: index for index, name in enumerate(placed)}
    steps = []
    for name in placed:
        lookups = list(entries.get(name, []))
        for source, source_field, target_field in sorted(feeds[name], key=lambda f: (position[f[0]], f[1], f[2])):
            if position[source] < position[name]:
                lookups.append(Lookup(target_field, FieldSource(source, source_field)))
        steps.append(Step(name, primary_key(by_name[name]), tuple(dict.fromkeys(lookups))))
    unreachable = tuple(sorted(included - reached))
    return TraversalPlan(dataset.fides_key, tuple(steps), unreachable)


def _dependency_order(
    order: list[str], rank: Mapping[str, int], feeds: Mapping[str, list[tuple[str, str, str]]], entries: set[str]
) -> list[str]:
    """Collections so that each comes after every collection feeding it, cycles aside.

    The cycles are the strongly connected components; the components are ordered so that a component
    comes after every component feeding it, and inside a component the member met first goes first,
    then each member something already placed can feed.
    """
    component = _components(order, feeds)
    members: dict[int, list[str]] = {}
    for name in order:
        members.setdefault(component[name], []).append(name)
    needs = {
        group: {component[source] for name in names for source, _, _ in feeds[name]} - {group}
        for group, names in members.items()
    }
    placed: list[str] = []
    done_groups: set[int] = set()
    done: set[str] = set()
    while len(done_groups) < len(members):
        ready = [group for group in members if group not in done_groups and needs[group] <= done_groups]
        group = min(ready, key=lambda g: min(rank[name] for name in members[g]))
        waiting = list(members[group])
        while waiting:
            fed = [n for n in waiting if n in entries or any(source in done for source, _, _ in feeds[n])]
            chosen = min(fed or waiting, key=rank.__getitem__)
            waiting.remove(chosen)
            placed.append(chosen)
            done.add(chosen)
        done_groups.add(group)
    return placed


def _components(order: list[str], feeds: Mapping[str, list[tuple[str, str, str]]]) -> dict[str, int]:
    """Tarjan's strongly connected components of the graph source -> collection (iterative)."""
    successors: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for source, _, _ in feeds[name]:
            successors[source].append(name)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    component: dict[str, int] = {}
    counter = 0
    for root in order:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if child < len(successors[node]):
                work.append((node, child + 1))
                nxt = successors[node][child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = index[node]
                    if member == node:
                        break
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return component
