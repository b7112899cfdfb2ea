"""The accuracy harness: eval (test views, resume, shards + merge), bad input, regress, reports."""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[build]'")

import harness_models as hm  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.errors import DataError, EdgevidError  # noqa: E402
from edgevid.harness.errors import GateFailed, NonFiniteOutput  # noqa: E402
from edgevid.harness.eval import evaluate, merge, merge_into  # noqa: E402
from helpers import assert_one_line_error, run_cli  # noqa: E402

VIDEOS = 12


def without_run(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "run"}


@pytest.fixture(scope="module")
def val():
    return ensure_split("val", VIDEOS)


@pytest.fixture(scope="module")
def int8():
    return hm.artifact(hm.TINY, "int8")


@pytest.fixture(scope="module")
def single(int8, val, tmp_path_factory):
    """One uninterrupted, unsharded run: what every other way of running must reproduce."""
    art = hm.copy(int8, tmp_path_factory.mktemp("single"))
    return evaluate(art.path, val, threads=1)


def test_eval_uses_test_views_and_compares_with_reference(single):
    assert single["status"] == "ok" and single["videos"] == VIDEOS
    assert single["views_per_video"] == 2 and all(r["views"] == 2 for r in single["per_video"])
    # video-level figures are recomputable from the per-video records
    records = single["per_video"]
    assert single["top1"] == pytest.approx(100 * np.mean([r["pred"] == r["label"] for r in records]))
    assert single["agreement"] == pytest.approx(100 * np.mean([r["pred"] == r["ref_pred"] for r in records]))
    noise, signal = sum(r["noise"] for r in records), sum(r["signal"] for r in records)
    assert single["sqnr_db"] == pytest.approx(10 * np.log10(signal / noise))
    assert 0 < single["max_abs_diff"] and single["sqnr_db"] < 80  # INT8: not bit-identical to FP32


def test_shards_merge_into_exactly_the_single_run(int8, val, single, tmp_path):
    art = hm.copy(int8, tmp_path)
    shards = [evaluate(art.path, val, threads=1, shard=f"{i}/3") for i in (1, 2, 3)]
    assert sorted(r["index"] for s in shards for r in s["per_video"]) == list(range(VIDEOS))
    assert {s["videos"] for s in shards} == {4}
    merged, into = merge_into([art.path])  # the shards recorded in the artifact's report.json
    assert into is not None and without_run(merged) == without_run(single)
    assert without_run(json.loads((art.path / "report.json").read_text())["eval"]) == without_run(single)
    # the same from shard JSON files, given in any order
    files = []
    for s in reversed(shards):
        files.append(tmp_path / f"shard-{s['shard'].replace('/', 'of')}.json")
        files[-1].write_text(json.dumps(s))
    assert without_run(merge_into(files)[0]) == without_run(single)
    with pytest.raises(EdgevidError, match="missing shard"):
        merge(shards[:2])
    with pytest.raises(EdgevidError, match="--shard"):
        evaluate(art.path, val, shard="4/3")


def test_interrupted_eval_resumes_where_it_stopped(int8, val, single, tmp_path):
    art = hm.copy(int8, tmp_path)
    seen = []

    def stop_after_five(items, description, total):
        for item in items:
            if len(seen) == 5:
                raise KeyboardInterrupt
            seen.append(item.index)
            yield item

    with pytest.raises(KeyboardInterrupt):
        evaluate(art.path, val, threads=1, track=stop_after_five)
    progress = list((art.path / ".progress").glob("eval-*.jsonl"))
    assert len(progress) == 1 and len(progress[0].read_text().splitlines()) == 5

    rerun = []

    def count(items, description, total):
        for item in items:
            rerun.append(item.index)
            yield item

    result = evaluate(art.path, val, threads=1, track=count)
    assert sorted(rerun) == list(range(5, VIDEOS))  # only what had not run
    assert result["run"]["resumed_videos"] == 5
    assert without_run(result) == without_run(single)
    assert not progress[0].exists()  # finished: nothing left to resume


def _manifest(folder, rows, classes=None):
    folder.mkdir(exist_ok=True)
    lines = ["path,label"] + [f"{p},{label}" for p, label in rows]
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    if classes:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder / "m.csv"


