"""Shared test helpers: run the real CLI in a subprocess, find reference weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgevid.models.weights import SHIPPED


def run_cli(*args: str, env: dict | None = None, prelude: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``edgevid ARGS`` exactly as a user would (through ``main()``), optionally after ``prelude``."""
    code = f"{prelude}\nimport sys\nfrom edgevid.cli import main\nsys.argv = ['edgevid', *{list(args)!r}]\nmain()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, no traceback, one error line that contains every fragment."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


TRAINED_TOP1 = 90.0
"""Val top-1 from which a reference model counts as trained (below it, its phases are work in progress)."""


def reference_weights(model: str, trained: bool = False) -> Path | None:
    """The shipped weights of ``model``; with ``trained``, only once their recorded val top-1 reaches
    ``TRAINED_TOP1`` (INT8 accuracy is judged on trained references, not on an unfinished phase)."""
    path = SHIPPED / f"{model}.pt"
    if not path.is_file():
        return None
    if trained:
        import json

        meta = SHIPPED / f"{model}.json"
        if not meta.is_file() or json.loads(meta.read_text()).get("val_top1", 0) < TRAINED_TOP1:
            return None
    return path


def random_model(name: str):
    """``(model, spec)`` for a registered variant with seeded random weights (seed 0), in eval mode."""
    import torch

    from edgevid.models import create_model, get_spec

    torch.manual_seed(0)
    return create_model(name, weights="random"), get_spec(name)
