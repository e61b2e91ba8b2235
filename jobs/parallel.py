"""Run a job's disjoint partitions at once, each in a thread on its own connection.

    batches = Parallel([partial(sweep, part=(k, 2)) for k in range(2)])
    for outcome in batches:  # in the caller's thread, as each partition yields it
        ...

Each part is a callable returning an iterable of batch outcomes (the same shape as
`jobs.runner.Work` yields); it is called *and* iterated in its own thread, so every
database statement it makes runs on that thread's own Django connection (Django's
connections are per thread), which is closed when the part ends. The parts must
not lock the same rows: a job splits its work so that they never can (the expiry
sweep by wallet), and then they can neither wait for nor deadlock each other.

The caller sees one stream of outcomes and counts them as it would a single loop's.
`wind_down()` (the runner's time budget) lets every part finish the batch it is in
and start no other; iteration then ends once they have, so every committed batch is
still seen. If a part raises, the others are wound down the same way, their last
outcomes still come out, and then the part's exception is raised in the caller.
`close()` (a caller that stops early, or fails) winds down and waits for the threads.

Each batch stays its own database transaction inside its part, so a process killed
at any moment leaves whole batches of every part behind, as a single loop would.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from django.db import connections

T = TypeVar("T")

_DONE = object()


class Parallel(Generic[T]):
    def __init__(self, parts: Sequence[Callable[[], Iterable[T]]], *, name: str = "part") -> None:
        self._queue: queue.SimpleQueue[tuple[object, T | BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._running = len(parts)
        self._threads = [
            threading.Thread(target=self._run, args=(part,), name=f"{name}-{k}", daemon=True)
            for k, part in enumerate(parts)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, part: Callable[[], Iterable[T]]) -> None:
        try:
            outcomes = iter(part())
            try:
                while not self._stop.is_set():
                    try:
                        outcome = next(outcomes)
                    except StopIteration:
                        break
                    self._queue.put((None, outcome))
            finally:
                close = getattr(outcomes, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the caller's thread
            self._queue.put((_DONE, exc))
            return
        finally:
            connections.close_all()  # this thread's connections only
        self._queue.put((_DONE, None))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while self._running:
            kind, payload = self._queue.get()
            if kind is None:
                return payload  # type: ignore[return-value]
            self._running -= 1
            if isinstance(payload, BaseException):
                self._stop.set()  # the other parts finish their batch and stop
                if self._error is None:
                    self._error = payload
        self._join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        raise StopIteration

    def wind_down(self) -> None:
        """Every part finishes the batch it is in and starts no other; keep iterating
        to see those last outcomes."""
        self._stop.set()

    def close(self) -> None:
        """Stop early: wind down and wait for the threads (their last outcomes are
        dropped: the caller no longer counts)."""
        self._stop.set()
        self._join()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()