def test_labels_outside_the_models_classes_are_refused(int8, val, tmp_path):
    from edgevid.data.manifest import load_dataset

    videos = [p for p, _ in load_dataset(val).items[:3]]
    by_index = _manifest(tmp_path / "a", [(v, i * 4 + 1) for i, v in enumerate(videos)])  # labels 1, 5, 9 of 8 classes
    with pytest.raises(DataError, match="label 9 is outside the model's 8 classes"):
        evaluate(int8.path, by_index)
    by_name = _manifest(tmp_path / "b", [(videos[0], "move_left"), (videos[1], "jump")])
    proc = run_cli("eval", str(int8.path), "--data", str(by_name), prelude="import sys; sys.path.insert(0, 'tests'); import harness_models")
    assert_one_line_error(proc, "class 'jump' is not one of the model's 8 labels")
    assert proc.returncode == 2


def test_nan_output_stops_with_a_partial_report(val, tmp_path):
    art = hm.copy(hm.artifact(hm.NAN, "fp32"), tmp_path)
    with pytest.raises(NonFiniteOutput, match="NaN/Inf logits on .*0 of 12 videos ran"):
        evaluate(art.path, val, threads=1)
    report = json.loads((art.path / "report.json").read_text())["eval"]
    assert report["status"] == "failed" and report["videos"] == 0 and "NaN/Inf" in report["errors"][-1]
    assert "failed" in (art.path / "report.md").read_text()


def test_regress_compares_a_new_build_with_the_last_good_one(val, tmp_path):
    from edgevid.harness.regress import regress

    good = hm.copy(hm.artifact(hm.TINY, "int8"), tmp_path / "good")
    naive = {"quantizer": "ort", "calibrate_method": "minmax", "op_types_to_quantize": None}
    new = hm.copy(hm.artifact(hm.TINY, "int8", options=naive), tmp_path / "new")
    base = evaluate(good.path, val, threads=1)
    (tmp_path / "baseline.json").write_text((good.path / "report.json").read_text())
    loose = tmp_path / "loose.yaml"
    loose.write_text("max_top1_drop: 100\nmin_agreement: 0\n")
    result = regress(new.path, tmp_path / "baseline.json", gates=loose, data=str(val))
    now = json.loads((new.path / "report.json").read_text())["eval"]
    changed = [a["video"] for a, b in zip(base["per_video"], now["per_video"]) if a["pred"] != b["pred"]]
    assert [c["video"] for c in result["changed"]] == changed
    assert result["metrics"]["agreement"] == pytest.approx(100 * (VIDEOS - len(changed)) / VIDEOS)
    assert result["metrics"]["top1_drop"] == pytest.approx(base["top1"] - now["top1"])
    assert result["status"] == "ok" and "regress" in (new.path / "report.md").read_text()
    strict = tmp_path / "strict.yaml"
    strict.write_text("min_agreement: 100\nmin_sqnr_db: 200\n")
    with pytest.raises(GateFailed, match="regressed"):
        regress(new.path, tmp_path / "baseline.json", gates=strict)  # reuses the eval just written
    assert json.loads((new.path / "report.json").read_text())["regress"]["status"] == "regressed"
    other = ensure_split("val", 8)
    with pytest.raises(EdgevidError, match="other videos"):
        regress(new.path, tmp_path / "baseline.json", data=str(other))


def test_report_table_and_accuracy_vs_fps_plot(val, tmp_path):
    from edgevid.bench import bench_artifact
    from edgevid.harness.report import write_folder_report

    results = {}
    for precision in ("fp32", "int8"):
        art = hm.copy(hm.artifact(hm.TINY, precision), tmp_path / "arts")
        results[art.path.name] = evaluate(art.path, val, threads=1)
        bench_artifact(art.path, threads=1, min_seconds=0.2)
    rows, table, plot = write_folder_report(tmp_path / "arts")
    assert {r["artifact"] for r in rows} == set(results)
    for row in rows:
        assert row["top-1"] == results[row["artifact"]]["top1"] and row["FPS"] > 0 and row["p50 ms"] > 0
        assert row["drop vs FP32"] == results[row["artifact"]]["top1_drop"]
    text = table.read_text()
    assert all(name in text for name in results) and "FPS" in text
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'edgevid[report]'")
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (960, 600)
