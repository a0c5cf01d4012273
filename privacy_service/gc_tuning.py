"""The garbage collector of a long-running process (``serve``, ``worker``), set once after start-up.

Why: CPython's cyclic collector walks every tracked object in a full collection. After start-up
that is mostly what never dies (modules, the policy, the route table, SQLAlchemy's and Litestar's
structures: ~200,000 objects here), walked again on every full collection, ~100-150 ms each on the
development machine while requests wait. ``gc.freeze()`` moves what start-up built into the
permanent generation, which collections skip. And the default first-generation threshold (700
allocations) makes a request of a few thousand short-lived objects trigger several collections, each
scanning the survivors; at 10,000 most of a request's objects are freed by reference counting
before a collection ever looks at them. Measured in the intake bench: collector time from ~1.3 s to
~0.2 s of CPU over the same run (docs/benchmarks.md). Cyclic garbage lives a little longer (at most
one first-generation batch), nothing else changes.
"""

from __future__ import annotations

import gc

# (first generation, second, third): the first raised from CPython's 700; the others are its defaults.
THRESHOLDS = (10_000, 10, 10)


def tune_after_startup() -> None:
    """Freeze what start-up built and raise the first-generation threshold. Call once the process
    has imported and built what it keeps (the app, the scheduler), before it serves."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
