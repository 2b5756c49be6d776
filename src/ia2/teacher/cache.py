"""A content-addressed cache of teacher signals (layout: docs/teacher-cache.md).

An entry is a directory named by the sha256 of everything that determines its contents, holding
safetensors shards of SHARD_SIZE examples and a JSON manifest. Shards are written atomically,
then recorded (with their sha256) in the manifest, also atomically: an interrupted collection
resumes at the first unrecorded shard, and a shard whose bytes do not match is rebuilt. One
process at a time fills an entry (a lock on `<entry>/.lock`); another waits, then reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import IA2Error
from ..io import atomic_path, exclusive_lock, write_json
from ..paths import cache_dir
from ..runtime import runtime_of
from .signals import TeacherSignals

log = logging.getLogger(__name__)

FORMAT = 1  # bump whenever the layout or the meaning of a stored number changes
SHARD_SIZE = 32  # examples per shard: the unit of resumption
FIELDS = ("response_ids", "activations", "topk_ids", "topk_logprobs", "logprobs")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _tensor_bytes(t: torch.Tensor):
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def weights_sha256(named_tensors) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(named_tensors, key=lambda kv: kv[0]):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def model_fingerprint(model) -> str:
    """The loader's `ia2_fingerprint` when set, else a hash of every weight. Adapter weights (peft
    `lora_*`, `modules_to_save`) are always hashed too: the loader's fingerprint names the base
    weights only, and a wrapped model must never hit the base model's entries. (Code that changes
    base weights in place must delete `ia2_fingerprint`.)"""
    base = getattr(model, "ia2_fingerprint", None)
    state = dict(model.state_dict())
    if base is None:
        return "weights:" + weights_sha256(state.items())
    extra = [(n, t) for n, t in state.items() if "lora_" in n or "modules_to_save" in n]
    return f"{base}+{weights_sha256(extra)}" if extra else str(base)


def _json_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()


# Recorded in the manifest but not keyed: a model's or tokenizer's name is often its path, and
# moving the model or the cache must keep the cache. The weights fingerprint, the tokenizer's
# size and the prompts' token ids stand for them.
UNKEYED = (("model", "name"), ("tokenizer", "name"))


def cache_fields(model, tokenizer, spec, episode, config, items, eos, label_ids) -> dict:
    """Everything that determines the teacher signals of an episode, JSON-serialisable (the
    names in UNKEYED are recorded, not keyed)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = inner.config
    fields = {
        "format": FORMAT,
        "model": {
            "name": getattr(cfg, "_name_or_path", "") or type(inner).__name__,
            "class": type(inner).__name__,
            "fingerprint": model_fingerprint(model),
            "attn_implementation": getattr(cfg, "_attn_implementation", None),
        },
        "tokenizer": {"name": getattr(tokenizer, "name_or_path", ""), "size": len(tokenizer)},
        "task": spec.name,
        "preset": config.preset,
        "episode": {"n": episode.n, "seed": episode.seed},
        # The prompts themselves stand for the episode: demonstrations, order, template,
        # tokenizer and context-window truncation all end up in these ids.
        "prompts_sha256": _json_sha256([it["ids"] for it in items]),
        "uids_sha256": _json_sha256([it["uid"] for it in items]),
        "site": config.site,
        "layers": list(config.layers),
        "max_new_tokens": config.max_new_tokens,
        "stop": list(config.stop),
        "eos": list(eos),
        "topk": config.topk,
        "dtype": config.dtype,
        "constrain_to_labels": config.constrain_to_labels,
        "label_ids": list(label_ids) if label_ids else None,
    }
    if config.full_distribution:  # only when on: entries without it keep their keys
        fields["full_distribution"] = True
    compute = runtime_of(model).dtype
    if compute != "fp32":  # the model's own dtype changes the numbers; fp32 entries keep their keys
        fields["model"]["dtype"] = compute
    return fields


