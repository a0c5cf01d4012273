"""The collector setting `serve` and `worker` apply once start-up is done (privacy_service.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from privacy_service.gc_tuning import THRESHOLDS, tune_after_startup


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_the_first_threshold_raised() -> None:
    kept = [object() for _ in range(10)]  # noqa: F841 - alive at the freeze, like start-up's structures
    gc.unfreeze()
    tune_after_startup()
    assert gc.get_freeze_count() > 1000  # this process's modules and the objects above
    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[0] > 700  # raised from CPython's default
