"""Stop fairseq's data prefetch threads before the interpreter exits.

fairseq's ``BufferedIterator`` fills its queue from a daemon ``BackgroundConsumer`` thread.
When ``fairseq-train`` stops at ``--max-update`` in mid-epoch, that thread is still alive,
usually inside torch code building the next batch with the GIL released. During interpreter
finalization a daemon thread that takes the GIL back is ended by ``pthread_exit``, whose
forced unwinding through torch's ``noexcept`` C++ frames calls ``std::terminate``: "terminate
called without an active exception" and exit status 134 after a run that trained and saved
correctly. ``atexit`` callbacks run before finalization, while threads still run normally, so
the callback registered here lets every live prefetch thread finish the batch in hand and
return, draining its queue so that it never blocks, and joins it.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time

_registered = False


def _prefetch_threads() -> list[threading.Thread]:
    """Live ``BackgroundConsumer`` threads (none when fairseq's iterators were never used)."""
    iterators = sys.modules.get("fairseq.data.iterators")
    consumer = getattr(iterators, "BackgroundConsumer", None)
    if consumer is None:
        return []
    return [t for t in threading.enumerate() if isinstance(t, consumer) and t.is_alive()]


def stop_prefetch_threads(timeout: float = 30.0) -> list[threading.Thread]:
    """Make live prefetch threads return and join them; the ones still alive after ``timeout``
    seconds (a source that never yields) are returned."""
    threads = _prefetch_threads()
    for thread in threads:
        thread._max_len = 0  # type: ignore[attr-defined]  # stop after the batch in hand
    deadline = time.monotonic() + timeout
    for thread in threads:
        while thread.is_alive() and time.monotonic() < deadline:
            _drain(thread._queue)  # type: ignore[attr-defined]  # a full queue blocks put()
            thread.join(0.01)
    return [t for t in threads if t.is_alive()]


def _drain(items: queue.Queue) -> None:
    try:
        while True:
            items.get_nowait()
    except queue.Empty:
        pass


def register() -> None:
    """Run :func:`stop_prefetch_threads` at exit (once per process)."""
    global _registered
    if not _registered:
        atexit.register(stop_prefetch_threads)
        _registered = True