def cache_key(fields: dict) -> str:
    keyed = {k: dict(v) if isinstance(v, dict) else v for k, v in fields.items()}
    for group, name in UNKEYED:
        keyed.get(group, {}).pop(name, None)
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def legacy_key(fields: dict) -> str:
    """The key ia2 used before names were unkeyed: entries stored under it are still read."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _name(item: dict, field: str) -> str:
    return f"{item['split']}.{item['index']}.{field}"


class TeacherCache:
    """One cache entry: `root/<key>/manifest.json` and `shard-00000.safetensors`, ..."""

    def __init__(self, fields: dict, items: list[dict], root: str | Path | None = None):
        self.fields, self.items = fields, items
        self.key = cache_key(fields)
        root = Path(root if root is not None else cache_dir() / "teacher")
        self.path = root / self.key
        old = root / legacy_key(fields)
        if not (self.path / "manifest.json").is_file() and (old / "manifest.json").is_file():
            self.key, self.path = old.name, old  # an entry written by an older ia2
        self.manifest_path = self.path / "manifest.json"
        self.n_shards = (len(items) + SHARD_SIZE - 1) // SHARD_SIZE

    def _shard_items(self, s: int) -> list[int]:
        return list(range(s * SHARD_SIZE, min((s + 1) * SHARD_SIZE, len(self.items))))

    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._new_manifest()
        except (OSError, ValueError):
            log.warning("teacher cache %s: unreadable manifest, rebuilding", self.path)
            return self._new_manifest()
        if manifest.get("key") != self.key or manifest.get("format") != FORMAT:
            log.warning("teacher cache %s: manifest is for another key, rebuilding", self.path)
            return self._new_manifest()
        return manifest

    def _new_manifest(self) -> dict:
        return {"format": FORMAT, "ia2_version": __version__, "key": self.key,
                "fields": self.fields, "items": self.items, "shard_size": SHARD_SIZE,
                "shards": {}, "complete": False, "bytes": 0}

    def _load_shard(self, s: int, record: dict | None) -> list[TeacherSignals] | None:
        """The shard's signals, or None when it is missing, corrupt or not what was recorded."""
        if record is None:
            return None
        path = self.path / record["file"]
        try:
            if file_sha256(path) != record["sha256"]:
                log.warning("teacher cache: %s does not match its checksum, rebuilding", path)
                return None
            tensors = load_file(path)
            out = []
            for i in self._shard_items(s):
                got = {f: tensors.get(_name(self.items[i], f)) for f in FIELDS}
                if got["response_ids"] is None or got["activations"] is None:
                    raise KeyError(_name(self.items[i], "activations"))
                out.append(TeacherSignals(**got))
            return out
        except (OSError, KeyError, SafetensorError) as e:
            log.warning("teacher cache: %s unreadable (%s), rebuilding", path, e)
            return None

    def _write_shard(self, s: int, signals: list[TeacherSignals]) -> dict:
        tensors = {}
        for i, sig in zip(self._shard_items(s), signals):
            for f in FIELDS:
                t = getattr(sig, f)
                if t is not None:
                    tensors[_name(self.items[i], f)] = t.contiguous()
        file = f"shard-{s:05d}.safetensors"
        with atomic_path(self.path / file) as tmp:
            # one metadata entry: safetensors stores metadata unordered, and equal shards
            # should be equal bytes
            meta = json.dumps({"format": FORMAT, "key": self.key}, sort_keys=True)
            save_file(tensors, tmp, metadata={"ia2_cache": meta})
        path = self.path / file
        return {"file": file, "sha256": file_sha256(path), "bytes": path.stat().st_size,
                "items": [self._shard_items(s)[0], self._shard_items(s)[-1] + 1]}

    def _claimed(self):
        """Hold `<entry>/.lock` exclusively; a process that finds it held waits."""
        return exclusive_lock(self.path / ".lock", lambda: log.warning(
            "teacher cache %s: another process is filling it; waiting", self.path))

    def load_or_build(self, build: Callable[[list[int], object], list[TeacherSignals]],
                      progress=None) -> tuple[list[TeacherSignals], int]:
        """All signals in item order, and how many examples had to be computed.
        `build(indices, progress)` computes the signals of the given items."""
        with self._claimed():
            return self._load_or_build(build, progress)

    def _load_or_build(self, build, progress) -> tuple[list[TeacherSignals], int]:
        manifest = self._read_manifest()
        signals: list[TeacherSignals] = []
        computed = 0
        for s in range(self.n_shards):
            key = f"{s:05d}"
            got = self._load_shard(s, manifest["shards"].get(key))
            if got is None:
                idx = self._shard_items(s)
                got = build(idx, progress)
                if len(got) != len(idx):
                    raise IA2Error(f"teacher cache: built {len(got)} signals for {len(idx)} items")
                try:
                    manifest["shards"][key] = self._write_shard(s, got)
                    manifest["complete"] = len(manifest["shards"]) == self.n_shards
                    manifest["bytes"] = sum(r["bytes"] for r in manifest["shards"].values())
                    write_json(self.manifest_path, manifest)  # after the shard: resume point
                except OSError as e:
                    raise IA2Error(f"cannot write the teacher cache at {self.path}: {e}") from None
                computed += len(idx)
            elif progress is not None:
                progress.update(len(got))
            signals.extend(got)
        if not self.manifest_path.is_file():  # an episode with no examples still gets its entry
            write_json(self.manifest_path, {**manifest, "complete": True})
        return signals, computed
