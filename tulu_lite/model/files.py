"""Model files: is a directory a loadable model, is a safetensors file complete, and which base is this?

Each check reads headers only, never the weights, so it runs before transformers does (and fails in one line
naming the file) and cheaply on a 65B base.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tulu_lite.errors import TuluError
from tulu_lite.json_files import read_json_object, strict_json

# ---- model directories: checked before transformers reads them ---------------------------------------------------
# transformers reports a truncated weights file as "SafetensorError: incomplete metadata, file not fully covered"
# and a broken config.json as a bare JSONDecodeError, neither naming the file; these checks name it, in one line.

def check_model_dir(path: str | os.PathLike, key: str | None = None) -> None:
    """Raise one `TuluError` naming the file if `path` is not a loadable HF model directory.

    Checks what transformers would otherwise fail on deep inside: the directory exists and is not an adapter,
    config.json is a JSON object, every weights file is there (a shard index names only existing files) and
    every safetensors file is complete (`check_safetensors`). Cheap: reads headers, never the weights.
    """
    path = Path(path)
    prefix = f"{key}: " if key else ""
    if not path.is_dir():
        raise TuluError(f"{prefix}{path}: model directory not found")
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise TuluError(f"{prefix}{path}: is a LoRA adapter, not a model (merge it first: tulu-lite merge "
                            f"{path} -o DIR)")
        raise TuluError(f"{prefix}{path}: not a model directory (no config.json)")
    read_json_object(path / "config.json")
    for index in path.glob("*.index.json"):
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise TuluError(f"{index}: not a shard index (no weight_map)")
        missing = sorted({str(name) for name in weight_map.values()} - {p.name for p in path.iterdir()})
        if missing:
            raise TuluError(f"{index}: names {missing[0]}, which is missing from {path} (incomplete copy?)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any(path.glob("*.bin")):
        raise TuluError(f"{prefix}{path}: config.json but no weights (model*.safetensors)")
    for file in weights:
        check_safetensors(file)


# A safetensors header is at most 100 MB (the format's own limit).
_MAX_HEADER = 100_000_000


def check_safetensors(file: str | os.PathLike) -> dict:
    """Check that a safetensors file is complete and return its header (tensor name -> dtype, shape, offsets).

    The format: an 8-byte little-endian header length, a JSON header, then the data; a complete file ends exactly
    where the last tensor's data ends. A truncated download or copy, or another file renamed, fails here.
    """
    file = Path(file)
    header, length = _safetensors_header(file)
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise TuluError(f"{file}: not a safetensors file (tensor {name!r} has no data offsets)")
        ends.append(offsets[1])
    expected, size = 8 + length + max(ends, default=0), file.stat().st_size
    if size < expected:
        raise TuluError(f"{file}: truncated: {size:,} bytes, its header describes {expected:,} "
                        f"(an interrupted download or copy?)")
    if size > expected:
        raise TuluError(f"{file}: corrupt: {size - expected:,} bytes after the last tensor")
    return header


def _safetensors_header(file: Path) -> tuple[dict, int]:
    with file.open("rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if length < 2 or length > _MAX_HEADER or 8 + length > file.stat().st_size:
            raise TuluError(f"{file}: not a complete safetensors file ({file.stat().st_size:,} bytes: truncated, or "
                            f"another format)")
        raw = handle.read(length)
    try:
        header = strict_json(raw.decode("utf-8"), str(file))
    except (UnicodeDecodeError, TuluError):
        raise TuluError(f"{file}: not a safetensors file, or corrupt (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise TuluError(f"{file}: not a safetensors file, or corrupt (its header is not a JSON object)")
    return header, length


# ---- base fingerprints: did the base change between training and merging? ---------------------------------------
# Hashing a 13 GB base takes minutes; what tells two bases apart is cheaper. The safetensors header lists every
# tensor's name, dtype, shape and byte range, so a different architecture, size or dtype changes it. Two bases
# with the same layout (LLaMA-1 vs LLaMA-2 7B, a base vs its fine-tune) differ in the values of every tensor,
# so the first and last 4 KiB of each tensor's data are hashed too: a few MB of reads for a 7B model, and no
# retraining or re-download leaves them all equal. What it cannot see is an edit to the middle of a tensor that
# leaves both ends intact (deliberate tampering, not a changed base). config.json is hashed whole.
FINGERPRINT_METHOD = "safetensors header + first/last 4 KiB of every tensor, sha256"
_SAMPLE = 4096


def base_fingerprint(model_dir: str | os.PathLike) -> dict:
    """A cheap fingerprint of a model directory's weights and config (see above); JSON-serialisable."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    files = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        header, length = _safetensors_header(file)
        header_digest, samples = hashlib.sha256(), hashlib.sha256()
        with file.open("rb") as handle:
            header_digest.update(handle.read(8 + length))
            for entry in sorted((e for n, e in header.items() if n != "__metadata__"), key=lambda e: e["data_offsets"]):
                begin, end = entry["data_offsets"]
                for start in sorted({begin, max(begin, end - _SAMPLE)}):
                    handle.seek(8 + length + start)
                    samples.update(handle.read(min(_SAMPLE, end - start)))
        files[file.name] = {"size": file.stat().st_size, "header_sha256": header_digest.hexdigest(),
                            "sample_sha256": samples.hexdigest()}
    return {"method": FINGERPRINT_METHOD,
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
            "files": files}


def fingerprint_differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two `base_fingerprint`s, in words (empty when they match)."""
    differences = []
    if recorded.get("config_sha256") != current.get("config_sha256"):
        differences.append("config.json differs")
    then, now = recorded.get("files", {}), current.get("files", {})
    differences += [f"{name} is gone" for name in sorted(then.keys() - now.keys())]
    differences += [f"{name} is new" for name in sorted(now.keys() - then.keys())]
    for name in sorted(then.keys() & now.keys()):
        before, after = then[name], now[name]
        if before.get("size") != after.get("size"):
            differences.append(f"{name} was {before.get('size'):,} bytes, is {after.get('size'):,}")
        elif before.get("header_sha256") != after.get("header_sha256"):
            differences.append(f"{name} holds other tensors (names, shapes or dtypes)")
        elif before.get("sample_sha256") != after.get("sample_sha256"):
            differences.append(f"{name} holds other weights")
    return differences


def model_files_dir(name_or_path: str) -> Path | None:
    """The directory holding a base's files: the local directory, or a hub model's snapshot in the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # not cached (or not a valid id): nothing to fingerprint
        return None
