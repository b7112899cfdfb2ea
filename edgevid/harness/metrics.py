"""Agreement metrics between an artifact's logits and the FP32 reference. Numpy only."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[-1])
    top = np.argpartition(-scores, k - 1, axis=-1)[:, :k]
    return (top == labels[:, None]).any(axis=-1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference`` over all elements."""
    noise = float(((reference - test) ** 2).sum())
    signal = float((reference**2).sum())
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)


def compare(scores: np.ndarray, labels: np.ndarray, ref_logits: np.ndarray | None, logits: np.ndarray) -> dict:
    """Aggregate metrics for N videos: accuracy vs labels and agreement vs the reference."""
    out = {
        "videos": int(len(labels)),
        "top1": float(topk_correct(scores, labels, 1).mean() * 100),
        "top5": float(topk_correct(scores, labels, 5).mean() * 100),
    }
    if ref_logits is not None:
        ref_scores = softmax(ref_logits)
        out.update(
            ref_top1=float(topk_correct(ref_scores, labels, 1).mean() * 100),
            agreement=float((scores.argmax(-1) == ref_scores.argmax(-1)).mean() * 100),
            cosine=float(cosine(logits, ref_logits).mean()),
            sqnr_db=sqnr_db(ref_logits, logits),
            max_abs_diff=float(np.abs(logits - ref_logits).max()),
        )
        out["top1_drop"] = out["ref_top1"] - out["top1"]
    return out
