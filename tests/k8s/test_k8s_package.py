"""The packaged chart (helm package, honouring .helmignore) ships the presets, and a preset taken
from inside the archive renders with the Helm engine exactly as from the chart directory."""

from __future__ import annotations

import tarfile

import pytest
import yaml

import k8s_support as k


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    import helm_python

    return helm_python.package(str(k.CHART_DIR), destination=str(tmp_path_factory.mktemp("pkg")))


def test_archive_ships_presets_but_not_ci_values(archive):
    names = tarfile.open(archive).getnames()
    presets = sorted(n.split("/", 1)[1] for n in names if n.startswith("ray-training/presets/"))
    assert presets == sorted(f"presets/{p.name}" for p in k.PRESETS_DIR.glob("*.yaml"))
    assert not [n for n in names if n.startswith("ray-training/ci/")], "ci/ stays out (.helmignore)"
    assert "ray-training/values.schema.json" in names


@pytest.mark.parametrize("preset", sorted(p.name for p in k.PRESETS_DIR.glob("*.yaml")))
def test_preset_from_the_archive_renders(archive, preset):
    import helm_python

    with open(archive, "rb") as f:
        chart = helm_python.Chart.load_archive(f.read())
    with chart:
        files = {x["name"]: x["data"] for x in chart.files}
        data = files[f"presets/{preset}"]
        values = yaml.safe_load(data if isinstance(data, str) else bytes(data).decode()) or {}
        rendered = chart.render(values, name=k.RELEASE, namespace=k.NAMESPACE, revision=1)
    objs = k.objects_from_rendered(rendered)
    assert k.by_kind(objs, "RayJob") or k.by_kind(objs, "RayCluster")
    same = k.render_objects(k.load_values(k.PRESETS_DIR / preset))
    assert _comparable(objs) == _comparable(same)
    errors = [e for o in objs for e in k.validation_errors(o)]
    assert not errors, "\n".join(dict.fromkeys(errors))


def _comparable(objs):
    """The objects without the Ray token (random on every render)."""
    return [{**o, "data": None} if o["kind"] == "Secret" else o for o in objs]
