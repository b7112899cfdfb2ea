"""Exporting models to portable graphs (torch.export, ONNX) shared by several backends."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import torch
from torch import nn

from .errors import EdgevidError, first_line

log = logging.getLogger("edgevid")
# The exporter warns once per torchvision op that torchvision is absent; we never use torchvision.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

ONNX_OPSET = 18  # >= 17 so LayerNorm is one node (TensorRT's normalization layer)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def batch_dim(min_batch: int, max_batch: int):
    return torch.export.Dim("batch", min=min_batch, max=max_batch)


def export_program(model: nn.Module, example: torch.Tensor, dynamic_batch: tuple[int, int] | None = None):
    """``torch.export.export`` with one readable error if the model is not export-clean."""
    shapes = {"x": {0: batch_dim(*dynamic_batch)}} if dynamic_batch else None
    try:
        return torch.export.export(model.eval(), (example,), dynamic_shapes=_named(model, shapes), strict=False)
    except Exception as exc:
        raise EdgevidError(f"torch.export of {type(model).__name__} failed: {first_line(exc)}") from None


def _named(model: nn.Module, shapes):
    """Key dynamic shapes by the forward argument's real name."""
    if shapes is None:
        return None
    import inspect

    first = next(iter(inspect.signature(model.forward).parameters))
    return {first: shapes["x"]}


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    dynamic_batch: tuple[int, int] | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export with the dynamo exporter to a single self-contained ``.onnx`` (external data if > 2 GB)."""
    program = export_program(model, example, dynamic_batch)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8e9
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            onnx_program = torch.onnx.export(
                program,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                optimize=True,
            )
            onnx_program.save(str(path), external_data=big)
    except EdgevidError:
        raise
    except Exception as exc:
        raise EdgevidError(f"ONNX export of {type(model).__name__} failed: {first_line(exc)}") from None
    log.debug("onnx exporter said: %s", sink.getvalue()[-2000:])
    return Path(path)
