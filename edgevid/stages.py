"""The stages of one build (export, rewrite, calibration n/N, lowering, compile) and their wall time.

A backend wraps each step in ``with request.stages.stage("export"): ...``; a stage with a known
amount of work takes ``total`` and is advanced as it goes (``stage.advance()`` per calibration
clip). The seconds end up in the manifest (``stage_seconds``); a display (the CLI's rich one)
sees every start, advance and end. Torch-free.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, TypeVar

T = TypeVar("T")

#: the names the backends use, in the order a build runs them
STAGE_ORDER = ("calibration data", "export", "rewrite", "strategy benchmarks", "calibration", "quantize", "lowering",
               "compile", "check")


@dataclass
class Stage:
    """One running stage: ``done`` of ``total`` (None: no count) since ``started``."""

    name: str
    total: int | None
    started: float
    done: int = 0
    seconds: float | None = None
    _stages: "BuildStages | None" = None

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if self._stages is not None:
            self._stages._emit("advance", self)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._stages is not None:
            self._stages._emit("advance", self)


class StageDisplay(Protocol):
    def __call__(self, event: str, stage: Stage) -> None:
        """``event`` is 'start', 'advance' or 'end'."""


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished children (e.g. a calibrator
    run in a subprocess): what a stage costs whatever else shares the machine."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class BuildStages:
    """Per-stage wall and CPU time of one build; a stage entered twice (e.g. two exports) adds up."""

    def __init__(self, display: StageDisplay | None = None):
        self.display = display
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def _emit(self, event: str, stage: Stage) -> None:
        if self.display is not None:
            self.display(event, stage)

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Stage]:
        current = Stage(name, total, time.perf_counter(), _stages=self)
        cpu_started = cpu_seconds()
        self._emit("start", current)
        try:
            yield current
        finally:
            current.seconds = time.perf_counter() - current.started
            self.seconds[name] = self.seconds.get(name, 0.0) + current.seconds
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu_seconds() - cpu_started
            self._emit("end", current)

    def add(self, name: str, seconds: float) -> None:
        """Record time measured elsewhere (a part of a stage, e.g. the rewrite's strategy benchmarks)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def track(self, items: Iterable[T], name: str, total: int | None = None) -> Iterator[T]:
        """Iterate ``items`` inside stage ``name``, advancing it once per item."""
        with self.stage(name, total if total is not None else _len(items)) as current:
            for item in items:
                yield item
                current.advance()

    def rounded(self, cpu: bool = False) -> dict[str, float]:
        """The wall (``cpu``: CPU) seconds per stage, in build order, for the manifest."""
        order = {name: i for i, name in enumerate(STAGE_ORDER)}
        seconds = self.cpu if cpu else self.seconds
        return {k: round(v, 2) for k, v in sorted(seconds.items(), key=lambda kv: order.get(kv[0], len(order)))}


def _len(items) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None


class Ticking:
    """A sized iterable that advances ``stage`` for every item handed out (NNCF's dataset). A tool
    that iterates it again (a second statistics pass) does not count past ``stage.total``."""

    def __init__(self, items, stage: Stage):
        self._items = items
        self._stage = stage

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        for item in self._items:  # counted as handed out: a tool that takes exactly N items never asks for item N+1
            if self._stage.total is None or self._stage.done < self._stage.total:
                self._stage.advance()
            yield item
