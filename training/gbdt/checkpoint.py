"""The layout of a GBDT checkpoint, shared by Ray Train slots, Tune trials and the driver.

A member's directory holds its booster (the kind's model file) and `state.json` (rounds done,
the validation curve, start and end times; once the member has finished under Ray Train, the
final model's validation metrics, `validation`). A slot's checkpoint has one such directory per
member; a single member's (a Tune trial's) is the checkpoint's top level.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional

from training.gbdt import kinds

STATE_FILE = "state.json"


def model_file(kind: str) -> str:
    return kinds.get(kind).model_file


def load_booster(kind: str, path: str) -> Any:
    """A booster of `kind` from its model file."""
    return kinds.get(kind).load(path)


def read_state(checkpoint_dir: str, member: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """A member's state in a local checkpoint directory: top level for a single member,
    `<member>/` in a slot's checkpoint; None when that member had not started."""
    path = os.path.join(checkpoint_dir, member, STATE_FILE) if member else os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def finished(state: Optional[Dict[str, Any]], member: Dict[str, Any]) -> bool:
    """Every round boosted, or early stopping kept an earlier round (and dropped the later ones)."""
    return state is not None and (state.get("kept_best", False) or state["rounds"] >= member["num_boost_round"])


def write(directory: str, kind: str, save_model: Callable[[str], None], state: Dict[str, Any]) -> None:
    """The booster and its state, side by side in `directory` (created if missing)."""
    os.makedirs(directory, exist_ok=True)
    save_model(os.path.join(directory, model_file(kind)))
    with open(os.path.join(directory, STATE_FILE), "w") as f:
        json.dump(state, f)
