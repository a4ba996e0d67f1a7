"""Our own post-training run: supervised fine-tuning of a base model into a chat assistant (issue 11).

Two steps, each a command (``make posttrain`` runs both):

``python -m emolib.posttrain data``
    Responses to the fine-tuning prompts of ``data/prompts/posttrain_prompts.json`` (``training``: our own
    wording, disjoint from the measurement prompts) *written by SmolLM2-135M-Instruct* (distillation: the
    teacher is a different, smaller chat model, read through its own ChatML template, default system prompt
    included), sampled with :func:`emolib.generate.sample_batch` (seeded per batch). Written to
    ``data/posttrain/sft.jsonl`` (append-only, resumable) with ``provenance.json``. A held-out split (10%,
    seeded, by prompt id: :func:`heldout_ids`) is kept out of training for the chat-loss check.

``python -m emolib.posttrain train --base gemma-3-270m --steps N --out data/posttrain/adapters``
    LoRA (``peft``) fine-tuning on Human/Assistant dialogues rendered in the plain chat format
    (:func:`emolib.chat.render` with ``fmt="plain"``), loss on the assistant's tokens (and the closing EOS)
    only. Adapters are saved at 0%, 25%, 50% and 100% of the steps into ``<out>/step_<k>/`` (safetensors)
    with a ``provenance.json``; the AdamW state goes next to each as ``optimizer.safetensors`` +
    ``optimizer.json`` (no pickle), so a rerun skips finished checkpoints and resumes from the latest one.

The data order is fixed by the seed alone (:func:`batch_order`), and LoRA dropout is 0, so a resumed run
follows the same loss curve as an uninterrupted one (up to floating-point noise).

Analysis loads an adapter with ``emolib.models.load_model(base, adapter=folder)`` (merged into the weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, store
from .constants import DATA_DIR
from .corpus import _append, degenerate_reason, generate_batch, pending_batches, read_jsonl
from .generate import Sampling

POSTTRAIN_DIR = DATA_DIR / "posttrain"
SFT_FILE = "sft.jsonl"
TEACHER = "smollm2-135m-instruct"
BASE = "gemma-3-270m"
# The teacher's sampling (recorded in provenance.json).
SFT_SAMPLING = Sampling(temperature=0.7, top_p=0.9, top_k=100, max_new_tokens=160, batch_size=32, seed=0)
HELDOUT_SHARE = 0.1
CHECKPOINT_FRACTIONS = (0.0, 0.25, 0.5, 1.0)
IGNORE = -100  # label of tokens that carry no loss


# ------------------------------------------------------------------------------------------------- data
def heldout_ids(ids: Sequence[str], share: float = HELDOUT_SHARE, seed: int = 0) -> frozenset[str]:
    """The held-out prompt ids: ``round(share * n)`` ids drawn by a seeded permutation of the sorted ids
    (so the split depends on the ids and the seed only, never on file order)."""
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    ids = sorted(set(ids))
    k = round(share * len(ids))
    perm = np.random.default_rng(seed).permutation(len(ids))
    return frozenset(ids[i] for i in perm[:k])


@dataclass(frozen=True)
class Dialogue:
    """One fine-tuning example: a user prompt and the assistant's response."""

    id: str
    prompt: str
    response: str
    split: str = "train"  # "train" | "heldout"
    ended: bool = True  # the teacher stopped on its own (False: cut at its token budget; no EOS target then)


@dataclass
class DataReport:
    n_prompts: int
    n_done_before: int
    n_generated: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else float("nan")


