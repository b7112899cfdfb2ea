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


# --- per-video records and their aggregation (eval, golden runs, shards and merges) -------------
#
# A record holds what aggregation needs for one video, so shard results merge into exactly the
# figures one run gives: sums are taken with ``math.fsum`` (exact, order-independent) and every
# figure is computed from records only.


COMBINE = ("sum_softmax", "sum_logits")


def combine_views(logits: np.ndarray, combine: str = "sum_softmax") -> np.ndarray:
    """One video's class scores from its views' logits ``[V, classes]``, as the family's official
    test code combines them (``TestProtocol.combine``): the mean of the softmax probabilities
    (ranks as SlowFast's / UniFormerV2's sum) or the mean of the logits (TimeSformer's sum)."""
    if combine not in COMBINE:
        raise ValueError(f"combine {combine!r}: choose one of {', '.join(COMBINE)}")
    logits = np.asarray(logits, dtype=np.float32)
    return softmax(logits).mean(0) if combine == "sum_softmax" else logits.mean(0)


def video_record(index: int, video: str, label: int, logits: np.ndarray, ref_logits: np.ndarray | None,
                 combine: str = "sum_softmax", notes: list[str] | None = None, padded: bool = False) -> dict:
    """Metrics of one video from its per-view logits ``[V, classes]`` (and the reference's).

    Predictions combine the views as ``combine`` says (``combine_views``); cosine and SQNR compare
    the view-averaged logits; ``max_abs_diff`` is the largest difference over every view. ``notes``:
    the data layer's warnings about the video (``padded``: shorter than one clip).
    """
    logits = np.asarray(logits, dtype=np.float32)
    scores = combine_views(logits, combine)
    top5 = np.argsort(-scores, kind="stable")[:5]
    record = {
        "index": int(index),
        "video": str(video),
        "label": int(label),
        "pred": int(top5[0]),
        "top5": [int(c) for c in top5],
        "views": int(len(logits)),
    }
    if notes:
        record["notes"] = list(notes)
    if padded:
        record["padded"] = True
    if ref_logits is not None:
        ref_logits = np.asarray(ref_logits, dtype=np.float32)
        ref_pred = int(np.argsort(-combine_views(ref_logits, combine), kind="stable")[0])
        mean, ref_mean = logits.mean(0).astype(np.float64), ref_logits.mean(0).astype(np.float64)
        noise = float(((mean - ref_mean) ** 2).sum())
        signal = float((ref_mean**2).sum())
        record.update(
            ref_pred=ref_pred,
            cosine=float(cosine(mean, ref_mean)),
            signal=signal,
            noise=noise,
            sqnr_db=float("inf") if noise == 0 else float(10.0 * np.log10(max(signal, 1e-30) / noise)),
            max_abs_diff=float(np.abs(logits.astype(np.float64) - ref_logits).max()),
        )
    return record


def aggregate(records: list[dict]) -> dict:
    """Dataset figures from per-video records (any order; the result does not depend on it)."""
    import math

    n = len(records)
    if n == 0:
        return {"videos": 0}
    pct = lambda hits: 100.0 * sum(1 for hit in hits if hit) / n  # noqa: E731
    out = {
        "videos": n,
        "top1": pct(r["pred"] == r["label"] for r in records),
        "top5": pct(r["label"] in r["top5"] for r in records),
        "padded_videos": sum(1 for r in records if r.get("padded")),
        "warned_videos": sum(1 for r in records if r.get("notes")),
    }
    if all("ref_pred" in r for r in records):
        noise = math.fsum(r["noise"] for r in records)
        signal = math.fsum(r["signal"] for r in records)
        out.update(
            ref_top1=pct(r["ref_pred"] == r["label"] for r in records),
            agreement=pct(r["pred"] == r["ref_pred"] for r in records),
            cosine=math.fsum(r["cosine"] for r in records) / n,
            sqnr_db=float("inf") if noise == 0 else 10.0 * math.log10(max(signal, 1e-30) / noise),
            max_abs_diff=max(r["max_abs_diff"] for r in records),
        )
        out["top1_drop"] = out["ref_top1"] - out["top1"]
    return out
