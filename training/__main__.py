"""`python -m training [group=option ...] [key=value ...]`: compose conf/, run the workload.

Composition uses Hydra's compose API (same defaults list, config groups and override grammar
as a `@hydra.main` app) so that every user mistake, Hydra's included, ends in one line and a
non-zero exit instead of a multi-line report.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from training import errors
from training.errors import UserError

USAGE = """usage: python -m training [GROUP=OPTION ...] [KEY=VALUE ...]

Runs a training workload on Ray: an in-process Ray by default, or an existing cluster
(cluster=address, `auto` inside a KubeRay RayJob). Runs and models go to MLflow.

Config groups (conf/<group>/<option>.yaml):
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


def _groups_help() -> str:
    from training.config import conf_dir

    lines = []
    root = conf_dir()
    defaults = {}
    for line in (root / "config.yaml").read_text().splitlines():
        line = line.strip()
        if line.startswith("- ") and ":" in line:
            g, opt = line[2:].split(":", 1)
            defaults[g.strip()] = opt.strip()
    for group in sorted(p for p in root.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        shown = ", ".join(f"{o} (default)" if o == defaults.get(group.name) else o for o in options)
        lines.append(f"  {group.name:<10} {shown}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from training.runtime import report

    report.setup_logging()
    try:
        if any(a in ("-h", "--help") for a in args):
            print(USAGE.format(groups=_groups_help()))
            return 0
        show_cfg = "--cfg" in args
        overrides = [a for a in args if a != "--cfg"]
        flags = [a for a in overrides if a.startswith("-")]
        if flags:
            raise UserError(f"unknown option {flags[0]} (options: --help, --cfg; everything else is KEY=VALUE)")
        from training import config

        cfg = config.load(overrides)
        if show_cfg:
            print(config.to_yaml(cfg))
            return 0
        from training.workloads import registry

        workloads = registry()
        if cfg.workload.name not in workloads:
            raise UserError(f"unknown workload.name '{cfg.workload.name}' (known: {', '.join(workloads)})")
        workloads[cfg.workload.name](cfg)
        return 0
    except BaseException as exc:  # every failure ends in one line (errors.show); the log keeps the trace
        if isinstance(exc, SystemExit):
            raise
        return errors.show(exc, "rerun with the same run_name=... to resume from the last checkpoints")
    finally:
        _shutdown()


def _shutdown() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":
    code = main()
    # Ray is shut down and MLflow's store commits every call: nothing is left to flush. Freezing
    # the heap spares the interpreter's final garbage collection over every object MLflow,
    # pandas, Ray and matplotlib left behind (atexit handlers still run).
    import gc

    gc.freeze()
    sys.exit(code)
