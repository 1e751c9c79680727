"""`python -m training [group=option ...] [key=value ...]`: compose the config, run the workload.

Composition uses Hydra's compose API (same defaults list, config groups and override grammar
as a `@hydra.main` app) so that every user mistake, Hydra's included, ends in one line and a
non-zero exit instead of a multi-line report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

from training import errors
from training.errors import UserError
from training.runtime.ray_lifetime import stops_ray_it_started

USAGE = """usage: python -m training [--config-dir DIR] [GROUP=OPTION ...] [KEY=VALUE ...]

Runs a training workload on Ray: an in-process Ray by default, or an existing cluster
(cluster=address, `auto` inside a KubeRay RayJob). Runs and models go to MLflow.

Config groups (training/conf/<group>/<option>.yaml; add your own options with --config-dir DIR,
a folder of <group>/<option>.yaml files):
{groups}
Examples:
  python -m training                                                 # the XGBoost + LightGBM ensemble, synthetic data
  python -m training workload=xgboost data.synthetic.rows=1000000 cluster.num_workers=2
  python -m training data=parquet data.path=s3://bucket/tx/ data.target=amount
  python -m training workload=tune workload.num_samples=20           # Ray Tune: ASHA + Optuna TPE
  python -m training workload=bert data=text_synthetic               # BERT text classification (TorchTrainer)
  python -m training cluster=address tracking=server tracking.uri=http://mlflow:5000
  python -m training --cfg                                           # print the composed config and exit

Any value can be overridden with KEY=VALUE (e.g. workload.members.0.num_boost_round=100);
unknown keys and wrong types are errors. See README.md for every option.
"""


def _groups_help(config_dirs: List[str]) -> str:
    from training.config import CONF_DIR

    defaults = {}
    for line in (CONF_DIR / "config.yaml").read_text().splitlines():
        line = line.strip()
        if line.startswith("- ") and ":" in line:
            g, opt = line[2:].split(":", 1)
            defaults[g.strip()] = opt.strip()
    options: dict = {}
    for root in [CONF_DIR, *map(Path, config_dirs)]:
        for group in (p for p in root.iterdir() if p.is_dir()):
            options.setdefault(group.name, set()).update(f.stem for f in group.glob("*.yaml"))
    lines = []
    for group in sorted(options):
        shown = ", ".join(f"{o} (default)" if o == defaults.get(group) else o for o in sorted(options[group]))
        lines.append(f"  {group:<10} {shown}")
    return "\n".join(lines) + "\n"


def split_args(args: List[str]) -> Tuple[List[str], List[str], bool]:
    """(overrides, config dirs, --cfg) from the command line; an unknown flag is one line."""
    overrides, config_dirs, show_cfg = [], [], False
    it = iter(args)
    for a in it:
        if a == "--cfg":
            show_cfg = True
        elif a == "--config-dir":
            config_dirs.append(next(it, "") or _missing_dir())
        elif a.startswith("--config-dir="):
            config_dirs.append(a.split("=", 1)[1] or _missing_dir())
        elif a.startswith("-"):
            raise UserError(f"unknown option {a} (options: --help, --cfg, --config-dir DIR; everything else is "
                            "KEY=VALUE)")
        else:
            overrides.append(a)
    return overrides, config_dirs, show_cfg


def _missing_dir() -> str:
    raise UserError("--config-dir needs a directory")


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from training.runtime import report

    report.setup_logging()
    with stops_ray_it_started():
        return _run(args)


def _run(args: List[str]) -> int:
    try:
        help_asked = any(a in ("-h", "--help") for a in args)
        overrides, config_dirs, show_cfg = split_args([a for a in args if a not in ("-h", "--help")])
        from training import config

        config.search_path(config_dirs)  # a missing directory is an error, for --help too
        if help_asked:
            print(USAGE.format(groups=_groups_help(config_dirs)))
            return 0
        cfg = config.load(overrides, config_dirs)
        if show_cfg:
            print(config.to_yaml(cfg))
            return 0
        cfg.promote.check_runs_if_set()
        from training.ops import promote
        from training.workloads import registry

        workloads = registry()  # config.load checked workload.name against it
        from training.runtime.run import FinishedBefore

        try:
            workloads[cfg.workload.name](cfg)
        except FinishedBefore as done:
            print(f"[training] {done}", flush=True)
            promote.after_finished_run(cfg, done.model_uri)
        return 0
    except BaseException as exc:  # every failure ends in one line (errors.show); the log keeps the trace
        if isinstance(exc, SystemExit):
            raise
        return errors.show(exc, "rerun with the same run_name=... to resume from the last checkpoints")


if __name__ == "__main__":
    code = main()
    # Ray is shut down and MLflow's store commits every call: nothing is left to flush. Freezing
    # the heap spares the interpreter's final garbage collection over every object MLflow,
    # pandas, Ray and matplotlib left behind (atexit handlers still run).
    import gc

    gc.freeze()
    sys.exit(code)