def generate_sft(
    hf_model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    out_path: str | Path,
    sampling: Sampling = SFT_SAMPLING,
    *,
    heldout: frozenset[str] = frozenset(),
    teacher: str = TEACHER,
    max_batches: int | None = None,
    progress: bool = True,
) -> DataReport:
    """Write one teacher response per prompt (``prompts``: records with ``id``, ``category``, ``text``) to
    ``out_path`` (append-only JSONL). Batches are fixed slices of ``prompts`` seeded with
    ``sampling.seed * 1_000_003 + batch_index``; a batch cut short is regenerated whole and only its missing
    records are written, so resuming reproduces an uninterrupted run (as :func:`emolib.corpus.generate_corpus`)."""
    from tqdm.auto import tqdm

    from .chat import user_turn

    out_path = Path(out_path)
    done, todo, n_before = pending_batches(prompts, out_path, sampling.batch_size)
    report = DataReport(len(prompts), n_before, 0, 0, 0.0)
    t0 = time.perf_counter()
    bar = tqdm(total=len(prompts), initial=report.n_done_before, desc="sft data", disable=not progress)
    for n, (b, batch) in enumerate(todo):
        if max_batches is not None and n >= max_batches:
            break
        seed = sampling.seed * 1_000_003 + b
        texts = [user_turn(tokenizer, p.text) for p in batch]
        outs = generate_batch(hf_model, tokenizer, texts, sampling, seed)
        recs = []
        for p, (text, n_tok, eos) in zip(batch, outs):
            report.new_tokens += n_tok
            if p.id in done:
                continue
            recs.append(
                {
                    "id": p.id,
                    "category": p.category,
                    "prompt": p.text,
                    "response": text,
                    "split": "heldout" if p.id in heldout else "train",
                    "n_new_tokens": n_tok,
                    "hit_eos": eos,
                    "degenerate": degenerate_reason(text),
                    "batch": b,
                    "seed": seed,
                    "teacher": teacher,
                }
            )
        _append(out_path, recs)
        done.update(r["id"] for r in recs)
        report.n_generated += len(recs)
        bar.update(len(recs))
    bar.close()
    report.seconds = time.perf_counter() - t0
    return report


