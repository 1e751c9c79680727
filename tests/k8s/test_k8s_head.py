"""head.schedulable: false keeps Ray tasks and actors off the head (num-cpus/num-gpus "0"), as
Ray recommends for multi-node clusters; the multi-node presets use it, a head-only cluster never."""

from __future__ import annotations

import pytest

import k8s_support as k

MULTI_NODE = ("xgboost-ensemble-cpu.yaml", "tune-cpu.yaml", "bert-gpu.yaml")


def _cluster(objs) -> dict:
    jobs = k.by_kind(objs, "RayJob")
    return jobs[0]["spec"]["rayClusterSpec"] if jobs else k.one(objs, "RayCluster")["spec"]


def test_default_head_is_schedulable():
    params = _cluster(k.render_objects({}))["headGroupSpec"]["rayStartParams"]
    assert "num-cpus" not in params and "num-gpus" not in params


def test_unschedulable_head_gets_no_cpus_or_gpus_and_the_train_shape_stays():
    on = k.render_objects({})
    off = k.render_objects({"head": {"schedulable": False}})
    head = _cluster(off)["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["num-gpus"] == "0"
    # Only the head changes: the pods keep their Kubernetes resources (the GCS, dashboard and
    # driver still need them) and the job asks for the same Ray Train workers.
    assert head["template"]["spec"]["containers"][0]["resources"] == \
        _cluster(on)["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    for g in _cluster(off)["workerGroupSpecs"]:
        assert "num-cpus" not in g["rayStartParams"]
    assert k.one(off, "RayJob")["spec"]["entrypoint"] == k.one(on, "RayJob")["spec"]["entrypoint"]
    errors = [e for o in off for e in k.validation_errors(o)]
    assert not errors, errors


@pytest.mark.parametrize("preset", sorted(k.PRESETS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_presets_keep_work_off_the_head_only_with_workers(preset, scenario_renders):
    values = k.load_values(preset)
    cs = _cluster(scenario_renders[preset.name])
    off = cs["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
    assert off == (preset.name in MULTI_NODE), preset.name
    if off:   # Ray work needs somewhere to run: at least one worker pod with CPUs.
        assert values["head"]["schedulable"] is False
        assert any(max(g["replicas"], g.get("maxReplicas", 0)) > 0 for g in cs["workerGroupSpecs"])


def test_explicit_head_cpus_contradict_unschedulable():
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match='head.rayStartParams.num-cpus="4" contradicts'):
        k.render({"head": {"schedulable": False, "rayStartParams": {"num-cpus": "4"}}})
    # Saying the same thing twice is fine.
    k.render({"head": {"schedulable": False, "rayStartParams": {"num-cpus": "0"}}})
