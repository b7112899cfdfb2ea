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
        return with_intervals(out, [r["pred"] == r["label"] for r in records],
                              [r["ref_pred"] == r["label"] for r in records],
                              [r["pred"] == r["ref_pred"] for r in records], [r["label"] in r["top5"] for r in records])
    return with_intervals(out, [r["pred"] == r["label"] for r in records], top5=[r["label"] in r["top5"] for r in records])


# --- 95% confidence intervals ---------------------------------------------------------------------
#
# Top-1, top-5 and agreement are proportions of independent videos: Wilson score intervals (good
# coverage even at 0 or 100%, unlike the normal approximation). The INT8-vs-FP32 (or now-vs-baseline)
# top-1 drop is a *paired* difference on the same videos: only the discordant videos carry
# information, so its interval is exact and McNemar-based (``paired_drop_ci``). Everything here is
# a deterministic function of counts, so shard merges and re-runs give identical intervals.

CONFIDENCE = 0.95


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_ci(hits: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the proportion ``hits / n``, in percent."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = _z(confidence)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (continued fraction, modified Lentz)."""
    import math

    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def _beta_quantile(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(56):  # bisection to ~1e-17: monotone and robust at the extremes
        mid = (lo + hi) / 2
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(hits: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion, as fractions in [0, 1]."""
    if n <= 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    lower = 0.0 if hits == 0 else _beta_quantile(alpha / 2, hits, n - hits + 1)
    upper = 1.0 if hits == n else _beta_quantile(1 - alpha / 2, hits + 1, n - hits)
    return (lower, upper)


def mcnemar_p(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: ``lost`` vs ``gained`` discordant videos under Binomial(m, 1/2)."""
    m = lost + gained
    if m == 0:
        return 1.0
    k = min(lost, gained)
    return min(1.0, 2.0 * _betainc(m - k, k + 1, 0.5))  # 2 * P(X <= k)


def paired_drop_ci(lost: int, gained: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact McNemar-based interval of the paired top-1 drop ``(lost - gained) / n``, in points.

    ``lost``: videos the reference gets right and the test gets wrong; ``gained``: the reverse.
    The drop is ``pi_m (2 theta - 1)`` with ``pi_m`` the rate of discordant videos and ``theta`` the
    share of them that were lost. ``theta`` given the ``m`` discordant videos is binomial (the
    exact McNemar test's model): Clopper-Pearson. So is ``m`` out of ``n``: Clopper-Pearson. Each at
    ``1 - alpha/2`` (Bonferroni), the drop's interval is the range of ``pi_m (2 theta - 1)`` over
    both: coverage >= ``confidence`` with no approximation. Unlike the conditional interval alone
    (or a paired bootstrap), it does not collapse to [0, 0] when no video flipped: 0 flips in 1,000
    videos still leaves a drop of up to ~0.4 points possible.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    m = lost + gained
    each = 1.0 - (1.0 - confidence) / 2
    rate_lo, rate_hi = clopper_pearson(m, n, each)
    share_lo, share_hi = clopper_pearson(lost, m, each) if m else (0.0, 1.0)
    low, high = 2 * share_lo - 1, 2 * share_hi - 1
    lower = low * (rate_hi if low < 0 else rate_lo)
    upper = high * (rate_hi if high > 0 else rate_lo)
    return (100.0 * lower, 100.0 * upper)


DROP_CI_METHOD = "exact McNemar-based (Clopper-Pearson on the discordant split x on the discordant rate, Bonferroni)"


def with_intervals(out: dict, correct: list[bool], ref_correct: list[bool] | None = None,
                   agree: list[bool] | None = None, top5: list[bool] | None = None) -> dict:
    """``out`` with the 95% intervals of its top-1 (/ top-5, reference top-1, agreement, drop) added.

    ``*_ci`` are ``[low, high]`` in percent (points for ``top1_drop_ci``); ``discordant`` counts
    the videos only the reference got right (``lost``) and only the test got right (``gained``)."""
    n = len(correct)
    out["top1_ci"] = list(wilson_ci(sum(correct), n))
    if top5 is not None:
        out["top5_ci"] = list(wilson_ci(sum(top5), n))
    if agree is not None:
        out["agreement_ci"] = list(wilson_ci(sum(agree), n))
    if ref_correct is not None:
        lost = sum(1 for r, c in zip(ref_correct, correct) if r and not c)
        gained = sum(1 for r, c in zip(ref_correct, correct) if c and not r)
        out["ref_top1_ci"] = list(wilson_ci(sum(ref_correct), n))
        out["top1_drop_ci"] = list(paired_drop_ci(lost, gained, n))
        out["discordant"] = {"lost": lost, "gained": gained}
        out["mcnemar_p"] = mcnemar_p(lost, gained)
        out["top1_drop_method"] = DROP_CI_METHOD
    out["confidence"] = CONFIDENCE
    return out


def fmt_ci(value, ci, digits: int = 2) -> str:
    """``93.50 [90.11, 95.63]`` (or ``-`` / the bare value when there is no interval)."""
    if value is None:
        return "-"
    if not ci:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
