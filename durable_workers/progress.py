"""Progress of a long command, for the person watching it: a bar on a terminal, plain lines in a log.

The whole API is one context manager and the three methods of what it yields::

    from durable_workers.progress import progress

    with progress("gc", total=len(batches), enabled=not as_json) as bar:
        for batch in batches:
            deleted = delete(batch)
            bar.advance(1, note=f"{deleted} workflows")   # one more done, and what it was
        bar.update(total=len(batches) + 1)               # or set completed=/total=/note= outright
        bar.log("a line that must be kept")              # printed above the bar (or as it is)

``progress(label, total=None, *, enabled=True, stream=None, interval=2.0)``:

* ``stream`` (default ``sys.stderr``) is a terminal: a rich progress bar
  (label, bar, done/total, note, elapsed). ``total=None``: the bar pulses and
  the count reads ``done/?``. Anything written to stderr meanwhile (and to
  stdout, when stdout is the same terminal) is printed above the bar.
* not a terminal (a file, a pipe, CI): a plain line ``label: done/total note``
  at most every ``interval`` seconds, and the final line when the block ends
  (not when it raises: a failing command's one error line stays alone).
* ``enabled=False`` (e.g. with ``--json`` output): nothing at all, ``log`` included.

Counts are numbers (``advance(0.5)`` is fine); the bar never writes to stdout.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator

#: Seconds between two plain lines when the stream is not a terminal.
PLAIN_INTERVAL_S = 2.0


class Progress:
    """What :func:`progress` yields; this base class shows nothing (``enabled=False``)."""

    def __init__(self, label: str, total: float | None) -> None:
        self.label = label
        self.total = total
        self.completed: float = 0
        self.note = ""

    def advance(self, amount: float = 1, *, note: str | None = None) -> None:
        """Count ``amount`` more done; ``note`` (if given) replaces the note shown beside the count."""
        self.update(completed=self.completed + amount, note=note)

    def update(self, *, completed: float | None = None, total: float | None = None, note: str | None = None) -> None:
        """Set the count done, the total or the note (``None``: unchanged)."""
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        self._changed()

    def log(self, text: str) -> None:
        """Print ``text`` as a line of its own (above the bar on a terminal)."""

    def _changed(self) -> None:
        """Show the new state (subclasses)."""

    def _close(self) -> None:
        """The block ended: show the final state (subclasses)."""

    def _abort(self) -> None:
        """The block raised: stop showing, print nothing more (subclasses)."""


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class _Lines(Progress):
    """Plain lines: at most one every ``interval`` seconds, and the last one."""

    def __init__(self, label: str, total: float | None, stream: IO[str], interval: float) -> None:
        super().__init__(label, total)
        self.stream, self.interval = stream, interval
        self._last = time.monotonic()  # the first line after one interval: a quick command prints one line only

    def line(self) -> str:
        """``label: done/total note`` (``label: done note`` with no total)."""
        count = _count(self.completed) + (f"/{_count(self.total)}" if self.total is not None else "")
        return f"{self.label}: {count}{' ' + self.note if self.note else ''}"

    def log(self, text: str) -> None:
        """Print ``text`` as it is."""
        print(text, file=self.stream, flush=True)

    def _changed(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.log(self.line())

    def _close(self) -> None:
        self.log(self.line())


class _Bar(Progress):
    """A rich progress bar on a terminal."""

    def __init__(self, label: str, total: float | None, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

        super().__init__(label, total)
        self._rich = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(), console=Console(file=stream), redirect_stdout=_same_terminal(stream),
            redirect_stderr=True,
        )  # fmt: skip
        self._task = self._rich.add_task(label, total=total, note="")
        self._rich.start()

    def log(self, text: str) -> None:
        """Print ``text`` above the bar."""
        self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _changed(self) -> None:
        self._rich.update(self._task, completed=self.completed, total=self.total, note=self.note)

    def _close(self) -> None:
        self._changed()
        self._rich.stop()

    def _abort(self) -> None:
        self._rich.stop()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _same_terminal(stream: IO[str]) -> bool:
    """True when stdout is the terminal ``stream`` is (its lines must then go above the bar)."""
    try:
        return _is_terminal(sys.stdout) and os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(stream.fileno()))
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def progress(
    label: str,
    total: float | None = None,
    *,
    enabled: bool = True,
    stream: IO[str] | None = None,
    interval: float = PLAIN_INTERVAL_S,
) -> Iterator[Progress]:
    """Show the progress of the block: a bar on a terminal, plain lines otherwise (see the module docstring)."""
    out = stream if stream is not None else sys.stderr
    if not enabled:
        shown = Progress(label, total)
    elif _is_terminal(out):
        shown = _Bar(label, total, out)
    else:
        shown = _Lines(label, total, out, interval)
    try:
        yield shown
    except BaseException:
        shown._abort()  # the command fails: its one error line is all the user should see
        raise
    shown._close()
