"""The config: Hydra composes training/conf/ into the root schema below, then each section checks itself.

The root holds the sections every workload shares (training/settings.py, training/data/schema.py);
`workload` is one of the workloads' own schemas, each in its feature folder and registered here
by the name conf/workload/*.yaml use in their defaults list (training/workloads.py). An unknown key
or a wrong type fails at composition with the key's full name; `validate` runs the checks types
cannot express.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, OmegaConf

from training.data.schema import DataConfig, reject_credentials
from training.errors import UserError
from training.settings import (ClusterConfig, ObservabilityConfig, PromoteConfig, TrackingConfig, check_model_name,
                               check_seed)
from training.workloads import SCHEMAS, check_name


@dataclass
class Config:
    workload: Any = MISSING
    data: DataConfig = MISSING
    cluster: ClusterConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = 42
    # null = "<workload>-<UTC time>-<random>"; reuse a name only to resume that run.
    run_name: Optional[str] = None
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)


def _register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, target in SCHEMAS.items():
        module, cls = target.rsplit(".", 1)
        cs.store(group="workload", name=name, node=getattr(importlib.import_module(module), cls))
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="cluster", name="cluster_schema", node=ClusterConfig)
    cs.store(group="tracking", name="tracking_schema", node=TrackingConfig)


# The config tree ships inside the package: an installed `ray-training` composes the same
# defaults from any working directory.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def search_path(config_dirs: Sequence[str]) -> List[str]:
    """Users' own config directories (`--config-dir`): their group folders add options beside the
    packaged ones (a packaged option keeps its name). Checked here, so a typo is one line."""
    dirs = []
    for d in config_dirs:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"--config-dir {d}: not a directory")
        dirs.append(path)
    # Plain paths, quoted: Hydra strips `file://` and does not decode a URI's %20, and the
    # override grammar splits an unquoted value at spaces, commas and brackets.
    return [f"hydra.searchpath=[{','.join(_quoted(f'file://{p}') for p in dirs)}]"] if dirs else []


def _quoted(value: str) -> str:
    """`value` as a single-quoted string of Hydra's override grammar: a quote is escaped, and so
    are backslashes right before a quote or the closing one (elsewhere they stay as they are)."""
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value) + "'"


def _one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf errors span several lines; keep the ones that name the key and the problem."""
    parts: List[str] = []
    hints: List[str] = []
    while exc is not None:
        for line in str(exc).splitlines():
            line = line.strip()
            if line.startswith("Config search path"):
                break  # what follows is Hydra's search path, noise for a user
            if line.startswith(_APPEND):
                hints.append(line)
            elif (line and not line.startswith(_NOISE) and not line.endswith("_schema")
                    and line not in parts):
                parts.append(line)
        exc = exc.__cause__
    # Hydra's `+key=value` hint is the fix for a free-form mapping (workload.params, space: "is
    # not in struct"); for a typed section's unknown key it would only hide a typo.
    if any(_FREE_FORM in p for p in parts):
        parts += hints[:1]
    return "; ".join(parts).replace(":;", ":")


_NOISE = ("object_type", "reference_type", "Set the environment")
_APPEND, _FREE_FORM = "To append", "is not in struct"


def load(overrides: List[str], config_dirs: Sequence[str] = ()) -> Any:
    """Compose the packaged config tree (plus `config_dirs`) with `overrides`, check it against the
    schema and return the typed config."""
    _register_schemas()
    GlobalHydra.instance().clear()
    extra = search_path(config_dirs)
    for override in overrides:
        _reject_hydra_override(override)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=[*extra, *overrides])
        _reject_appended_keys(cfg)
        typed = OmegaConf.to_object(cfg)
    except UserError:
        raise
    except Exception as exc:  # hydra/omegaconf raise many types; all are config mistakes here
        raise UserError(f"bad config: {_one_line(exc)}") from None
    validate(typed)
    return typed


def _reject_hydra_override(override: str) -> None:
    """Hydra's own config (hydra.*, hydra/<group>) is read by a `@hydra.main` app; composing with
    the compose API, this CLI has no output dir, logging or sweeps for it to set: it would do nothing."""
    key = override.split("=", 1)[0].lstrip("+~")
    if any(part == "hydra" or part.startswith(("hydra.", "hydra/")) for part in key.split("@")):
        raise UserError(f"bad config: {override}: Hydra's own settings (hydra.*, hydra/...) do nothing here (no "
                        "output directory, logging or sweeps); drop it (--config-dir DIR adds config directories)")


def _reject_appended_keys(cfg: Any) -> None:
    """`+key=value` bypasses struct mode; re-merge every node into its own schema to catch it."""
    known = {f for f in Config.__dataclass_fields__}
    for key in cfg:
        if key not in known:
            raise UserError(f"bad config: unknown key '{key}' (known: {', '.join(sorted(known))})")
    for key in known:
        node = cfg[key]
        schema = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(schema):
            try:
                OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(node))
            except Exception as exc:
                raise UserError(f"bad config: {_one_line(exc)}".replace("full_key: ", f"full_key: {key}.")) from None


def validate(cfg: Config) -> None:
    """Checks the schema's types cannot express; each names the key and what is accepted."""
    check_name(cfg.workload)
    check_seed("seed", cfg.seed)
    check_run_name(cfg.run_name)
    cfg.cluster.check()
    for key, uri in (("data.path", cfg.data.path), ("cluster.storage_path", cfg.cluster.storage_path),
                     ("promote.data_path", cfg.promote.data_path)):
        reject_credentials(key, uri)
    cfg.data.check()
    cfg.tracking.check()
    cfg.workload.check(cfg)
    if cfg.workload.register:
        check_model_name(cfg.workload.registered_model_name)
    cfg.promote.check()
    if cfg.promote.enabled and not cfg.workload.register:
        raise UserError("promote.enabled=true needs workload.register=true: the gate judges the version the "
                        "run registers")
    cfg.observability.check()


def check_run_name(name: Optional[str]) -> None:
    """The run's name is a folder under cluster.storage_path (its checkpoints) and a quoted value in
    the MLflow search that finds an earlier run of that name (a rerun resumes it)."""
    if name is None:
        return
    if name.strip() in ("", ".", "..") or any(c in name for c in "/\\'\""):
        raise UserError(f"run_name {name!r} must be a plain name: no '/', '\\' or quotes, not empty, '.' or '..' "
                        "(it names the run's folder under cluster.storage_path and its MLflow run)")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def flatten(cfg: Config) -> Dict[str, Any]:
    """Dotted keys -> values, for MLflow params."""
    out: Dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, list) and node and isinstance(node[0], dict):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True))
    return out
