"""95% confidence intervals on accuracy figures, and gates that check them (``gate_on``)."""

import numpy as np
import pytest

from edgevid.errors import EdgevidError
from edgevid.harness import gates as gates_mod
from edgevid.harness.metrics import (aggregate, clopper_pearson, mcnemar_p, paired_drop_ci, video_record,
                                     wilson_ci)
from edgevid.harness.regress import compare_runs


def test_wilson_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775
    low, high = wilson_ci(81, 263)
    assert (round(low / 100, 4), round(high / 100, 4)) == (0.2553, 0.3662)
    assert wilson_ci(0, 10) == pytest.approx((0.0, 27.75), abs=0.01)
    assert wilson_ci(10, 10) == pytest.approx((72.25, 100.0), abs=0.01)


def test_clopper_pearson_and_mcnemar_match_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy (optional) is the cross-check")
    for hits, n in ((0, 20), (3, 1000), (57, 200), (199, 200), (500, 1000), (1, 1)):
        low, high = clopper_pearson(hits, n)
        ref_low = 0.0 if hits == 0 else stats.beta.ppf(0.025, hits, n - hits + 1)
        ref_high = 1.0 if hits == n else stats.beta.ppf(0.975, hits + 1, n - hits)
        assert (low, high) == pytest.approx((ref_low, ref_high), abs=1e-9)
    for lost, gained in ((10, 2), (0, 7), (5, 5), (40, 22), (1, 0)):
        assert mcnemar_p(lost, gained) == pytest.approx(stats.binomtest(lost, lost + gained, 0.5).pvalue, abs=1e-12)
    assert mcnemar_p(0, 0) == 1.0


def test_paired_drop_interval_is_not_degenerate_without_flips():
    low, high = paired_drop_ci(0, 0, 1000)
    assert low < 0 < high and high == pytest.approx(-low) and 0.3 < high < 0.5  # ~ "rule of three" in points
    low, high = paired_drop_ci(12, 2, 200)  # drop 5 points
    assert low < 5.0 < high and low > 0  # significant: McNemar p < 0.05 too
    assert mcnemar_p(12, 2) < 0.05
    low, high = paired_drop_ci(3, 3, 200)
    assert low < 0 < high


@pytest.mark.parametrize("n,p_lost,p_gained", [(200, 0.02, 0.005), (1000, 0.003, 0.0), (300, 0.05, 0.05)])
def test_paired_drop_interval_covers_the_true_drop(n, p_lost, p_gained):
    """Monte Carlo: the true drop falls inside the interval in >= 95% of simulated runs."""
    rng = np.random.default_rng(0)
    truth = 100 * (p_lost - p_gained)
    draws = rng.multinomial(n, [p_lost, p_gained, 1 - p_lost - p_gained], size=2000)[:, :2]
    pairs, counts = np.unique(draws, axis=0, return_counts=True)  # few distinct (lost, gained): one interval each
    inside = [low <= truth <= high for low, high in (paired_drop_ci(int(a), int(b), n) for a, b in pairs)]
    covered = float(np.dot(inside, counts)) / len(draws)
    assert covered >= 0.95


def _records(ref_right: list[bool], test_right: list[bool]) -> list[dict]:
    """Per-video records with 3 classes: the label is 0; a right prediction is 0, a wrong one 1."""
    out = []
    for i, (r, t) in enumerate(zip(ref_right, test_right)):
        ref = np.array([[4.0, 0, 0]]) if r else np.array([[0, 4.0, 0]])
        logits = np.array([[4.0, 0, 0]]) if t else np.array([[0, 4.0, 0]])
        out.append(video_record(i, f"v{i}.mp4", 0, logits, ref))
    return out


def test_aggregate_carries_intervals():
    ref = [True] * 180 + [False] * 20
    test = [True] * 170 + [False] * 10 + [True] * 2 + [False] * 18  # lost 10, gained 2
    metrics = aggregate(_records(ref, test))
    assert metrics["top1"] == pytest.approx(86.0) and metrics["top1_drop"] == pytest.approx(4.0)
    assert metrics["discordant"] == {"lost": 10, "gained": 2}
    assert metrics["top1_ci"] == pytest.approx(list(wilson_ci(172, 200)))
    assert metrics["agreement_ci"] == pytest.approx(list(wilson_ci(188, 200)))
    assert metrics["top1_drop_ci"] == pytest.approx(list(paired_drop_ci(10, 2, 200)))
    assert metrics["mcnemar_p"] == pytest.approx(mcnemar_p(10, 2))
    assert "McNemar" in metrics["top1_drop_method"]
    # order-independent: shards merge into the same intervals
    assert aggregate(list(reversed(_records(ref, test)))) == metrics


def _gates(text: str, tmp_path) -> gates_mod.Gates:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    return gates_mod.load_gates(path)


