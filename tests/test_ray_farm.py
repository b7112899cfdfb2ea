"""The Ray device farm on a local cluster started by the test: two nodes on this host, each advertising a
fake 'onnx-cpu' device."""

import pytest

ray = pytest.importorskip("ray", reason="Ray not installed: pip install 'edgevid[ray]'")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[build]'")

import harness_models as hm  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.errors import EdgevidError  # noqa: E402
from edgevid.harness import farm, golden  # noqa: E402
from edgevid.harness.eval import evaluate  # noqa: E402

VIDEOS = 8
LOOSE = "max_top1_drop: 100\nmin_agreement: 0\nmin_sqnr_db: 0\n"


def _start_cluster():
    from ray.cluster_utils import Cluster

    # Every node on this host (Ray picks the host's own address: pinning them to 127.0.0.1 made the
    # driver hang in GcsClient::FetchClusterId with Ray 2.60 here).
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1, resources={"onnx-cpu": 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster, nodes


@pytest.fixture(scope="module")
def cluster():
    try:
        started = _start_cluster()
    except Exception as exc:  # Ray's own start-up (its raylet gives its agent ~30 s), before any edgevid code
        pytest.skip(f"Ray could not start a local cluster on this machine: {str(exc).splitlines()[0][:160]}")
    yield started
    ray.shutdown()
    started[0].shutdown()


def _result(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("run", "report")}


def test_golden_run_on_the_farm_equals_the_single_machine_run(cluster, tmp_path):
    cluster, nodes = cluster
    gates = tmp_path / "gates.yaml"
    gates.write_text(LOOSE)
    art = hm.copy(hm.artifact(hm.TINY, "int8"), tmp_path)
    pack = golden.make_pack(hm.TINY, ensure_split("val", VIDEOS), VIDEOS, tmp_path / "pack", weights="random",
                            chunk_videos=2, threads=1)
    local = golden.run_pack(art.path, pack, gates=gates, threads=1)
    spread = golden.run_pack(art.path, pack, gates=gates, threads=1, ray=cluster.address)
    assert _result(spread) == _result(local)
    shards = spread["run"]["shards"]
    assert {s["node"] for s in shards} == {n.node_id for n in nodes}  # both devices ran a shard
    assert sorted(c for s in shards for c in s["chunks"]) == [0, 1, 2, 3]


def test_eval_on_the_farm_equals_the_single_machine_run(cluster, tmp_path):
    cluster, nodes = cluster
    art = hm.copy(hm.artifact(hm.TINY, "int8"), tmp_path)
    val = ensure_split("val", VIDEOS)
    # the FP32 reference runs here, on the driver (it knows the test-only model); the nodes run only
    # the artifact and never import torch
    for with_reference in (True, False):
        local = evaluate(art.path, val, threads=1, with_reference=with_reference)
        spread = evaluate(art.path, val, threads=1, with_reference=with_reference, ray=cluster.address, ray_shards=3)
        assert _result(spread) == _result(local) and spread["videos"] == VIDEOS
        assert ("agreement" in spread) == with_reference
        shards = spread["run"]["shards"]
        assert {s["node"] for s in shards} == {n.node_id for n in nodes}
        assert not any(s["torch_imported"] for s in shards)
        assert spread["runtime"].startswith("onnxruntime")
        if with_reference:  # the local run just stored the reference: the driver reads it from the cache
            assert spread["run"]["reference"]["source"] == "cache" and spread["run"]["reference"]["forwards"] == 0
            assert spread["run"]["reference"]["where"] == "on the driver" and spread["run"]["time_s"]["decode"] > 0


def test_shard_labels_count_videos_not_ranges():
    groups = farm.split(list(range(7)), 3)
    assert farm.shard_labels(groups) == ["1/3 (3 videos)", "2/3 (2 videos)", "3/3 (2 videos)"]


def test_a_target_without_devices_is_a_clear_error(cluster):
    cluster, _ = cluster
    with pytest.raises(EdgevidError, match="no node of the cluster advertises the resource 'jetson-orin'.*ray start"):
        farm.devices(farm.connect(cluster.address), "jetson-orin", cluster.address)
