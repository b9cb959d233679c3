"""After a tracking SDK is imported, its objects are set aside from Python's cyclic collector.

Importing MLflow (or W&B, or Neptune) leaves a few hundred thousand long-lived objects (modules,
classes, functions, schemas) on the heap. CPython's full collections walk every one of them each
time, which costs 0.2-0.5 s a pass on this kind of machine and stops every thread, the training
loop's included, while it runs. Those objects live as long as the process, so walking them finds
nothing. Right after such an import, and after a backend is built, :func:`settle` collects once, then moves every object alive
at that moment into the permanent generation (:func:`gc.freeze`), where later collections do not
look. Objects frozen this way are still freed by reference counting as usual; only a reference
cycle among them that becomes garbage later is kept until the process ends.

``TRACKKIT_GC_FREEZE=0`` turns this off. It never runs when the collector is disabled (the
program manages collection itself). See ``docs/reliability.md`` ("Garbage collection").
"""

from __future__ import annotations

import gc
import sys
import threading

from trackkit import env

__all__ = ["MIN_NEW_MODULES", "settle"]

#: fewer modules loaded than this since the last settle are not worth a collection
MIN_NEW_MODULES = 20

_lock = threading.Lock()
_settled_at = len(sys.modules)  # at the last freeze (at first: when trackkit was loaded)


def settle() -> bool:
    """Freeze the heap if many modules were loaded since the last time; whether it did.

    Called after a tracking SDK is imported and after a backend is built (building MLflow's
    sqlite store loads SQLAlchemy and Alembic and creates as many objects again).

    Raises:
        InvalidInput: ``$TRACKKIT_GC_FREEZE`` is not an on/off value.
    """
    global _settled_at
    if len(sys.modules) - _settled_at < MIN_NEW_MODULES:
        return False
    if not env.switch("TRACKKIT_GC_FREEZE", True) or not gc.isenabled():
        return False
    with _lock:
        _settled_at = len(sys.modules)
        gc.collect()
        gc.freeze()
    return True
