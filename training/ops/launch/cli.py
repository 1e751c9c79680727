"""The `python -m training.ops.launch` command: arguments, then render, create and follow one RayJob."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

import yaml

from training import errors
from training.errors import UserError
from training.ops.launch.follow import Follower
from training.ops.launch.kube import connect, create, delete, prune
from training.ops.launch.naming import new_run_id
from training.ops.launch.outcome import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_TIMEOUT
from training.ops.launch.render import (DEFAULT_CHART, check_overrides, load_manifest, prepare,
                                        render_rayjob)
from training.runtime.interrupts import Terminated, terminate_as_interrupt


def parser() -> argparse.ArgumentParser:
    ap = errors.ArgumentParser(
        prog="python -m training.ops.launch",
        description="Run a training workload as a KubeRay RayJob and follow it to the end. Positional "
                    "arguments are the Hydra overrides a local `python -m training` run takes.",
        epilog="exit codes: 0 succeeded, 1 the run failed (KubeRay's reason printed), 2 bad input or the "
               "RayJob was rejected (ValidationFailed), 3 --timeout passed (RayJob deleted), 130 interrupted "
               "(RayJob left running), 143 terminated by SIGTERM (RayJob left running)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. workload=xgboost data.synthetic.rows=1000000")
    src = ap.add_argument_group("what to run")
    src.add_argument("--chart", type=Path, default=Path(os.environ.get("RAY_TRAINING_CHART", DEFAULT_CHART)),
                     help="chart to render the RayJob from (default: %(default)s)")
    src.add_argument("-f", "--values", action="append", type=Path, default=[], metavar="FILE",
                     help="values files, as for helm install (repeatable; the release's own values)")
    src.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one chart value: dotted keys nest, the value is read as YAML (unlike helm --set: one "
                          "pair per --set, no commas or escaped dots)")
    src.add_argument("--release", default="ray-training",
                     help="the Helm release whose MLflow, storage and ServiceAccount the run uses (default: %(default)s)")
    src.add_argument("--manifest", type=Path, help="a RayJob the chart rendered (the retraining CronJob's "
                     "ConfigMap) instead of rendering; takes no overrides")
    k8s = ap.add_argument_group("cluster")
    k8s.add_argument("-n", "--namespace", help="default: the kubeconfig context's, or the pod's")
    k8s.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config; in-cluster config in a pod")
    k8s.add_argument("--context")
    run = ap.add_argument_group("following")
    run.add_argument("--dry-run", action="store_true", help="print the RayJob manifest and exit")
    run.add_argument("--no-follow", action="store_true", help="create the RayJob and exit 0")
    run.add_argument("--no-logs", action="store_true", help="follow the status only (no pod/log access needed)")
    run.add_argument("--timeout", type=int, default=0, metavar="SECONDS",
                     help="give up after this long, delete the RayJob and exit 3; 0: wait (default)")
    run.add_argument("--keep-finished", type=int, default=-1, metavar="N",
                     help="after the run, delete finished launcher-made RayJobs of the release beyond the N newest")
    return ap


def build(args: argparse.Namespace, run_id: str) -> Dict[str, Any]:
    if args.manifest:
        if args.overrides or args.values or args.set:
            raise UserError("--manifest takes no overrides, --values or --set (they are rendered into it already)")
        return prepare(load_manifest(args.manifest), run_id)
    check_overrides(args.overrides)
    return prepare(render_rayjob(args.chart, args.values, args.set, args.release, args.overrides), run_id)


def check_following(args: argparse.Namespace) -> None:
    """Flags that only mean something while the run is followed, and their ranges."""
    if args.timeout < 0:
        raise UserError(f"--timeout {args.timeout}: must be >= 0 seconds (0: wait until the RayJob ends)")
    if args.keep_finished < -1:
        raise UserError(f"--keep-finished {args.keep_finished}: must be >= 0 (or left out: prune nothing)")
    if args.no_follow and (args.timeout > 0 or args.keep_finished >= 0):
        flag = "--timeout" if args.timeout > 0 else "--keep-finished"
        raise UserError(f"{flag} needs the run followed: --no-follow returns once the RayJob is created")


def launch(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    check_following(args)
    run_id = new_run_id()
    job = build(args, run_id)
    name = job["metadata"]["name"]
    if args.dry_run:
        out.write(yaml.safe_dump(job, sort_keys=False, width=1000))
        return EXIT_OK
    api, ns = connect(args.kubeconfig, args.context, args.namespace)
    follower = Follower(api, ns, name, out)  # before create: loading the client's API classes takes a while
    try:
        created = create(api, ns, job)
    except KeyboardInterrupt:  # the request may have reached the API server: the user must look
        print(f"error: interrupted while creating RayJob {ns}/{name}; it may have been created "
              f"(kubectl -n {ns} get rayjob {name})", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"created RayJob {ns}/{name} (run id {run_id})", file=out, flush=True)
    if args.no_follow:
        print(f"follow it: kubectl -n {ns} get rayjob {name} -w", file=out, flush=True)
        return EXIT_OK
    try:
        result = follow(args, follower, job, created)
    except KeyboardInterrupt as exc:
        follower.stop_logs()
        terminated = isinstance(exc, Terminated)
        print(f"error: {'terminated (SIGTERM)' if terminated else 'interrupted'}; RayJob {ns}/{name} keeps running "
              f"(kubectl -n {ns} delete rayjob {name} to stop it)", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except UserError as exc:  # the API lost or refusing while following: the run goes on without us
        follower.stop_logs()
        raise UserError(f"{exc}; RayJob {ns}/{name} keeps running "
                        f"(kubectl -n {ns} delete rayjob {name} to stop it)") from None
    if result.code == EXIT_TIMEOUT:
        try:
            delete(api, ns, name)
            done = "deleted it"
        except UserError as exc:  # an API that refuses the delete: the RayJob runs on, and the user must know
            done = f"it keeps running ({exc})"
        except KeyboardInterrupt:
            done = f"interrupted while deleting it, it may keep running (kubectl -n {ns} delete rayjob {name})"
        print(f"error: RayJob {ns}/{name} did not finish within {args.timeout}s; {done}", file=sys.stderr)
        return EXIT_TIMEOUT
    if args.keep_finished >= 0:
        try:
            prune(api, ns, job, args.keep_finished, out)
        except KeyboardInterrupt:  # the run has ended: its outcome below still stands
            print("warning: pruning of finished RayJobs interrupted", file=sys.stderr, flush=True)
    if result.code == EXIT_OK:
        print(f"RayJob {ns}/{name} succeeded (run id {run_id})", file=out, flush=True)
    else:
        print(f"error: RayJob {ns}/{name} failed: {result.message}", file=sys.stderr)
    return result.code


def follow(args: argparse.Namespace, follower: Follower, job: Dict[str, Any], created: Dict[str, Any]):
    """The RayJob's states (and its submitter's log) until it ends or --timeout passes."""
    logs = None if args.no_logs else follower.follow_logs(job["spec"].get("submissionMode", "K8sJobMode"))
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    result = follower.status(deadline, since=created)
    follower.stop_logs()
    if logs is not None and result.code != EXIT_TIMEOUT:
        try:
            logs.join(timeout=30)  # the submitter's last lines (its pod has ended with the run)
        except KeyboardInterrupt:  # the run has ended: only those lines are skipped
            pass
    return result


def main(argv: Optional[List[str]] = None) -> int:
    from training.runtime import report

    report.setup_logging()
    args = parser().parse_args(argv)
    try:
        with terminate_as_interrupt():
            return launch(args)
    except UserError as exc:
        return errors.show(exc)
    except KeyboardInterrupt as exc:  # rendering or connecting: launch catches it once a RayJob may exist
        terminated = isinstance(exc, Terminated)
        print(f"error: {'terminated (SIGTERM)' if terminated else 'interrupted'}; no RayJob was created",
              file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
