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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, OmegaConf

from training.data.schema import DataConfig, reject_credentials
from training.errors import UserError
from training.settings import ClusterConfig, ObservabilityConfig, PromoteConfig, TrackingConfig, check_model_name
from training.workloads import SCHEMAS


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
    return [f"hydra.searchpath=[{','.join(p.as_uri() for p in dirs)}]"] if dirs else []


def _one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf errors span several lines; keep the ones that name the key and the problem."""
    parts: List[str] = []
    while exc is not None:
        for line in str(exc).splitlines():
            line = line.strip()
            if line.startswith("Config search path"):
                break  # what follows is Hydra's search path, noise for a user
            if (line and not line.startswith(_NOISE) and not line.endswith("_schema")
                    and line not in parts):
                parts.append(line)
        exc = exc.__cause__
    return "; ".join(parts).replace(":;", ":")


_NOISE = ("object_type", "To append", "reference_type", "Set the environment")


def load(overrides: List[str], config_dirs: Sequence[str] = ()) -> Any:
    """Compose the packaged config tree (plus `config_dirs`) with `overrides`, check it against the
    schema and return the typed config."""
    _register_schemas()
    GlobalHydra.instance().clear()
    extra = search_path(config_dirs)
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
