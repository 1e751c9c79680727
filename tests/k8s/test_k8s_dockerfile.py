"""The Dockerfile: pinned official Ray base, the package installed, non-root, exec form; hadolint clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import k8s_support as k

DOCKERFILE = k.REPO_ROOT / "Dockerfile"


def parser():
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(path=str(DOCKERFILE))


def test_structure():
    df = parser()
    instr = [(i["instruction"], i["value"]) for i in df.structure]
    args = {v.split("=", 1)[0]: v.split("=", 1)[1].strip('"') for op, v in instr if op == "ARG" and "=" in v}
    assert args["BASE_IMAGE"] == "rayproject/ray:2.60.0-py311"
    assert ("FROM", "${BASE_IMAGE}") in instr
    pyproject = (k.REPO_ROOT / "pyproject.toml").read_text()
    assert '"ray[default,train,tune,data]==2.60.0"' in pyproject, "base image and pinned Ray must agree"
    run = " ".join(v for op, v in instr if op == "RUN")
    assert "pip install --no-cache-dir \".${EXTRAS:+[${EXTRAS}]}\"" in run
    user = [v for op, v in instr if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    entry = [v for op, v in instr if op == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["python", "-m", "training"], "exec form"
    copies = " ".join(v for op, v in instr if op == "COPY")
    for path in ("pyproject.toml", "README.md", "training/"):
        assert path in copies


def test_the_code_layer_carries_its_bytecode():
    """The pods import training/ from /home/ray/app (PYTHONPATH) with a read-only root filesystem:
    its .pyc must be in the image, compiled in the code's own layer (after its COPY, so a code-only
    rebuild keeps the dependency layer) and checked against the source's timestamp (a file skaffold
    syncs over it is compiled afresh, not run stale). tests/containers checks the built image."""
    instr = [(i["instruction"], i["value"]) for i in parser().structure]
    copy_code = next(n for n, (op, v) in enumerate(instr) if op == "COPY" and v.split()[-1] == "training/")
    compiled = [n for n, (op, v) in enumerate(instr) if op == "RUN" and "python -m compileall" in v]
    assert compiled and compiled[0] > copy_code, "no compileall of training/ after its COPY"
    run = instr[compiled[0]][1]
    assert re.search(r"python -m compileall( -\w+)* training\b", run) and "hash" not in run, run
    assert parser().envs["PYTHONPATH"] == "/home/ray/app"


def test_dockerignore_keeps_the_context_small():
    lines = [ln for ln in (k.REPO_ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!training/"} <= set(lines)


def test_hadolint_clean():
    exe = Path(sys.executable).parent / "hadolint"
    assert exe.exists(), "hadolint missing: install the k8s-verify extra (make install)"
    proc = subprocess.run([str(exe), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ray_processes_in_the_image_give_back_freed_memory_as_a_local_ray_does():
    from training.runtime.memory import WORKER_MEMORY_ENV

    assert WORKER_MEMORY_ENV and parser().envs.items() >= WORKER_MEMORY_ENV.items()
