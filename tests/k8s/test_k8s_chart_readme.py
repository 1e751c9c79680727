"""charts/ray-training/README.md is generated from values.yaml's `# --` comments (and Chart.yaml,
presets/) by scripts/chart_readme.py and kept current; Chart.yaml carries Artifact Hub metadata."""

from __future__ import annotations

import importlib.util
import re

import yaml

import k8s_support as k


def _generator():
    spec = importlib.util.spec_from_file_location("chart_readme", k.REPO_ROOT / "scripts" / "chart_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_chart_readme_is_current():
    committed = (k.CHART_DIR / "README.md").read_text()
    assert committed == _generator().render(), \
        "charts/ray-training/README.md is out of date: run `.venv/bin/python scripts/chart_readme.py` and commit it"


def test_every_documented_value_is_in_the_readme_with_its_default():
    gen = _generator()
    values_text = (k.CHART_DIR / "values.yaml").read_text()
    documented = dict(gen.documented_keys(values_text))
    assert len(documented) == len(re.findall(r"(?m)^\s*# --", values_text)), "every `# --` documents a key"
    readme = (k.CHART_DIR / "README.md").read_text()
    for key in ("job.preRunningDeadlineSeconds", "head.schedulable", "head.volumes", "job.naming",
                "monitoring.podMonitor.enabled"):
        assert key in documented, key
        assert f"| `{key}` |" in readme
    assert '| `head.schedulable` | `true` |' in readme
    for preset in k.PRESETS_DIR.glob("*.yaml"):
        assert f"`presets/{preset.name}`" in readme


def test_comment_parser_follows_nesting_and_continuations():
    gen = _generator()
    text = ("# not a doc comment\n"
            "a:\n"
            "  # -- first line\n"
            "  # second line\n"
            "  b: 1\n"
            "  c:\n"
            "    # -- deep\n"
            "    d: []\n"
            "  # plain comment\n"
            "  e: 2\n"
            "# -- top\n"
            "f: {}\n")
    assert gen.documented_keys(text) == [("a.b", "first line second line"), ("a.c.d", "deep"), ("f", "top")]


def test_chart_metadata_for_artifact_hub():
    meta = yaml.safe_load((k.CHART_DIR / "Chart.yaml").read_text())
    license_ = re.search(r'license = \{ text = "([^"]+)" \}', (k.REPO_ROOT / "pyproject.toml").read_text())
    assert meta["annotations"]["artifacthub.io/license"] == license_.group(1)
    links = yaml.safe_load(meta["annotations"]["artifacthub.io/links"])
    assert links and all(set(link) == {"name", "url"} and link["url"].startswith("https://") for link in links)
    assert {"ray", "kuberay", "rayjob"} <= set(meta["keywords"])
