"""Where a BERT model comes from, on the driver: a local directory, an object-store URI or a hub
name, resolved into a local directory, then packed into one bundle that travels to the workers
through Ray's object store (workers on other nodes never need the driver's disk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from training.errors import UserError

_LOCAL_PREFIXES = ("/", "./", "../", "~")


def resolve_source(path: str, workdir: str) -> str:
    """A local directory with config.json and tokenizer files for `path` (copied in when remote)."""
    if "://" in path:
        return _copy_from_object_store(path, workdir)
    local = Path(path).expanduser()
    if local.exists() or path.startswith(_LOCAL_PREFIXES):
        if not local.is_dir():
            raise UserError(f"workload.model.path does not exist or is not a directory: {path}")
        _check_model_dir(local, path)
        return str(local.resolve())
    if "/" in path and local.parent.is_dir():
        # `models/bert-base` with a local models/ folder is a mistyped directory, not a hub name:
        # fetching whatever the hub holds under that name would train on another model.
        raise UserError(f"workload.model.path {path} does not exist (its folder {local.parent} does); for a hub "
                        "model, name it so that no local folder matches")
    return _from_hub(path, workdir)


def _check_model_dir(local: Path, shown: str) -> None:
    if not (local / "config.json").is_file():
        raise UserError(f"workload.model.path {shown} has no config.json: not a transformers checkpoint")
    # What a tokenizer loads from: tokenizer_config.json alone only names the class, and the
    # workers would fail loading it, each after the cluster and the data were up.
    vocab = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
    if not any((local / f).is_file() for f in vocab):
        raise UserError(f"workload.model.path {shown} has no tokenizer vocabulary ({', '.join(vocab)})")


def _copy_from_object_store(uri: str, workdir: str) -> str:
    import pyarrow as pa
    import pyarrow.fs as pafs

    dest = Path(workdir) / "model"
    try:
        fs, inner = pafs.FileSystem.from_uri(uri)
        if fs.get_file_info(inner).type == pafs.FileType.NotFound:
            raise UserError(f"workload.model.path does not exist: {uri}")
        pafs.copy_files(inner, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except UserError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"cannot copy workload.model.path {uri}: {str(exc).strip().splitlines()[0]}") from None
    _check_model_dir(dest, uri)
    return str(dest)


def _from_hub(name: str, workdir: str) -> str:
    """A hub model name: downloaded only where a hub is reachable (never with HF_HUB_OFFLINE=1)."""
    try:
        from huggingface_hub import snapshot_download

        # A hub name is the user's explicit choice, and only where a hub is reachable (not in CI).
        d = snapshot_download(name, local_dir=str(Path(workdir) / "model"),  # nosec B615
                              allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"])
    except Exception as exc:  # offline, unknown repo, auth: all mean "no such model here"
        raise UserError(f"workload.model.path '{name}' is not a local directory, and it cannot be fetched "
                        f"from the model hub ({type(exc).__name__}); give a local directory or an "
                        "s3:// / gs:// URI") from None
    _check_model_dir(Path(d), name)
    return d


def max_positions(model_dir: str) -> int:
    with open(Path(model_dir) / "config.json") as f:
        return int(json.load(f).get("max_position_embeddings", 512))


def pack(directory: str) -> Dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes), to ship through the object store."""
    root = Path(directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def unpack(bundle: Dict[str, bytes], directory: str) -> str:
    for rel, data in bundle.items():
        dest = Path(directory) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return directory
