"""`edgevid eval`: video-level accuracy of an artifact and its agreement with the FP32 reference."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..artifact import Artifact, Manifest
from ..backends import Runner, open_runner
from ..errors import DataError, EdgevidError
from .metrics import compare, softmax

log = logging.getLogger("edgevid")


def reference_runner(manifest: Manifest, threads: int | None = None) -> Runner:
    """PyTorch eager FP32 with the same weights the artifact was built from."""
    import torch

    from ..backends.torch_eager import TorchEagerRunner
    from ..models import create_model
    from ..models.weights import SHIPPED

    weights = manifest.weights
    if weights.random:
        torch.manual_seed(0)  # builds seed random init the same way
        path = None
    elif weights.source == "reference":
        path = SHIPPED / f"{manifest.model}.pt"
    else:
        path = weights.source
    model = create_model(manifest.model, num_classes=manifest.spec.num_classes, weights=path and str(path))
    return TorchEagerRunner(model, manifest.input_shape, threads)


def run_views(runner: Runner, views: np.ndarray) -> np.ndarray:
    """Logits [V, classes] for V preprocessed views, batched to the runner's input batch."""
    batch = runner.input_shape[0] if runner.input_shape else 1
    outputs = []
    for start in range(0, len(views), batch):
        chunk = views[start:start + batch]
        if len(chunk) < batch:  # static-batch artifacts: pad the last chunk
            pad = np.zeros((batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            outputs.append(runner(np.concatenate([chunk, pad]))[: len(chunk)])
        else:
            outputs.append(runner(chunk))
    logits = np.concatenate(outputs).astype(np.float32)
    if not np.isfinite(logits).all():
        raise EdgevidError("the artifact produced NaN/Inf logits; rebuild it (e.g. keep sensitive layers in float)")
    return logits


def class_mapping(dataset_classes: list[str], labels: list[str], data: str) -> np.ndarray:
    """Map dataset class indices to the model's label indices (by name, else by position)."""
    if all(c in labels for c in dataset_classes):
        return np.array([labels.index(c) for c in dataset_classes])
    if len(dataset_classes) <= len(labels) and all(c.isdigit() for c in dataset_classes):
        return np.array([int(c) for c in dataset_classes])
    raise DataError(
        f"--data {data}: its classes ({', '.join(dataset_classes[:4])}, ...) are not the model's labels"
        f" ({', '.join(labels[:4])}, ...); use a manifest whose labels are the model's class names"
    )


def evaluate(
    artifact_path: str | Path,
    data: str | Path,
    threads: int | None = None,
    limit: int | None = None,
    with_reference: bool = True,
    track: Callable[[Iterable, str, int], Iterable] | None = None,
) -> dict:
    """Evaluate with the model's test views; write the result into the artifact's report.json."""
    from ..data.manifest import load_dataset
    from ..data.views import test_views

    artifact = Artifact(artifact_path)
    spec = artifact.manifest.spec
    dataset = load_dataset(data)
    mapping = class_mapping(dataset.classes, artifact.labels, str(data))
    items = dataset.items[:limit] if limit else dataset.items
    runner = open_runner(artifact, threads=threads, mode="throughput")
    is_reference = artifact.manifest.backend == "torch_eager"
    reference = reference_runner(artifact.manifest, threads) if with_reference and not is_reference else None

    labels, logits, ref_logits, scores = [], [], [], []
    started = time.perf_counter()
    for path, label in (track(items, f"eval {artifact.path.name}", len(items)) if track else items):
        views = test_views(path, spec)
        out = run_views(runner, views)
        logits.append(out.mean(0))
        scores.append(softmax(out).mean(0))
        if reference is not None:
            ref_logits.append(run_views(reference, views).mean(0))
        labels.append(mapping[label])
    runner.close()
    if not labels:
        raise DataError(f"--data {data}: no videos to evaluate")
    logits_a = np.stack(logits)
    ref = np.stack(ref_logits) if ref_logits else (logits_a if is_reference else None)
    metrics = compare(np.stack(scores), np.array(labels), ref, logits_a)
    result = {
        "data": str(data),
        "views_per_video": spec.clip.test_clips * spec.clip.test_crops,
        "seconds": round(time.perf_counter() - started, 2),
        "reference": "pytorch eager fp32" if ref is not None else None,
        "label": _label(artifact.manifest),
        **metrics,
    }
    artifact.update_report("eval", result)
    return result


def _label(manifest: Manifest) -> str:
    if manifest.status.get("engine") == "pending on device":
        return f"{manifest.backend} {manifest.precision} (Q/DQ ONNX under ONNX Runtime CPU; engine pending on device)"
    return f"{manifest.backend} {manifest.precision}"
