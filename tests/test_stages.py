"""Build stages: seconds per stage for the manifest, and the events the progress display sees."""

import time

from edgevid.stages import BuildStages, Ticking


def test_stages_time_each_step_and_report_progress_in_build_order():
    events = []
    stages = BuildStages(lambda event, stage: events.append((event, stage.name, stage.done, stage.total)))
    with stages.stage("export"):
        time.sleep(0.02)
    for _ in stages.track(range(3), "calibration"):
        pass
    with stages.stage("export"):  # a second export (e.g. after a rewrite) adds to the first
        time.sleep(0.01)
    stages.add("strategy benchmarks", 1.5)
    assert stages.seconds["export"] >= 0.03
    assert list(stages.rounded()) == ["export", "strategy benchmarks", "calibration"]
    assert ("advance", "calibration", 3, 3) in events and events[-1][0] == "end"
    assert [e for e in events if e[1] == "calibration"][0] == ("start", "calibration", 0, 3)


def test_cpu_seconds_count_work_not_waiting():
    stages = BuildStages()
    with stages.stage("calibration"):
        time.sleep(0.2)  # waiting (another process has the core): wall, no CPU
    with stages.stage("lowering"):
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:  # busy: CPU
            pass
    cpu, wall = stages.rounded(cpu=True), stages.rounded()
    assert wall["calibration"] >= 0.2 and cpu["calibration"] < 0.1
    assert cpu["lowering"] >= 0.2 and list(cpu) == list(wall)


def test_a_stage_that_fails_is_still_timed_and_ended():
    ended = []
    stages = BuildStages(lambda event, stage: ended.append(stage.name) if event == "end" else None)
    try:
        with stages.stage("lowering"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert ended == ["lowering"] and "lowering" in stages.seconds


def test_ticking_counts_a_second_pass_only_up_to_the_total():
    stages = BuildStages()
    with stages.stage("calibration", total=4) as stage:
        data = Ticking(list(range(4)), stage)
        assert len(data) == 4
        assert list(data) == [0, 1, 2, 3] and stage.done == 4
        list(data)  # NNCF iterates again for bias correction
        assert stage.done == 4
