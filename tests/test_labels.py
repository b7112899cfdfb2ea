"""Label sets shipped as data, dataset-to-model class mapping, custom label files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edgevid.data.manifest import load_dataset
from edgevid.errors import DataError
from edgevid.harness.eval import class_mapping
from edgevid.labels import LABEL_DIR, labels_for, normalise_name, read_label_file, shipped_labels
from edgevid.models import get_spec

# sha256 of the shipped files: identical to MMAction2's tools/data/kinetics/label_map_k{400,600,700}.txt
# and tools/data/sthv2/label_map.txt (the index order of the official checkpoints)
DIGESTS = {
    "kinetics400": ("e9f2806fe9109b851a80a74841244f6f8c9d10917fa0229cd82bab67f2f8e28f", 400, "abseiling", "zumba"),
    "kinetics600": ("8dfca4202520ea8291ce0242ef33b006d0a0772b409663c090a2876bc1978dcf", 600, "abseiling", "zumba"),
    "kinetics700": ("2f265d35aa76060219f7e83aff12f5aaba9d1fe27360aa83f11aad7a3648fc51", 700, "abseiling", "zumba"),
    "ssv2": ("c9c5a86ece619e1ab2e7ca0614c85377a534873e17108b13243e5d22089a0a85", 174,
             "Approaching something with your camera", "Wiping something off of something"),
}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_shipped_label_sets(name):
    digest, count, first, last = DIGESTS[name]
    assert hashlib.sha256((LABEL_DIR / f"{name}.txt").read_bytes()).hexdigest() == digest
    names = shipped_labels(name)
    assert len(names) == len(set(names)) == count and names[0] == first and names[-1] == last
    assert names == sorted(names, key=str.lower)  # the official checkpoints index the classes alphabetically


def test_models_carry_the_real_class_names():
    x3d = get_spec("x3d_s")
    assert labels_for(x3d.label_set, x3d.num_classes)[:2] == ["abseiling", "air drumming"]
    ssv2 = get_spec("uniformerv2_b16_ssv2")
    assert labels_for(ssv2.label_set, ssv2.num_classes)[0] == "Approaching something with your camera"
    assert labels_for("kinetics400", 10) == [f"class_{i}" for i in range(10)]  # a resized head: placeholders


def test_folders_map_by_normalised_name_with_did_you_mean():
    labels = labels_for("kinetics400", 400)
    mapping = class_mapping(["Playing_Guitar", "abseiling", "air-drumming"], labels, "data")
    assert list(mapping) == [labels.index("playing guitar"), 0, 1]
    assert normalise_name("Playing_Guitar") == normalise_name("playing guitar")
    with pytest.raises(DataError, match=r"class 'abseilin' is not one of the model's 400 labels.*Did you mean 'abseiling'") as caught:
        class_mapping(["abseilin"], labels, "data")
    assert "\n" not in str(caught.value)


def test_integer_labels_are_range_checked_without_building_classes(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label\na.mp4,3\nb.mp4,99999999999999999999999\n")
    dataset = load_dataset(tmp_path / "m.csv")
    with pytest.raises(DataError, match="label 99999999999999999999999 is outside the model's 400 classes"):
        class_mapping(dataset.classes, labels_for("kinetics400", 400), "m.csv")
    huge = "9" * 5000  # beyond int()'s digit limit: a name, not an index, and no traceback
    (tmp_path / "h.csv").write_text(f"path,label\na.mp4,{huge}\n")
    with pytest.raises(DataError, match="is not one of the model's"):
        class_mapping(load_dataset(tmp_path / "h.csv").classes, labels_for("kinetics400", 400), "h.csv")
    assert list(class_mapping(["3", "7"], labels_for("kinetics400", 400), "m.csv")) == [3, 7]


def test_bad_manifests_are_one_line_errors(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "u16.csv").write_text("path,label\na.mp4,abseiling\n", encoding="utf-16")
    (tmp_path / "sup.csv").write_text("path,label\na.mp4,\u00b2\n", encoding="utf-8")
    with pytest.raises(DataError, match="UTF-16"):
        load_dataset(tmp_path / "u16.csv")
    with pytest.raises(DataError, match="is a video, not a dataset"):
        load_dataset(tmp_path / "a.mp4")
    sup = load_dataset(tmp_path / "sup.csv")  # '²'.isdigit() is True, but it is a name here
    with pytest.raises(DataError, match="class '\u00b2' is not one of"):
        class_mapping(sup.classes, labels_for("kinetics400", 400), "sup.csv")


def test_label_files(tmp_path):
    (tmp_path / "a.txt").write_text("walk\nrun\n\njump\n")
    assert read_label_file(tmp_path / "a.txt") == ["walk", "run", "jump"]
    (tmp_path / "b.json").write_text(json.dumps({"run": "1", "walk": "0"}))
    assert read_label_file(tmp_path / "b.json") == ["walk", "run"]
    (tmp_path / "c.json").write_text(json.dumps(["x", "y"]))
    assert read_label_file(tmp_path / "c.json") == ["x", "y"]
    bad = {"dup.txt": ("Walk\nwalk\n", "name the same class"), "empty.txt": ("\n\n", "lists no class names"),
           "gap.json": (json.dumps({"a": 0, "b": 2}), "indices must be 0..1"), "bad.json": ("{", "invalid JSON")}
    for name, (text, fragment) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=fragment):
            read_label_file(tmp_path / name)
    (tmp_path / "u16.txt").write_text("walk\n", encoding="utf-16")
    with pytest.raises(DataError, match="not UTF-8"):
        read_label_file(tmp_path / "u16.txt")
    with pytest.raises(DataError, match="file not found"):
        read_label_file(tmp_path / "missing.txt")


def test_build_with_a_custom_label_file(tmp_path):
    from edgevid.build import build_artifact

    (tmp_path / "labels.txt").write_text("wave\nclap\npoint\n")
    artifact = build_artifact("x3d_synth", "torch-cpu", weights="random", out=tmp_path / "out",
                              labels_file=tmp_path / "labels.txt")
    manifest = artifact.manifest
    assert manifest.labels == ["wave", "clap", "point"] and manifest.spec.num_classes == 3
    assert manifest.spec.label_set == "custom:labels.txt" and manifest.spec.training_fps == 15
    from edgevid.backends import open_runner

    with open_runner(artifact, threads=1) as runner:
        assert runner(np.zeros(manifest.input_shape, np.float32)).shape == (1, 3)
    with pytest.raises(DataError, match="names 3 classes but --num-classes is 5"):
        build_artifact("x3d_synth", "torch-cpu", weights="random", out=tmp_path / "o2", num_classes=5,
                       labels_file=tmp_path / "labels.txt")
    assert not (tmp_path / "o2").exists()
