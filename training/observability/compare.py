"""Compare runs on cost and wall time: `python -m training.observability.compare`.

Reads the newest 200 runs of an experiment that logged a cost estimate (finished, failed or
killed: the status is named beside a run that did not finish), prints a table
(cheapest first) and writes a PNG of estimated cost against wall time; `--log` also stores
the plot in MLflow, as an artifact of a run named `cost-comparison-<UTC time>`.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional, Tuple

from training import errors
from training.errors import UserError

Run = Tuple[str, float, float, str]   # label, wall seconds, cost, currency


# The plot formats matplotlib writes that a browser or MLflow's UI shows.
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def runs_with_cost(experiment: str, tracking_uri: str, limit: int = 200) -> List[Run]:
    import os

    from mlflow.tracking import MlflowClient

    from training.runtime.live import HTTP_LIMITS

    for key, value in HTTP_LIMITS.items():  # an unreachable server fails in seconds, not minutes
        os.environ.setdefault(key, value)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        found = None if exp is None else client.search_runs(
            [exp.experiment_id], filter_string="metrics.cost_estimate >= 0", max_results=limit,
            order_by=["attributes.start_time DESC"])
    except Exception as exc:  # bad URIs, network errors, auth: all mean "cannot read the runs"
        raise UserError(f"cannot read MLflow runs at {tracking_uri}: {str(exc).strip().splitlines()[0][:200]}") from None
    if exp is None:
        raise UserError(f"no experiment '{experiment}' at {tracking_uri}")
    out = []
    for r in found:
        m = r.data.metrics
        if "usage_wall_s" not in m:
            continue
        label = f"{r.info.run_name} ({r.info.status.lower()})" if r.info.status != "FINISHED" else r.info.run_name
        out.append((label, m["usage_wall_s"], m["cost_estimate"], r.data.tags.get("cost_currency", "")))
    if not out:
        raise UserError(f"no run of experiment '{experiment}' logged a cost estimate (observability.enabled=true)")
    return sorted(out, key=lambda r: r[2])


def main(argv: Optional[List[str]] = None) -> int:
    p = errors.ArgumentParser(prog="python -m training.observability.compare", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="ray-training", help="MLflow experiment (default: ray-training)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)")
    p.add_argument("--output", default="cost_vs_time.png", help="PNG to write (default: cost_vs_time.png)")
    p.add_argument("--log", action="store_true", help="also log the plot to MLflow as a run of the experiment")
    args = p.parse_args(argv)
    try:
        if Path(args.output).suffix.lower() not in PLOT_SUFFIXES:
            raise UserError(f"--output {args.output}: name a {', '.join(PLOT_SUFFIXES)} file")
        uri = args.tracking_uri or _default_uri()
        runs = runs_with_cost(args.experiment, uri)
    except UserError as exc:
        return errors.show(exc)
    from training.runtime import report
    from training.observability import plots

    currency = runs[0][3]
    print(report.table(["run", "wall s", f"cost {currency}"], [[r[0], f"{r[1]:.1f}", f"{r[2]:.4f}"] for r in runs]))
    try:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        plots.cost_time_plot([r[:3] for r in runs], currency, args.output,
                             f"{args.experiment}: estimated cost vs wall time ({len(runs)} runs)")
    except OSError as exc:
        return errors.show(UserError(f"cannot write --output {args.output}: {exc.strerror or exc}"))
    print(f"plot: {args.output}")
    if args.log:
        try:
            print(f"logged: {_log_plot(uri, args.experiment, args.output)}")
        except Exception as exc:  # a server that refuses the write (auth), or is gone: the plot is on disk
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            return errors.show(UserError(f"the plot is at {args.output} but could not be logged to MLflow: {first}"))
    return 0


def _log_plot(uri: str, experiment: str, output: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    with mlflow.start_run(run_name=f"cost-comparison-{stamp}", tags={"kind": "cost_comparison"}) as run:
        mlflow.log_artifact(output, "plots")
    return f"run {run.info.run_id}, plots/{Path(output).name}"


def _default_uri() -> str:
    """MLFLOW_TRACKING_URI, else the local store of runs made in this directory (not created here:
    an empty store would only say that no experiment exists)."""
    import os

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    local = Path("mlruns/mlflow.db").resolve()
    if not local.is_file():
        raise UserError(f"no MLflow store at {local}: run this where the training runs were made, or pass "
                        "--tracking-uri (or set MLFLOW_TRACKING_URI)")
    return f"sqlite:///{local}"


if __name__ == "__main__":
    sys.exit(main())