def test_gate_on_upper_ci_passes_only_when_the_data_says_so(tmp_path):
    ref = [True] * 190 + [False] * 10
    test = [True] * 189 + [False] * 1 + [False] * 10  # drop 0.5 points on 200 videos: 1 lost, 0 gained
    metrics = aggregate(_records(ref, test))
    low, high = metrics["top1_drop_ci"]
    assert metrics["top1_drop"] == pytest.approx(0.5) and high > 1.0
    by_value = gates_mod.check(metrics, _gates("max_top1_drop: 1.0\n", tmp_path))
    assert by_value[0]["passed"] is True and by_value[0]["value"] == pytest.approx(0.5)
    upper = gates_mod.check(metrics, _gates("max_top1_drop: 1.0\nmin_agreement: 99.0\ngate_on: upper_ci\n", tmp_path))
    assert [r["passed"] for r in upper] == [False, False]  # 200 videos cannot show a drop <= 1 or agreement >= 99
    assert upper[0]["value"] == pytest.approx(high) and upper[0]["checked"] == "upper_ci"
    assert upper[1]["value"] == pytest.approx(metrics["agreement_ci"][0]) and upper[1]["checked"] == "lower_ci"
    assert "95% CI" in gates_mod.describe(gates_mod.failed(upper))
    # the same drop on 5,000 videos' worth of evidence: 25 lost, 0 gained -> the data now says <= 1.0
    many = aggregate(_records([True] * 5000, [True] * 4975 + [False] * 25))
    assert gates_mod.check(many, _gates("max_top1_drop: 1.0\ngate_on: upper_ci\n", tmp_path))[0]["passed"] is True


def test_gate_on_lower_ci_fails_only_when_the_data_says_so(tmp_path):
    ref = [True] * 200
    test = [True] * 196 + [False] * 4  # drop 2 points, but 4 flips on 200 videos do not prove > 1 point
    metrics = aggregate(_records(ref, test))
    strict = gates_mod.check(metrics, _gates("max_top1_drop: 1.0\n", tmp_path))
    lenient = gates_mod.check(metrics, _gates("max_top1_drop: 1.0\ngate_on: lower_ci\n", tmp_path))
    assert strict[0]["passed"] is False and lenient[0]["passed"] is True
    assert lenient[0]["value"] == pytest.approx(metrics["top1_drop_ci"][0])
    clear = aggregate(_records(ref, [True] * 180 + [False] * 20))  # 20 lost: the data says > 1 point
    assert gates_mod.check(clear, _gates("max_top1_drop: 1.0\ngate_on: lower_ci\n", tmp_path))[0]["passed"] is False


def test_gate_on_needs_an_interval_and_a_known_mode(tmp_path):
    rows = gates_mod.check({"top1_drop": 0.2, "sqnr_db": 30.0}, _gates("max_top1_drop: 1\nmin_sqnr_db: 20\ngate_on: upper_ci\n", tmp_path))
    assert rows[0]["passed"] is None and rows[0]["value"] is None  # no interval: not judged on the point value
    assert rows[1]["passed"] is True and rows[1].get("checked", "value") == "value"  # SQNR has no interval
    with pytest.raises(EdgevidError, match="gate_on"):
        _gates("max_top1_drop: 1\ngate_on: upper\n", tmp_path)
    precision = _gates("max_top1_drop: 1\ngate_on: upper_ci\nprecision:\n  fp32: {max_top1_drop: 0.0}\n", tmp_path)
    assert precision.for_precision("fp32").gate_on == "upper_ci"


def test_regress_drop_interval_is_paired():
    before = [{"video": f"v{i}", "pred": int(i >= 240), "label": 0} for i in range(300)]  # 80% top-1
    now = [dict(r, pred=1) if i < 10 else dict(r) for i, r in enumerate(before)]  # 10 newly wrong, 0 newly right
    run = lambda videos: {"model": "m", "data_digest": "d", "per_video": videos, "sqnr_db": 30.0}  # noqa: E731
    metrics = compare_runs("eval", run(now), run(before))["metrics"]
    assert metrics["top1_drop"] == pytest.approx(10 / 3)
    assert metrics["top1_drop_ci"] == pytest.approx(list(paired_drop_ci(10, 0, 300)))
    assert metrics["top1_drop_ci"][0] > 0  # 10 of 10 flips one way: a real drop, though the two top-1 Wilson
    assert metrics["baseline_top1_ci"][0] < metrics["top1_ci"][1]  # intervals overlap (unpaired, it would not show)
    assert metrics["top1_ci"] == pytest.approx(list(wilson_ci(230, 300)))
    assert metrics["agreement_ci"] == pytest.approx(list(wilson_ci(290, 300)))
    assert metrics["mcnemar_p"] == pytest.approx(2 * 0.5**10)
