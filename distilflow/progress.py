"""Progress of the long loops (ingestion, labelling, encoding, training).

The core asks for ``progress(total, desc)`` and calls ``update``; what the user sees is the
reporter's business: tqdm's bar by default (a person at a terminal), or whatever the
orchestration installs with ``report_progress_with`` (``tasks/progress.py``: a log line at each
tenth and a Prefect progress artifact, instead of a log line per bar refresh). The core never
knows which.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress(Protocol):
    """What a loop reports to: tqdm's bar has exactly this shape."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, **values: Any) -> Any: ...

    def close(self) -> Any: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: object) -> Any: ...


class Reporter(Protocol):
    def __call__(self, total: int | None, desc: str, unit: str, initial: int) -> Progress: ...


def tqdm_bar(total: int | None, desc: str, unit: str, initial: int) -> Progress:
    """tqdm's bar on stderr."""
    bar: Progress = tqdm(total=total, desc=desc, unit=unit, initial=initial)
    return bar


_reporter: list[Reporter] = [tqdm_bar]  # the installed reporter (a list: no ``global``)


def report_progress_with(reporter: Reporter | None) -> Reporter:
    """Install ``reporter`` for every later ``progress`` call of this process (None: tqdm);
    returns the one it replaces."""
    previous, _reporter[0] = _reporter[0], reporter or tqdm_bar
    return previous


def progress(
    total: int | None, desc: str, *, unit: str = "it", initial: int = 0, enabled: bool = True
) -> Progress:
    """A loop's progress: ``update(n)`` after each piece of work, ``close`` (or ``with``) at
    its end. ``enabled`` False: nothing is shown."""
    if not enabled:
        quiet: Progress = tqdm(total=total, disable=True)
        return quiet
    return _reporter[0](total, desc, unit, initial)


def tracked(items: Iterable[T], bar: Progress) -> Iterator[T]:
    """``items``, each counted on ``bar`` once it has been handled; ``bar`` closed at the end."""
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
