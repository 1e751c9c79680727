"""Ray's logs, redacted and size-capped, copied out so a post-mortem needs no live cluster.

The node this driver runs on (the head pod in a RayJob, the machine itself locally) is read
from the session's log directory; other nodes through the state API's log endpoints
(`list_logs` / `get_log`, served by the dashboard). Only log files are taken (`.log`,
`.out`, `.err`, text), each cut to its last `max_file_mb` (the end is where the error is),
newest first until `max_total_mb`, node after node. Every line goes through `redact`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import ray

log = logging.getLogger(__name__)
LOG_SUFFIXES = (".log", ".out", ".err", ".txt")
MB = 1024 * 1024

# `NAME=value`, `NAME: value`, `"name": "value"`, `'name': 'value'` (a Python dict's repr) where
# NAME holds a word that says it holds a secret, as a whole part of the name: `aws_secret_access_key`,
# `X-Api-Key`, `RAY_AUTH_TOKEN`, but not `tokenizer`, `num_tokens` or `authenticated`.
_SECRET_WORD = r"(?:TOKEN|PASSWORDS?|PASSWD|SECRETS?|CREDENTIALS?|API[_\-]?KEY|ACCESS[_\-]?KEY|PRIVATE[_\-]?KEY|AUTH)"
_SECRET_NAME = rf"\b(?:[A-Za-z0-9]+[_.\-])*{_SECRET_WORD}(?:[_.\-][A-Za-z0-9]+)*\b"
_VALUE = r"(\"[^\"]*\"|'[^']*'|[^\s,;}]+)"
# (an `Authorization` header is left to _AUTHORIZATION, which keeps its scheme readable)
_ASSIGNMENT = re.compile(rf"(?i)([\"']?{_SECRET_NAME}[\"']?[ \t]*[=:][ \t]*)(?!bearer\s|basic\s){_VALUE}")
_AUTHORIZATION = re.compile(r"(?i)(\bauthorization[\"']?[ \t]*[=:][ \t]*[\"']?(?:[A-Za-z]+[ \t]+)?)[^\s\"',;}]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)[ \t]+[A-Za-z0-9._~+/=\-]{6,}")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+(@)")
# Environment variables whose values never leave the cluster, wherever they appear in a log.
KNOWN_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD",
                    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "RAY_AUTH_TOKEN",
                    "GOOGLE_APPLICATION_CREDENTIALS_JSON", "AZURE_STORAGE_KEY", "HF_TOKEN")
REDACTED = "[REDACTED]"


def known_secrets(environ: Optional[Dict[str, str]] = None) -> List[str]:
    """Values of the credential variables above and Ray's auth token file, longest first."""
    env = os.environ if environ is None else environ
    values = [env[k] for k in KNOWN_SECRET_ENV if env.get(k)]
    values += [v for k, v in env.items() if k.startswith("AWS_") and ("SECRET" in k or "TOKEN" in k) and v]
    for path in (env.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        try:
            token = Path(path).read_text().strip() if path else ""
        except OSError:
            token = ""
        if token:
            values.append(token)
    # Short values (a username like "ml") would blank unrelated text; they are not secrets on their own.
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for value in secrets:
        text = text.replace(value, REDACTED)
    text = _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(2), text)


def is_log_file(path: Path) -> bool:
    if path.suffix not in LOG_SUFFIXES:
        return False
    try:
        with path.open("rb") as f:
            return b"\0" not in f.read(4096)   # a binary file with a log-like name
    except OSError:
        return False


def tail_bytes(data: bytes, limit: int) -> Tuple[bytes, int]:
    """The last `limit` bytes, starting at a line; and how many bytes were dropped."""
    if len(data) <= limit:
        return data, 0
    cut = data[-limit:]
    newline = cut.find(b"\n")
    if 0 <= newline < len(cut) - 1:
        cut = cut[newline + 1:]
    return cut, len(data) - len(cut)


@dataclass
class CollectedFile:
    name: str          # <node ip>/<relative path>
    size: int          # original size in bytes
    kept: int          # bytes written (after the per-file cap)
    note: str = ""


def local_log_dir() -> Optional[Path]:
    node = getattr(ray._private.worker, "_global_node", None)  # the driver's own Ray node, if any
    if node is None:
        return None
    path = Path(node.get_logs_dir_path())
    return path if path.is_dir() else None


