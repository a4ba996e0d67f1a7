"""GPU benchmark: extraction and generation on a real 1-8B architecture with random weights.

Nothing is downloaded: the model is built from a config with the published shapes (weights do not change
timing), saved with a small BPE tokenizer to a temporary folder and loaded back through
:func:`emolib.models.load_model`, so the timed path is the one the book runs (TransformerBridge, hooks,
:func:`emolib.extract.extract`, :func:`emolib.generate.sample_batch`).

Reports tokens/s and *model FLOPs utilization* (MFU): FLOP-equivalents per second (2 x weights of the
layers a token passes through, see :mod:`common`) over the GPU's bf16 peak, both the peak measured here
with a large GEMM and the datasheet's dense figure.

    python benchmarks/gpu.py --arch qwen2.5-1.5b [--device cuda] [--dtype bfloat16] [--seq 512]
    python benchmarks/gpu.py --arch tiny --device cpu --dtype float32     # a smoke run without a GPU

Extraction batch size (the rule, :func:`common`-free so it can move into emolib): a sequence of T tokens
needs about ``T * (4 d + 3 d_ff) * b`` bytes of live activations in one block, ``2 * heads * T^2 * b`` for
eager attention scores and probabilities, and ``T * d * b`` per hooked layer kept until pooling (``b``:
bytes per element); the batch is ``floor(0.5 * free_memory / that)``, between 1 and 256.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import peak

# Published shapes (config.json of each hub model); only the shapes matter here.
ARCHS: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(
        family="llama",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie=True,
        rope_theta=500000.0,
    ),
    "qwen2.5-1.5b": dict(
        family="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie=True,
        rope_theta=1000000.0,
    ),
    "llama-3.1-8b": dict(
        family="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie=False,
        rope_theta=500000.0,
    ),
    "tiny": dict(
        family="llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie=True,
        rope_theta=10000.0,
    ),
}

# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, without sparsity).
DATASHEET_BF16_TFLOPS = {
    "H200": 989.5,
    "H100 SXM": 989.5,
    "H100 80GB HBM3": 989.5,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "B200": 2250.0,
    "RTX 4090": 165.2,
}

WORDS = (
    "the river light letter morning station window quiet hands voice door road winter garden "
    "table bread music school friend market rain evening paper train city field sea"
).split()


def datasheet_peak(name: str) -> float | None:
    for key in sorted(DATASHEET_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return DATASHEET_BF16_TFLOPS[key]
    return None


def build_model_dir(arch: str, folder: Path, seed: int = 0) -> Path:
    """Save a random-weight model of ``arch`` and a small BPE tokenizer with a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

    spec = dict(ARCHS[arch])
    family, tie = spec.pop("family"), spec.pop("tie")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator([" ".join(WORDS)] * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok.save_pretrained(folder)
    cls = LlamaConfig if family == "llama" else Qwen2Config
    cfg = cls(
        **spec,
        max_position_embeddings=8192,
        tie_word_embeddings=tie,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def extract_batch_size(
    free_bytes: float,
    tokens: int,
    d_model: int,
    d_ff: int,
    n_heads: int,
    layers_kept: int,
    bytes_per: int,
    cap: int = 256,
) -> int:
    """The documented batch rule (module docstring)."""
    per_seq = tokens * (4 * d_model + 3 * d_ff) * bytes_per + 2 * n_heads * tokens**2 * bytes_per
    per_seq += layers_kept * tokens * d_model * bytes_per
    return int(max(1, min(cap, 0.5 * free_bytes // per_seq)))


def free_memory(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return float(torch.cuda.mem_get_info()[0])
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        return 4e9


def random_texts(n: int, words: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n)]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from emolib.config import default_layer
    from emolib.corpus import generate_batch
    from emolib.extract import extract, tokenize
    from emolib.generate import Sampling
    from emolib.models import load_model

    info = common.machine()
    spec = ARCHS[a.arch]
    folder = build_model_dir(a.arch, Path(tempfile.mkdtemp(prefix=f"emolib-{a.arch}-")))
    m = load_model(str(folder), device=a.device, dtype=a.dtype)
    if next(m.hf_model.parameters()).device.type != a.device.split(":")[0]:
        # TransformerLens 4.x leaves a pre-loaded model's weights where they are; the bridge shares them
        print(
            f"note: load_model left the weights on {next(m.hf_model.parameters()).device}; moving to {a.device}"
        )
        m.hf_model.to(a.device)
    params = common.matrix_params(m.hf_model)
    n_layers, d, heads = m.info.n_layers, m.info.d_model, m.info.n_heads
    bpe = 2 if a.dtype in ("bfloat16", "float16") else 4
    pk = peak.measure_peak(
        d,
        spec["intermediate_size"],
        tokens=a.peak_tokens,
        device=a.device,
        seconds=a.peak_seconds,
        square=a.peak_tokens,
    )
    peak_gflops = pk["peak_gflops"]["bfloat16" if bpe == 2 else "float32"]
    sheet = datasheet_peak(info.get("gpu", "")) if a.device.startswith("cuda") else None
    rows = []

    def row(name: str, tokens: int, work: float, secs: float, **extra: Any) -> None:
        g = work / secs / 1e9
        rows.append(
            {
                "method": name,
                "tokens": tokens,
                "seconds": secs,
                "tok_per_s": tokens / secs,
                "gflops": g,
                "mfu_measured": g / peak_gflops,
                "mfu_datasheet": g / (sheet * 1e3) if sheet else None,
                "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9
                if a.device.startswith("cuda")
                else None,
                **extra,
            }
        )

    # --- extraction: one layer (2/3 depth) and every layer ---
    texts = random_texts(a.n_texts, a.seq)
    ids = [x[: a.seq] for x in tokenize(m.tokenizer, texts)[0]]
    tokens = sum(len(x) for x in ids)
    L = default_layer(n_layers)
    for name, kept in (("extract_one", [L]), ("extract_all", list(range(n_layers)))):
        bs = a.extract_batch or extract_batch_size(
            free_memory(a.device), a.seq, d, spec["intermediate_size"], heads, len(kept), bpe
        )
        extract(
            m, texts[:bs], kept, batch_size=bs, use_cache=False, progress=False, max_tokens=a.seq
        )  # warm-up
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        _sync(a.device)
        t0 = time.perf_counter()
        extract(m, texts, kept, batch_size=bs, use_cache=False, progress=False, max_tokens=a.seq)
        _sync(a.device)
        used = sum(params["per_layer"][: max(kept) + 1])
        row(
            name,
            tokens,
            common.flop_eq(used, tokens),
            time.perf_counter() - t0,
            batch=bs,
            layers=f"{kept[0]}-{kept[-1]}" if len(kept) > 1 else str(L),
        )

    # --- the bare model forward (SDPA, no hooks, no pooling): the ceiling for extraction ---
    hf = m.hf_model
    old = hf.config._attn_implementation
    hf.set_attn_implementation("sdpa")
    bs = a.extract_batch or 32
    batch = torch.tensor([x + [0] * (a.seq - len(x)) for x in ids[:bs]], device=a.device)
    with torch.no_grad():
        hf.model(batch)
        _sync(a.device)
        t0 = time.perf_counter()
        reps = max(1, len(ids) // bs)
        for _ in range(reps):
            hf.model(batch)
        _sync(a.device)
    n_tok = reps * batch.numel()
    row(
        "bare_forward_all",
        n_tok,
        common.flop_eq(sum(params["per_layer"]), n_tok),
        time.perf_counter() - t0,
        batch=bs,
        layers=f"0-{n_layers - 1}",
    )
    hf.set_attn_implementation(old)

    # --- generation through the corpus's sampler ---
    prompts = [
        m.tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in random_texts(max(a.gen_batches), a.prompt_words, seed=1)
    ]
    for b in a.gen_batches:
        s = Sampling(max_new_tokens=a.max_new_tokens, batch_size=b)
        generate_batch(hf, m.tokenizer, prompts[:2], Sampling(max_new_tokens=4, batch_size=2), seed=0)
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        hf.set_attn_implementation("sdpa")
        _sync(a.device)
        t0 = time.perf_counter()
        outs = generate_batch(hf, m.tokenizer, prompts[:b], s, seed=0)
        _sync(a.device)
        secs = time.perf_counter() - t0
        hf.set_attn_implementation(old)
        new = sum(n for _, n, _ in outs)
        ptoks = sum(len(x) for x in tokenize(m.tokenizer, prompts[:b])[0])
        work = common.flop_eq(sum(params["per_layer"]), ptoks + new) + common.flop_eq(params["head"], new)
        row(f"sample_batch_b{b}", new, work, secs, batch=b)
    return {
        "machine": info,
        "arch": a.arch,
        "config": spec,
        "device": a.device,
        "dtype": a.dtype,
        "params_total": sum(p.numel() for p in hf.parameters()),
        "peak": pk,
        "datasheet_tflops": sheet,
        "rows": rows,
        "seq": a.seq,
        "max_new_tokens": a.max_new_tokens,
    }


def report(res: dict[str, Any]) -> str:
    mi = res["machine"]
    dev = mi.get("gpu", mi["cpu"]) if res["device"].startswith("cuda") else mi["cpu"]
    key = "bfloat16" if res["dtype"] in ("bfloat16", "float16") else "float32"
    sheet = res["datasheet_tflops"]
    out = [
        f"### {mi['date']} · {dev} · {res['arch']} (random weights, {res['params_total'] / 1e9:.2f} B) · "
        f"{res['dtype']} · gpu.py",
        "",
        f"torch {mi['torch']}. Measured {key} GEMM peak: {res['peak']['peak_gflops'][key] / 1e3:.4g} TFLOP/s"
        + (
            f"; datasheet dense bf16: {sheet:.0f} TFLOP/s."
            if sheet
            else "; no datasheet figure for this device."
        ),
        f"Texts of {res['seq']} tokens; generation up to {res['max_new_tokens']} new tokens (random weights rarely "
        "stop early, so every row runs to the cap).",
        "",
        "| method | batch | layers | tokens | tok/s | TFLOP/s | MFU (measured peak) | MFU (datasheet) | peak GPU GB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        ds = f"{100 * r['mfu_datasheet']:.1f}%" if r["mfu_datasheet"] is not None else "n/a"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "n/a"
        out.append(
            f"| {r['method']} | {r.get('batch', '')} | {r.get('layers', 'all')} | {r['tokens']} | "
            f"{r['tok_per_s']:.0f} | {r['gflops'] / 1e3:.3g} | {100 * r['mfu_measured']:.1f}% | {ds} | {mem} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="qwen2.5-1.5b", choices=sorted(ARCHS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--n-texts", type=int, default=256)
    ap.add_argument("--seq", type=int, default=512, help="tokens per text (texts are cut to this)")
    ap.add_argument("--extract-batch", type=int, default=0, help="0: the memory rule")
    ap.add_argument("--gen-batches", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256])
    ap.add_argument("--prompt-words", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--peak-tokens", type=int, default=8192, help="side of the square GEMM for the peak")
    ap.add_argument("--peak-seconds", type=float, default=1.0)
    ap.add_argument("--results", default=None, help="Markdown file to update (e.g. benchmarks/RESULTS.md)")
    a = ap.parse_args(argv)
    res = bench(a)
    block = report(res)
    print(block)
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, default=str)[:4000])
    if a.results:
        from run_all import write_results

        write_results(Path(a.results), block)
    return res


if __name__ == "__main__":
    main()
