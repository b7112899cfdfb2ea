"""`edgevid report`'s accuracy-vs-speed plot: labels that never overlap, end-to-end beside model-only."""

import itertools

import pytest

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'edgevid[report]'")


def boxes(fig, annotations):
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in annotations]


def test_labels_of_nearly_coincident_points_do_not_overlap():
    """torch-cpu and onnx-cpu FP32 land on the same spot (same speed, same accuracy): both labels readable."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgevid.harness.report import place_labels

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    points = [(100.0, 90.0, "torch-cpu"), (101.0, 90.05, "onnx-cpu"), (99.0, 89.95, "intel-cpu (int8)"),
              (400.0, 88.0, "onnx-cpu (int8)"), (405.0, 88.0, "intel-cpu")]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xscale("log")
    ax.set_xlim(50, 800)
    ax.set_ylim(86, 92)
    annotations = place_labels(ax, points)
    fig.canvas.draw()
    placed = boxes(fig, annotations)
    assert [a.get_text() for a in annotations] == [p[2] for p in points]
    for first, second in itertools.combinations(placed, 2):
        assert not first.overlaps(second), (first, second)
    markers = [ax.transData.transform((x, y)) for x, y, _ in points]
    for box in placed:
        assert not any(box.contains(mx, my) for mx, my in markers)  # no label sits on a point
    plt.close(fig)


def test_plot_shows_end_to_end_beside_model_only(tmp_path):
    from edgevid.harness.report import plot_accuracy_vs_fps

    rows = [{"artifact": f"x3d_synth-{t}-{p}", "target": t, "backend": b, "precision": p, "top-1": acc, "FPS": fps,
             "agreement %": None, "e2e FPS": e2e}
            for t, b, p, acc, fps, e2e in (("torch-cpu", "torch", "fp32", 93.0, 1400.0, 600.0),
                                           ("onnx-cpu", "onnxruntime", "fp32", 93.0, 1410.0, 610.0),
                                           ("intel-cpu", "openvino", "int8", 92.5, 18000.0, 1900.0))]
    import matplotlib.pyplot as plt

    saved = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):  # look at the figure as it is saved
        ax = fig.axes[0]
        saved["xlabel"] = ax.get_xlabel()
        saved["hollow"] = sum(1 for c in ax.collections if len(c.get_facecolors()) and tuple(c.get_facecolors()[0]) == (1, 1, 1, 1))
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        saved["labels"] = [t.get_window_extent(renderer) for t in ax.texts]
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        path = plot_accuracy_vs_fps(rows, tmp_path / "report.png")
    finally:
        plt.Figure.savefig = original
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
    assert "model-only" in saved["xlabel"] and "end-to-end" in saved["xlabel"]
    assert saved["hollow"] == 3 and len(saved["labels"]) == 3
    for first, second in itertools.combinations(saved["labels"], 2):
        assert not first.overlaps(second)
