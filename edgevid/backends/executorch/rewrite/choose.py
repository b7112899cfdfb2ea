"""Per-layer choice between the Conv3d strategies, by timing both on XNNPACK (cached).

For each temporal Conv3d geometry (input shape, kernel, stride, padding, groups) and precision,
a micro-model - depthwise 1x1x1 conv, the Conv3d, depthwise 1x1x1 conv, so the layer sits between
channels-last XNNPACK ops as in a network - is rewritten with each strategy, lowered to a
``.pte`` and timed in process with ExecuTorch. The faster one wins; the decision and both times
are cached in ``$EDGEVID_HOME/rewrite/conv3d_strategy.json`` under a key that also holds the
thread count, the ExecuTorch version and the CPU, so a decision is only reused where it was
measured. The choice is measured on the build machine's XNNPACK kernels: for a phone, force a
strategy (target option ``conv3d_strategy``) or copy a cache file measured on the device.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ....paths import edgevid_home
from .conv3d import STRATEGIES, Conv3dSpec

log = logging.getLogger("edgevid")


def cache_path() -> Path:
    return edgevid_home() / "rewrite" / "conv3d_strategy.json"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _executorch_version() -> str:
    try:
        from importlib.metadata import version

        return version("executorch")
    except Exception:  # noqa: BLE001 - any failure only weakens the cache key
        return "unknown"


class StrategyChooser:
    """Callable ``(spec, module_name) -> strategy`` that measures once per geometry."""

    def __init__(self, precision: str = "fp32", threads: int | None = None, path: Path | None = None):
        self.precision = precision
        self.threads = threads or 1
        self.path = Path(path) if path else cache_path()
        self.decisions: list[dict] = []
        self._cache = self._load()
        self._context = f"{precision}|threads={self.threads}|executorch={_executorch_version()}|{_cpu()}"

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".conv3d_strategy.")
            with os.fdopen(fd, "w") as handle:
                json.dump(self._cache, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only home only costs re-measuring next time
            log.debug("could not write %s: %s", self.path, exc)

    def __call__(self, spec: Conv3dSpec, module: str = "") -> str:
        key = f"{spec.key()}|{self._context}"
        entry = self._cache.get(key)
        cached = entry is not None
        if not cached:
            started = time.perf_counter()
            times = measure_all(spec, self.precision, self.threads)
            entry = {"strategy": min(times, key=times.get), "ms": {k: round(v, 4) for k, v in times.items()},
                     "measure_s": round(time.perf_counter() - started, 2)}
            self._cache[key] = entry
            self._save()
            log.debug("conv3d %s: %s", spec.key(), entry)
        self.decisions.append({"module": module, "spec": spec.key(), "cached": cached, **entry})
        return entry["strategy"]


class _Probe(nn.Module):
    """depthwise 1x1x1 -> the Conv3d -> depthwise 1x1x1."""

    def __init__(self, spec: Conv3dSpec):
        super().__init__()
        self.pre = nn.Conv3d(spec.c, spec.c, 1, groups=spec.c)
        self.conv = nn.Conv3d(spec.c, spec.out_channels, spec.kernel, spec.stride, spec.padding, spec.dilation,
                              spec.groups)
        self.post = nn.Conv3d(spec.out_channels, spec.out_channels, 1, groups=spec.out_channels)

    def forward(self, x):
        return self.post(self.conv(self.pre(x)))


def measure_all(spec: Conv3dSpec, precision: str = "fp32", threads: int = 1, rounds: int = 3,
                margin: float = 1.25) -> dict[str, float]:
    """Best time in ms of the micro-model under each strategy, timed in alternating rounds so
    that a burst of load on a shared machine hits both alike; after the first round, it stops
    as soon as the slower strategy's best is more than ``margin`` x the faster one's (a clear
    decision no later round would overturn)."""
    from .xnnpack import set_threads, time_method

    set_threads(threads)  # before any program loads
    example = torch.randn(spec.n, spec.c, spec.t, spec.h, spec.w, generator=torch.Generator().manual_seed(0))
    methods = {strategy: _lowered(spec, strategy, precision, example) for strategy in STRATEGIES}
    best = {strategy: float("inf") for strategy in STRATEGIES}
    for _ in range(rounds):
        for strategy, method in methods.items():
            best[strategy] = min(best[strategy], time_method(method, [example], min_seconds=0.1))
        if max(best.values()) > margin * min(best.values()):
            break
    return best


def _lowered(spec: Conv3dSpec, strategy: str, precision: str, example: torch.Tensor):
    from .xnnpack import export, load_method, lower, pte_bytes, quantize, rewrite_for_xnnpack

    torch.manual_seed(0)
    probe = _Probe(spec).eval()
    gm = rewrite_for_xnnpack(probe, example, strategy=strategy, check=False).graph_module
    program = export(gm, example)
    if precision == "int8":
        # ranges only matter for accuracy, not for the speed probed here: the cheap observer
        program = quantize(program, example, [example, torch.randn_like(example)], activation_observer="minmax")
    return load_method(pte_bytes(lower(program)))


__all__ = ["STRATEGIES", "StrategyChooser", "cache_path", "measure_all"]
