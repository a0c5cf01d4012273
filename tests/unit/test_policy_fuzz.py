"""Hypothesis against the policy parser: whatever is in policies/, loading either succeeds or raises
PolicyError with a one-line message (the CLI prints it as is). Never another exception.

Three sources of bad input: YAML documents built from generated trees, structural mutations of the
shipped files (a node deleted, replaced or renamed), and character-level damage to their text.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from privacy_service.policy.loader import PolicyError, load_policy
from tests.policy_files import POLICIES

FILES = ("policy.yaml", "notice.en.yaml", "notice.zh.yaml")
SHIPPED = {name: yaml.safe_load((POLICIES / name).read_text(encoding="utf-8")) for name in FILES}
TEXTS = {name: (POLICIES / name).read_text(encoding="utf-8") for name in FILES}
FUZZ = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

keys = st.text(max_size=12) | st.integers(-3, 3)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.dates()
    | st.datetimes()
    | st.sampled_from(["P5Y", "P0D", "PT1H", "user.contact.email", "en", "zh", "https://x.example", "a@b.example"])
)
trees = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)


def assert_loads_or_policy_error(folder: Path) -> None:
    try:
        load_policy(folder)
    except PolicyError as exc:
        error = exc
    else:
        return
    message = str(error)
    assert error.problems
    assert message.strip()
    assert len(message.splitlines()) == 1, repr(message)
    for problem in error.problems:
        assert len(str(problem).splitlines()) == 1, repr(str(problem))


def policy_copy(files: dict[str, str]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="policy-fuzz-") as name:
        folder = Path(name) / "policies"
        shutil.copytree(POLICIES, folder)
        for file, text in files.items():
            (folder / file).write_text(text, encoding="utf-8")
        yield folder


def check(files: dict[str, str]) -> None:
    for folder in policy_copy(files):
        assert_loads_or_policy_error(folder)


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from paths(child, (*prefix, index))


PATHS = {name: [path for path in paths(SHIPPED[name]) if path] for name in FILES}


def mutate(data: Any, path: tuple[Any, ...], how: str, value: Any, new_key: Any) -> None:
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "replace":
        parent[last] = value
    elif isinstance(parent, dict):  # rename
        parent[new_key] = parent.pop(last)


@FUZZ
@given(st.sampled_from(FILES), trees)
@example("policy.yaml", {"\r": 1})  # found by this test: a line break in a key split the message
@example("notice.en.yaml", {"sections": {"a\nb\u2028c": {}}})
def test_a_generated_document_in_place_of_a_file(file: str, tree: Any) -> None:
    check({file: dump(tree)})


@FUZZ
@given(st.data())
def test_structural_mutations_of_the_shipped_files(data: st.DataObject) -> None:
    documents = {name: yaml.safe_load(TEXTS[name]) for name in FILES}
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        file = data.draw(st.sampled_from(FILES), label="file")
        document = documents[file]
        path = data.draw(st.sampled_from(PATHS[file]), label="path")
        try:
            mutate(
                document,
                path,
                data.draw(st.sampled_from(["delete", "replace", "rename"]), label="how"),
                data.draw(trees, label="value"),
                data.draw(keys, label="new key"),
            )
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or reshaped this path
    check({name: dump(document) for name, document in documents.items()})


@FUZZ
@given(st.sampled_from(FILES), st.data())
def test_damaged_yaml_text(file: str, data: st.DataObject) -> None:
    text = TEXTS[file]
    start = data.draw(st.integers(0, len(text)), label="start")
    end = data.draw(st.integers(start, min(len(text), start + 200)), label="end")
    insert = data.draw(
        st.text(max_size=20) | st.sampled_from(["\t", ": ", "- ", "{", "[", "&a", "*a", "!!python/object"])
    )
    check({file: text[:start] + insert + text[end:]})


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_the_policy_file(raw: bytes) -> None:
    for folder in policy_copy({}):
        (folder / "policy.yaml").write_bytes(raw)
        assert_loads_or_policy_error(folder)


def test_the_shipped_files_load_through_the_same_harness() -> None:
    """The harness round-trips the shipped documents without damaging them (so a pass means something)."""
    for folder in policy_copy({name: dump(SHIPPED[name]) for name in FILES}):
        assert load_policy(folder).version == SHIPPED["policy.yaml"]["version"]