def load_sft(path: str | Path = POSTTRAIN_DIR / SFT_FILE, *, usable_only: bool = True) -> list[Dialogue]:
    """Dialogues of an SFT file, in file order. ``usable_only`` drops empty and degenerate responses."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No fine-tuning data at {path}: run `python -m emolib.posttrain data` (or `make posttrain`)"
        )
    out = []
    for r in read_jsonl(path):
        if usable_only and (not r["response"].strip() or r.get("degenerate")):
            continue
        out.append(
            Dialogue(
                r["id"], r["prompt"], r["response"], r.get("split", "train"), bool(r.get("hit_eos", True))
            )
        )
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def run_data(
    out_dir: str | Path = POSTTRAIN_DIR,
    *,
    teacher: str = TEACHER,
    sampling: Sampling = SFT_SAMPLING,
    split_seed: int = 0,
    loaded: Any = None,
    prompts: Sequence[Any] | None = None,
    max_batches: int | None = None,
    progress: bool = True,
) -> tuple[Path, DataReport]:
    """Load the teacher (unless ``loaded``), generate what is missing, write ``provenance.json``."""
    from .models import load_model
    from .prompt_sets import POSTTRAIN_FILE, load_posttrain_prompts

    out = Path(out_dir)
    prompts = list(prompts if prompts is not None else load_posttrain_prompts().training)
    held = heldout_ids([p.id for p in prompts], HELDOUT_SHARE, split_seed)
    m = loaded or load_model(teacher, bridge=False)  # sampling needs no hooks (see load_model)
    report = generate_sft(
        m.hf_model,
        m.tokenizer,
        prompts,
        out / SFT_FILE,
        sampling,
        heldout=held,
        teacher=teacher,
        max_batches=max_batches,
        progress=progress,
    )
    recs = read_jsonl(out / SFT_FILE)
    prov = {
        "what": "responses to our own fine-tuning prompts written by the teacher model (distillation)",
        "teacher": m.info.to_dict(),
        "teacher_format": "the teacher's own chat template (emolib.chat.user_turn), default system prompt",
        "sampling": asdict(sampling),
        "sampler": "emolib.generate.sample_batch (top-k then top-p), batch seed = seed * 1000003 + batch",
        "prompts_file": str(Path(POSTTRAIN_FILE).relative_to(DATA_DIR.parent)),
        "prompts_sha256": file_sha256(POSTTRAIN_FILE),
        "heldout_rule": f"{HELDOUT_SHARE:.0%} of the prompt ids, numpy default_rng({split_seed}) permutation "
        "of the sorted ids",
        "counts": {
            "records": len(recs),
            "train": sum(r["split"] == "train" for r in recs),
            "heldout": sum(r["split"] == "heldout" for r in recs),
            "degenerate_or_empty": sum(bool(r.get("degenerate")) or not r["response"].strip() for r in recs),
            "hit_eos": sum(bool(r["hit_eos"]) for r in recs),
            "new_tokens": sum(r["n_new_tokens"] for r in recs),
        },
        "sft_sha256": file_sha256(out / SFT_FILE),
        "generation_seconds_this_run": round(report.seconds, 1),
        "emolib_version": __version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "provenance.json").write_text(json.dumps(prov, indent=1))
    return out, report


# ---------------------------------------------------------------------------------------- tokenisation
@dataclass(frozen=True)
class Example:
    """A tokenised dialogue: ``labels`` is ``IGNORE`` on the prompt's tokens."""

    ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def n_target(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def encode_dialogue(
    tokenizer: Any, prompt: str, response: str, *, max_len: int = 256, ended: bool = True
) -> Example:
    """Render ``Human: {prompt}\\n\\nAssistant: {response}`` (:func:`emolib.chat.render`, ``fmt="plain"``),
    tokenise it (BOS added), and mask every token before the answer with ``IGNORE``; when the response
    ``ended`` on its own, the tokenizer's EOS is appended as a target so the model learns to stop (a response
    cut at the teacher's token budget gets none: it must not teach stopping mid-sentence). Truncated to
    ``max_len`` tokens."""
    from .chat import continuation_ids, render

    user = [{"role": "user", "content": prompt}]
    head = render(tokenizer, user, add_generation_prompt=True, fmt="plain")
    full = render(
        tokenizer,
        [*user, {"role": "assistant", "content": response}],
        add_generation_prompt=False,
        fmt="plain",
    )
    if not full.startswith(head):
        raise ValueError("The plain format's prompt is not a prefix of the dialogue (chat.py changed?)")
    if not response.strip():
        raise ValueError("Empty response: nothing to learn")
    p_ids, a_ids = continuation_ids(tokenizer, head, full[len(head) :])
    eos = [tokenizer.eos_token_id] if ended and tokenizer.eos_token_id is not None else []
    ids = (p_ids + a_ids + eos)[:max_len]
    labels = ([IGNORE] * len(p_ids) + a_ids + eos)[:max_len]
    ex = Example(tuple(ids), tuple(labels))
    if ex.n_target == 0:
        raise ValueError(f"The prompt alone fills max_len={max_len} tokens: no answer token left")
    return ex


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    lab = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for j, e in enumerate(examples):
        n = len(e.ids)
        ids[j, :n] = torch.tensor(e.ids)
        att[j, :n] = 1
        lab[j, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def token_losses(hf_model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """(sum of next-token cross-entropies over the target tokens, number of target tokens)."""
    import torch.nn.functional as F

    dev = next(hf_model.parameters()).device
    ids, att, lab = (batch[k].to(dev) for k in ("input_ids", "attention_mask", "labels"))
    logits = hf_model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    tgt = lab[:, 1:]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((tgt != IGNORE).sum().item())


def chat_loss(
    model: Any,
    tokenizer: Any,
    dialogues: Sequence[Dialogue | tuple[str, str]],
    *,
    batch_size: int = 8,
    max_len: int = 256,
) -> float:
    """Mean cross-entropy per assistant token (EOS included where the response ended) on ``dialogues`` in the plain chat format:
    the held-out check that a model became a chat model. ``model``: a transformers model or an
    :class:`emolib.models.LoadedModel`; a LoadedModel read with its own tokenizer goes through the result
    store (:mod:`emolib.store`, keyed by its weights hash and the dialogues), so a rebuild of chapter 05 reads
    the loss instead of running the held-out dialogues through both models again."""
    ds = tuple(d if isinstance(d, Dialogue) else Dialogue("", *d) for d in dialogues)
    if not ds:
        raise ValueError("No dialogues to score")
    if getattr(model, "info", None) is not None and getattr(model, "tokenizer", None) is tokenizer:
        return float(_stored_chat_loss(model, ds, batch_size, max_len)[0])
    return _chat_loss(model, tokenizer, ds, batch_size, max_len)


@store.memo("chat_loss", version=1)
def _stored_chat_loss(
    model: Any, dialogues: tuple[Dialogue, ...], batch_size: int, max_len: int
) -> np.ndarray:
    return np.array([_chat_loss(model, model.tokenizer, dialogues, batch_size, max_len)])


def _chat_loss(model: Any, tokenizer: Any, ds: Sequence[Dialogue], batch_size: int, max_len: int) -> float:
    import torch

    hf = getattr(model, "hf_model", model)
    exs = [encode_dialogue(tokenizer, d.prompt, d.response, max_len=max_len, ended=d.ended) for d in ds]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, n = 0.0, 0
    was_training = hf.training
    hf.eval()
    with torch.no_grad():
        for i in range(0, len(exs), batch_size):
            s, k = token_losses(hf, collate(exs[i : i + batch_size], pad))
            total, n = total + float(s), n + k
    hf.train(was_training)
    return total / n


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainConfig:
    """Settings of one fine-tuning run (all recorded in each checkpoint's provenance)."""

    base: str = BASE
    data: str = str(POSTTRAIN_DIR / SFT_FILE)
    steps: int = 120
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_len: int = 256
    seed: int = 0
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    weight_decay: float = 0.0
    checkpoints: tuple[float, ...] = CHECKPOINT_FRACTIONS
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "max_len", "rank", "alpha"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "checkpoints", tuple(float(f) for f in self.checkpoints))
        if not self.checkpoints or any(not 0 <= f <= 1 for f in self.checkpoints):
            raise ValueError(f"checkpoints must be fractions in [0, 1], got {self.checkpoints!r}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"device must be 'cpu', 'cuda[:n]' or 'mps', got {self.device!r}")

    def checkpoint_steps(self) -> list[int]:
        """The steps after which an adapter is saved (0 = before any update)."""
        return sorted({round(f * self.steps) for f in self.checkpoints})

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the saved checkpoints (device and the data file's
        location excluded: the data is identified by its sha256)."""
        d = asdict(self)
        d.pop("device")
        d.pop("data")
        d["target_modules"] = list(self.target_modules)
        d["checkpoints"] = list(self.checkpoints)
        return d


def batch_order(n_examples: int, steps: int, per_step: int, seed: int) -> np.ndarray:
    """Example indices of every step [steps, per_step]: consecutive epochs, each a fresh permutation from
    ``np.random.default_rng(seed)``; depends on the seed and sizes only, so any step can be resumed."""
    if n_examples < 1:
        raise ValueError("No training examples")
    rng = np.random.default_rng(seed)
    need = steps * per_step
    chunks, have = [], 0
    while have < need:
        chunks.append(rng.permutation(n_examples))
        have += n_examples
    return np.concatenate(chunks)[:need].reshape(steps, per_step)


def _hf_folder(spec: str) -> tuple[str, str]:
    """(folder or hub name to load with transformers, weights hash) of a model spec."""
    from .models import packaged_dir, resolve_spec, weights_hash

    kind, where = resolve_spec(spec)
    if kind == "packaged":
        folder = packaged_dir(str(where))
        return str(folder), weights_hash(folder)
    if kind == "local":
        return str(where), weights_hash(Path(where))
    return str(where), f"hub:{where}"


def load_base(spec: str, device: str = "cpu") -> tuple[Any, Any, str]:
    """(transformers model in fp32 on ``device``, tokenizer, weights hash) of the base model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, whash = _hf_folder(spec)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    return hf.to(device), tok, whash


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_optimizer(opt: Any, folder: Path) -> None:
    """AdamW state as safetensors (tensors) + JSON (hyper-parameters, step counts): no pickle."""
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if hasattr(v, "shape") and v.dim() > 0:
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = float(v)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(
        json.dumps({"param_groups": sd["param_groups"], "scalars": scalars})
    )


def _load_optimizer(opt: Any, folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = torch.tensor(v)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class TrainReport:
    """What a call to :func:`train` did."""

    out: Path
    checkpoints: dict[int, Path]  # step -> adapter folder (all saved ones, old and new)
    resumed_from: int | None  # the step a rerun resumed from (None: started fresh or nothing to do)
    skipped: list[int] = field(default_factory=list)  # checkpoints already saved before this call
    losses: list[float] = field(default_factory=list)  # loss of every step so far (whole run)
    tokens: int = 0  # tokens processed by this call
    seconds: float = 0.0  # wall time of this call

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def _portable_adapter(folder: Path, base: str) -> None:
    """Make a saved adapter folder machine-independent: peft writes the base model's resolved folder (a path in
    this machine's cache) into ``adapter_config.json`` and a boilerplate model card; record the base as the
    spec it was trained from (e.g. ``gemma-3-270m``) and drop the card (``provenance.json`` documents the run).
    Loading is unaffected: :func:`emolib.models.load_model` applies the adapter to the model it loaded."""
    path = folder / "adapter_config.json"
    conf = json.loads(path.read_text())
    conf["base_model_name_or_path"] = base
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").unlink(missing_ok=True)


def _repo_relative(path: str | Path) -> str:
    p = Path(path).resolve()
    root = DATA_DIR.parent.resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(path)


def _finished(folder: Path) -> bool:
    return (folder / "provenance.json").is_file() and (folder / "adapter_model.safetensors").is_file()


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    dialogues: Sequence[Dialogue] | None = None,
    progress: bool = True,
    until: int | None = None,
) -> TrainReport:
    """LoRA fine-tuning of ``cfg.base`` on the training split of ``cfg.data`` (or ``dialogues``); saves
    ``<out>/step_<k>/`` at :meth:`TrainConfig.checkpoint_steps`. Finished checkpoints are skipped; the run
    resumes from the latest one (adapter + optimizer state), which must share ``cfg.identity()``.
    ``until`` (a checkpoint step) stops the run once that checkpoint is saved; a later call resumes it."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = Path(cfg.data)
    dialogues_given = dialogues is not None
    if dialogues is None:
        dialogues = [d for d in load_sft(data_path) if d.split == "train"]
        data_sha = file_sha256(data_path)
    else:
        data_sha = hashlib.sha256(
            json.dumps([[d.prompt, d.response] for d in dialogues]).encode()
        ).hexdigest()
    ident = {**cfg.identity(), "data_sha256": data_sha, "n_examples": len(dialogues)}
    ckpts = cfg.checkpoint_steps()
    if until is not None and until not in ckpts:
        raise ValueError(f"until must be one of the checkpoint steps {ckpts}, got {until!r}")
    saved = {}
    for k in ckpts:
        folder = out / f"step_{k}"
        if _finished(folder):
            prov = json.loads((folder / "provenance.json").read_text())
            if prov.get("run") != ident:
                diff = sorted(x for x in ident if prov.get("run", {}).get(x) != ident[x])
                raise ValueError(
                    f"{folder} was saved by a run with other settings ({', '.join(diff)}): use another --out "
                    "or delete it"
                )
            saved[k] = folder
    report = TrainReport(out, dict(saved), None, sorted(saved))
    if len(saved) == len(ckpts) or (until is not None and until in saved):
        last = ckpts[-1] if len(saved) == len(ckpts) else until
        report.losses = json.loads((saved[last] / "provenance.json").read_text())["loss_curve"]
        return report

    _seed_all(cfg.seed)
    hf, tok, base_hash = load_base(cfg.base, cfg.device)
    hf.config.use_cache = False
    exs = [encode_dialogue(tok, d.prompt, d.response, max_len=cfg.max_len, ended=d.ended) for d in dialogues]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    # resume from the latest finished checkpoint that has its optimizer state
    start = 0
    resumable = [k for k in sorted(saved) if (saved[k] / "optimizer.safetensors").is_file()]
    if resumable:
        start = resumable[-1]
        model = PeftModel.from_pretrained(hf, str(saved[start]), is_trainable=True)
        report.resumed_from = start
        prior = json.loads((saved[start] / "provenance.json").read_text())
        report.losses = list(prior["loss_curve"])
        elapsed0 = float(prior.get("wall_seconds_total", 0.0))
    else:
        lcfg = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            target_modules=list(cfg.target_modules),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(hf, lcfg)
        elapsed0 = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resumable:
        _load_optimizer(opt, saved[start])
    order = batch_order(len(exs), cfg.steps, cfg.batch_size * cfg.grad_accum, cfg.seed)
    model.train()
    t0 = time.perf_counter()

    def save(step: int) -> None:
        folder = out / f"step_{step}"
        tmp = out / f"step_{step}.partial"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), safe_serialization=True)
        _portable_adapter(tmp, cfg.base)
        _save_optimizer(opt, tmp)
        secs = time.perf_counter() - t0
        prov = {
            "run": ident,
            "step": step,
            "fraction": step / cfg.steps,
            "loss_curve": report.losses[:step],
            "base_model": cfg.base,
            "data_file": _repo_relative(cfg.data) if dialogues_given is False else "(passed in memory)",
            "base_weights_hash": base_hash,
            "script": "emolib/posttrain.py",
            "script_sha256": file_sha256(__file__),
            "emolib_version": __version__,
            "device": str(cfg.device),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "wall_seconds_this_call": round(secs, 2),
            "wall_seconds_total": round(elapsed0 + secs, 2),
            "tokens_this_call": report.tokens,
            "tokens_per_second": round(report.tokens / secs, 2) if secs > 0 and report.tokens else None,
            "resumed_from": report.resumed_from,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        report.checkpoints[step] = folder

    if start == 0 and 0 in ckpts and 0 not in saved:
        save(0)
    end = cfg.steps if until is None else until
    bar = tqdm(range(start, end), desc="train", disable=not progress)
    for step in bar:
        idx = order[step]
        micro = [idx[i : i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)]
        batches = [collate([exs[j] for j in m], pad) for m in micro]
        n_target = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for b in batches:
            s, _ = token_losses(model, b)
            (s / n_target).backward()
            total += float(s.detach())
            report.tokens += int(b["attention_mask"].sum())
        opt.step()
        report.losses.append(total / n_target)
        bar.set_postfix(loss=f"{report.losses[-1]:.3f}")
        done = step + 1
        if done in ckpts and done not in saved:
            save(done)
    bar.close()
    report.seconds = time.perf_counter() - t0
    return report


@dataclass(frozen=True)
class VerifyReport:
    """A fresh training run up to ``step`` compared with a saved checkpoint of the same settings."""

    step: int
    reference: str  # the saved checkpoint folder
    loss_max_abs_diff: float  # over the first ``step`` per-step losses
    loss_first: tuple[float, float]  # (fresh, saved) loss of the first step
    loss_last: tuple[float, float]  # (fresh, saved) loss of step ``step``
    adapter_max_abs_diff: float  # over every LoRA tensor
    adapter_rel_diff: float  # ||fresh - saved|| / ||saved||, all LoRA tensors together
    n_tensors: int
    seconds: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.loss_max_abs_diff <= self.tolerance

    def text(self) -> str:
        verdict = "reproduced" if self.ok else "NOT reproduced"
        return (
            f"{verdict} to step {self.step} ({self.reference}): per-step loss max |diff| "
            f"{self.loss_max_abs_diff:.2e} (tolerance {self.tolerance:g}); first step {self.loss_first[0]:.4f} vs "
            f"{self.loss_first[1]:.4f}, step {self.step} {self.loss_last[0]:.4f} vs {self.loss_last[1]:.4f}; "
            f"adapter ({self.n_tensors} tensors) max |diff| {self.adapter_max_abs_diff:.2e}, relative "
            f"{self.adapter_rel_diff:.2e}; {self.seconds:.0f} s"
        )


def verify(
    cfg: TrainConfig,
    reference: str | Path,
    step: int,
    *,
    work: str | Path | None = None,
    tolerance: float = 1e-2,
    progress: bool = True,
) -> VerifyReport:
    """Retrain ``cfg`` from scratch into ``work`` (default: a temporary folder) until checkpoint ``step`` and
    compare its per-step losses and LoRA weights with ``<reference>/step_<step>`` (e.g. the committed
    adapters). The saved checkpoint must come from the same settings and data (``cfg.identity()``). Floating
    point sums differ with the thread count and the machine, so the losses agree "within noise": the default
    ``tolerance`` is 0.01 nats per step, far below the training's own drop (about 0.2 nats)."""
    import tempfile

    from safetensors.numpy import load_file

    ref = Path(reference) / f"step_{step}"
    if not _finished(ref):
        raise FileNotFoundError(
            f"No saved checkpoint {ref} (with provenance.json and adapter_model.safetensors)"
        )
    prov = json.loads((ref / "provenance.json").read_text())
    ident = {**cfg.identity(), "data_sha256": file_sha256(cfg.data)}
    mismatch = sorted(k for k in ident if prov.get("run", {}).get(k) != ident[k])
    if mismatch:
        raise ValueError(
            f"{ref} was saved with other settings or data ({', '.join(mismatch)}): nothing to compare"
        )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emolib-posttrain-") as tmp:
        out = Path(work) if work is not None else Path(tmp)
        rep = train(cfg, out, progress=progress, until=step)
        fresh = load_file(str(out / f"step_{step}" / "adapter_model.safetensors"))
    saved = load_file(str(ref / "adapter_model.safetensors"))
    if set(fresh) != set(saved):
        raise ValueError(
            f"The fresh adapter's tensors differ from {ref}'s: {sorted(set(fresh) ^ set(saved))[:5]}"
        )
    diffs = [np.abs(fresh[k].astype(np.float64) - saved[k]).max() for k in saved]
    num = math.sqrt(sum(float(((fresh[k].astype(np.float64) - saved[k]) ** 2).sum()) for k in saved))
    den = math.sqrt(sum(float((saved[k].astype(np.float64) ** 2).sum()) for k in saved))
    a, b = np.asarray(rep.losses[:step], float), np.asarray(prov["loss_curve"][:step], float)
    if step and (len(a) != step or len(b) != step):
        raise ValueError(f"Loss curves too short to compare: {len(a)} fresh, {len(b)} saved, step {step}")
    return VerifyReport(
        step=step,
        reference=_repo_relative(ref),
        loss_max_abs_diff=float(np.abs(a - b).max()) if step else 0.0,
        loss_first=(float(a[0]), float(b[0])) if step else (float("nan"), float("nan")),
        loss_last=(float(a[-1]), float(b[-1])) if step else (float("nan"), float("nan")),
        adapter_max_abs_diff=float(max(diffs)),
        adapter_rel_diff=num / den if den else float("nan"),
        n_tensors=len(saved),
        seconds=time.perf_counter() - t0,
        tolerance=tolerance,
    )


def list_checkpoints(out: str | Path) -> dict[int, Path]:
    """Finished adapter checkpoints under ``out``: step -> folder, in step order."""
    out = Path(out)
    found = {}
    for f in out.glob("step_*") if out.is_dir() else []:
        tail = f.name.removeprefix("step_")
        if tail.isdigit() and _finished(f):
            found[int(tail)] = f
    return dict(sorted(found.items()))


# ------------------------------------------------------------------------------------------------ CLI
def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emolib.posttrain", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="teacher responses to the fine-tuning prompts (resumable)")
    d.add_argument("--teacher", default=TEACHER)
    d.add_argument("--out", default=str(POSTTRAIN_DIR))
    d.add_argument("--max-batches", type=int, default=None)
    t = sub.add_parser("train", help="LoRA fine-tuning with checkpoints (resumable)")
    t.add_argument("--base", default=BASE)
    t.add_argument("--data", default=str(POSTTRAIN_DIR / SFT_FILE))
    t.add_argument("--steps", type=int, default=TrainConfig.steps)
    t.add_argument("--out", default=str(POSTTRAIN_DIR / "adapters"))
    t.add_argument("--lr", type=float, default=TrainConfig.lr)
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    t.add_argument("--grad-accum", type=int, default=TrainConfig.grad_accum)
    t.add_argument("--max-len", type=int, default=TrainConfig.max_len)
    t.add_argument("--seed", type=int, default=TrainConfig.seed)
    t.add_argument("--device", default=None, help="cpu, cuda[:n] (default: cuda when available)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--until", type=int, default=None, help="stop once this checkpoint step is saved")
    t.add_argument(
        "--verify", type=int, default=None, metavar="STEP",
        help="retrain from scratch (in a temporary folder) to checkpoint STEP and compare with --out's (exit 1 if "
        "the losses differ beyond --tolerance)",
    )  # fmt: skip
    t.add_argument("--tolerance", type=float, default=1e-2, help="per-step loss tolerance of --verify (nats)")
    a = p.parse_args(argv)
    if a.cmd == "data":
        out, rep = run_data(a.out, teacher=a.teacher, max_batches=a.max_batches)
        print(
            f"{out / SFT_FILE}: {rep.n_generated} new, {rep.n_done_before} already there, "
            f"{rep.new_tokens} tokens in {rep.seconds:.0f} s ({rep.tokens_per_second:.0f} tok/s)"
        )
        return 0
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    cfg = TrainConfig(
        base=a.base,
        data=a.data,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        max_len=a.max_len,
        seed=a.seed,
        device=a.device or _default_device(),
    )
    if a.verify is not None:
        v = verify(cfg, a.out, a.verify, tolerance=a.tolerance)
        print(v.text())
        return 0 if v.ok else 1
    rep = train(cfg, a.out, until=a.until)
    if rep.skipped and rep.resumed_from is None and not rep.seconds:
        print(f"All checkpoints already saved in {a.out}: {sorted(rep.checkpoints)}")
    else:
        print(
            f"{a.out}: checkpoints {sorted(rep.checkpoints)}, resumed from {rep.resumed_from}, "
            f"{rep.tokens} tokens in {rep.seconds:.0f} s ({rep.tokens_per_second:.1f} tok/s), "
            f"loss {rep.losses[0]:.3f} -> {rep.losses[-1]:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