def collect(out_dir: Path, max_file_mb: float, max_total_mb: float, use_state_api: bool,
            secrets: Optional[List[str]] = None, log_dir: Optional[Path] = None) -> List[CollectedFile]:
    """Write the cluster's logs under out_dir/<node ip>/...; returns what was kept or skipped.

    log_dir: this node's Ray log directory (default: the connected session's)."""
    secrets = known_secrets() if secrets is None else secrets
    per_file, budget = int(max_file_mb * MB), int(max_total_mb * MB)
    local_ip = ray.util.get_node_ip_address() if ray.is_initialized() else "local"
    sources: List[Tuple[str, float, int, object]] = []   # (name, mtime, size, reader)
    log_dir = log_dir or local_log_dir()
    if log_dir is not None:
        for p in log_dir.rglob("*"):
            try:
                if p.is_file() and is_log_file(p):
                    st = p.stat()
                    sources.append((f"{local_ip}/{p.relative_to(log_dir)}", st.st_mtime, st.st_size, p))
            except OSError:  # moved (Ray moves dead workers' logs to old/) or removed meanwhile
                continue
    sources.sort(key=lambda s: s[1], reverse=True)
    if use_state_api:
        sources = interleave_by_node(sources + _remote_sources(local_ip))
    out: List[CollectedFile] = []
    used = 0
    for name, _, size, reader in sources:
        room = min(per_file, budget - used)
        if room < min(per_file, 1024):   # not even a useful tail fits
            out.append(CollectedFile(name, size, 0, "skipped: max_total_mb reached"))
            continue
        try:
            data = _read_tail(reader, room) if isinstance(reader, Path) else reader(room)
        except Exception as exc:  # noqa: BLE001  a file that vanished or a node that left
            out.append(CollectedFile(name, size, 0, f"skipped: {type(exc).__name__}"))
            continue
        partial = size > len(data)
        data, dropped = tail_bytes(data, room)
        # Redact whole lines (the tail starts at a line), then cap again: [REDACTED] may be longer.
        clean, more = tail_bytes(redact(data.decode("utf-8", "replace"), secrets).encode(), room)
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(clean)
        used += len(clean)
        cut = partial or dropped or more
        out.append(CollectedFile(name, size, len(clean), "only the end kept (size cap)" if cut else ""))
    return out


def interleave_by_node(sources: List[Tuple[str, float, int, object]]) -> List[Tuple[str, float, int, object]]:
    """Each node's files in their order (`<node ip>/<file>` names), taken one node after another:
    the first file of every node, then the second... The worker nodes, where the training runs,
    get their share of `max_total_mb` before the driver's node has used it all."""
    by_node: Dict[str, list] = {}
    for s in sources:
        by_node.setdefault(s[0].split("/", 1)[0], []).append(s)
    queues = list(by_node.values())
    return [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues if i < len(q)]


def _read_tail(path: Path, limit: int) -> bytes:
    """At most limit bytes (plus a partial line, cut later) from the end: raylet.out can be huge."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - limit - 4096))
        return f.read()


def _remote_sources(local_ip: str) -> List[Tuple[str, float, int, object]]:
    """Log files of the other alive nodes, read through the state API (dashboard) on demand."""
    from ray.util.state import get_log, list_logs

    from training.observability.sampler import state_address

    found: List[Tuple[str, float, int, object]] = []
    for n in ray.nodes():
        ip, node_id = n.get("NodeManagerAddress"), n.get("NodeID")
        # Same address: the same machine, whose session log directory was read above
        # (nodes started on one machine share it).
        if not n.get("Alive") or ip == local_ip:
            continue
        try:
            groups = list_logs(address=state_address(), node_id=node_id, timeout=10)
        except Exception as exc:  # noqa: BLE001
            log.warning("observability: cannot list the logs of node %s: %s", ip, str(exc).splitlines()[0])
            continue
        for files in groups.values():
            for f in files:
                if Path(f).suffix not in LOG_SUFFIXES:
                    continue

                def read(limit: int, _node=node_id, _f=f) -> bytes:
                    lines = get_log(address=state_address(), node_id=_node, filename=_f,
                                    tail=max(100, limit // 80), timeout=30, errors="replace")
                    return "".join(lines).encode()

                # No mtime over the API: a node's files in listing order, between the other nodes'.
                found.append((f"{ip}/{f}", 0.0, -1, read))
    return found


def index(files: List[CollectedFile]) -> str:
    """INDEX.txt: every file found, its size, what was kept and why."""
    rows = [f"{'kept':>10} {'size':>10}  file  note"]
    # Files read through the state API have no size until read (-1): shown as "?".
    rows += [f"{f.kept:>10} {f.size if f.size >= 0 else '?':>10}  {f.name}  {f.note}".rstrip() for f in files]
    return "\n".join(rows) + "\n"
