"""Adapters are verified before they are trusted.

A finished run records in `run.json` the sha256 and size of each `adapter/adapter_*` file and
the fingerprint of the base model it was trained on (`adapter_record`). Every consumer (`ia2
eval --adapter`, `ia2 run`, the subspace analysis) calls `verify_adapter` before loading an
adapter: a changed, truncated or missing file, or another base model, is one IA2Error line. An
adapter directory without a run.json (made elsewhere) is loaded with a warning, but its weights
file must still be a whole safetensors file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import IA2Error

log = logging.getLogger(__name__)

RETRAIN = "retrain with --overwrite or let `ia2 run` retrain it"
_warned: set[Path] = set()  # unchecked adapters already warned about (once per process)


def _sha256(path: Path) -> str:
    from ..teacher.cache import file_sha256

    return file_sha256(path)


def base_fingerprint(base) -> str:
    """A model's fingerprint (`ia2.teacher.cache.model_fingerprint`), or the string given."""
    if isinstance(base, str):
        return base
    from ..teacher.cache import model_fingerprint

    return model_fingerprint(base)


def adapter_record(adapter_dir, base_model) -> dict:
    """What run.json records about a saved adapter: its files' sha256 and sizes, and the base."""
    files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
             for p in sorted(Path(adapter_dir).glob("adapter_*")) if p.is_file()}
    return {"adapter_files": files, "base_model": base_fingerprint(base_model)}


def _run_doc(adapter_dir: Path) -> dict | None:
    path = adapter_dir.parent / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise IA2Error(f"{path} is damaged (not JSON) — {RETRAIN}") from None


def _short(fp: str) -> str:
    head, _, tail = fp.partition(":")
    return f"{head}:{tail[:12]}" if tail else fp[:16]


def _readable(path: Path) -> str | None:
    """Why a safetensors file cannot be read (truncated, not safetensors), or None."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        return f"not a complete safetensors file: {str(e).splitlines()[0]}"
    return None


def adapter_problem(adapter_dir, base=None) -> str | None:
    """The one-line reason `adapter_dir` must not be used (on `base`: a model or fingerprint,
    checked when given), or None when it checks out."""
    d = Path(adapter_dir)
    if not d.is_dir():
        return f"adapter directory {d} does not exist"
    try:
        doc = _run_doc(d)
    except IA2Error as e:
        return str(e)
    if doc is None:
        if d.resolve() not in _warned:
            _warned.add(d.resolve())
            log.warning("adapter %s has no run.json (not trained by ia2 train): its files and "
                        "base model cannot be checked", d)
    elif "adapter_files" not in doc:
        log.info("adapter %s: its run.json predates checksums; only the file format is checked", d)
    else:
        for name, rec in doc["adapter_files"].items():
            path = d / name
            if not path.is_file():
                return f"adapter file {path} is missing — {RETRAIN}"
            size = path.stat().st_size
            if size != rec["bytes"]:
                why = "truncated" if size < rec["bytes"] else "size changed"
                return (f"adapter file {path} is damaged ({why}: {size} of {rec['bytes']} bytes)"
                        f" — {RETRAIN}")
            if _sha256(path) != rec["sha256"]:
                return f"adapter file {path} is damaged (checksum mismatch) — {RETRAIN}"
    weights = sorted(d.glob("adapter_model.*"))
    if not weights:
        return f"{d}: no adapter_model.safetensors (not a PEFT adapter directory)"
    if weights[0].suffix == ".safetensors":
        why = _readable(weights[0])
        if why:
            return (f"adapter file {weights[0]} is damaged ({why})"
                    + (f" — {RETRAIN}" if doc is not None else ""))
    recorded = (doc or {}).get("base_model")
    if base is not None and recorded is not None:
        actual = base_fingerprint(base)
        if actual != recorded:
            return (f"adapter {d} was trained on base model {_short(recorded)}, "
                    f"not {_short(actual)}")
    return None


def verify_adapter(adapter_dir, base=None) -> None:
    """Raise one IA2Error line if `adapter_dir` is damaged or was trained on another base."""
    problem = adapter_problem(adapter_dir, base)
    if problem:
        raise IA2Error(problem)


def recorded_base(adapter_dir) -> str | None:
    """The base model fingerprint run.json records for `adapter_dir`, if any."""
    return (_run_doc(Path(adapter_dir)) or {}).get("base_model")


def load_adapter(model, adapter_dir):
    """`PeftModel.from_pretrained(model, adapter_dir)` in eval mode, after `verify_adapter`;
    any load failure left (e.g. a plain PEFT adapter for another architecture) is one line."""
    from peft import PeftModel

    verify_adapter(adapter_dir, model)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        lines = [x.strip() for x in str(e).strip().splitlines()] or [type(e).__name__]
        first = next((x for x in lines if "mismatch" in x), lines[0])
        raise IA2Error(f"cannot load adapter {adapter_dir} on this model: {first}") from None
