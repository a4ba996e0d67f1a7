"""Generation benchmark: the corpus's decode loop against ``transformers.generate`` and one prompt at a time.

Same corpus prompts (:func:`emolib.corpus.build_jobs` + :func:`emolib.corpus.render_prompt`), same sampling
(temperature 0.8, top-p 0.95, top-k 100), same ``max_new_tokens``, SDPA attention for every method:

- ``hf_generate``: ``hf_model.generate(do_sample=True, ...)`` over left-padded batches of ``batch`` prompts
  (the path the corpus used before ``emolib.generate``);
- ``sample_batch``: :func:`emolib.corpus.generate_batch` (:func:`emolib.generate.sample_batch`: buffered KV
  cache, finished rows dropped, top-k then top-p) over batches of ``batch`` prompts;
- ``single``: the same loop, one prompt at a time, on the first ``n_single`` prompts.

tokens/s counts generated tokens (up to and excluding the stop token). FLOP-equivalents (see :mod:`common`):
2 x block weights x (prompt + generated tokens) + 2 x LM-head weights x generated tokens.

    python benchmarks/generate.py [--model smollm2-135m-instruct] [--n-prompts 128] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import common

METHODS = ("hf_generate", "sample_batch", "single")


def corpus_prompts(tokenizer: Any, n: int) -> list[str]:
    from emolib.corpus import build_jobs, render_prompt
    from emolib.stimuli import load_emotions, load_topics

    emotions, topics = load_emotions(), load_topics()
    rounds = -(-n // len(emotions))
    jobs = build_jobs(emotions, topics, min(rounds, len(topics)), 0)[:n]
    return [render_prompt(j, tokenizer) for j in jobs]


def _hf_generate(m: Any, prompts: list[str], s: Any, seed: int) -> list[int]:
    """New tokens per prompt with transformers' generate (left padding, sampling)."""
    import torch

    from emolib.chat import encode

    tok = m.tokenizer
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    ids = [encode(tok, p) for p in prompts]
    width = max(len(x) for x in ids)
    inp = torch.full((len(ids), width), pad, dtype=torch.long)
    att = torch.zeros_like(inp)
    for j, x in enumerate(ids):
        inp[j, width - len(x) :] = torch.tensor(x)
        att[j, width - len(x) :] = 1
    torch.manual_seed(seed)
    with torch.no_grad():
        out = m.hf_model.generate(
            input_ids=inp,
            attention_mask=att,
            do_sample=True,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_new_tokens=s.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
        )
    counts = []
    for row in out[:, width:].tolist():
        counts.append(row.index(eos) if eos in row else len(row))
    return counts


def measure(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    from emolib.chat import encode
    from emolib.corpus import generate_batch
    from emolib.generate import Sampling

    # the corpus samples on the plain transformers model; "sample_batch_bridge" times the same loop through
    # the TransformerBridge's hookable attention (what the corpus used before), for the side-by-side ratio
    bridge = method == "sample_batch_bridge"
    m = common.load(opts["model"], opts.get("dtype", "float32"), bridge=bridge)
    prompts = corpus_prompts(m.tokenizer, opts["n_prompts"])
    batch = int(opts.get("batch", 64))
    if method == "single":
        prompts, batch = prompts[: opts.get("n_single", 8)], 1
    s = Sampling(max_new_tokens=opts["max_new_tokens"], batch_size=batch)
    params = common.matrix_params(m.hf_model)
    blocks = sum(params["per_layer"])
    common.reset_peak_rss()
    t0 = time.perf_counter()
    counts: list[int] = []
    for b, i in enumerate(range(0, len(prompts), batch)):
        chunk = prompts[i : i + batch]
        if method == "hf_generate":
            counts += _hf_generate(m, chunk, s, seed=b)
        elif method in ("sample_batch", "sample_batch_bridge", "single"):
            counts += [n for _, n, _ in generate_batch(m.hf_model, m.tokenizer, chunk, s, seed=b)]
        else:
            raise ValueError(f"unknown method {method!r}")
    secs = time.perf_counter() - t0
    new = sum(counts)
    prompt_tokens = sum(len(encode(m.tokenizer, p)) for p in prompts)
    work = common.flop_eq(blocks, prompt_tokens + new) + common.flop_eq(params["head"], new)
    return {
        "method": method if method == "single" else f"{method}_b{batch}",
        "dtype": opts.get("dtype", "float32"),
        "prompts": len(prompts),
        "batch": batch,
        "max_new_tokens": s.max_new_tokens,
        "tokens": new,
        "prompt_tokens": prompt_tokens,
        "seconds": secs,
        "tok_per_s": new / secs,
        "gflops": work / secs / 1e9,
        "peak_rss_mb": common.peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n-prompts", type=int, default=128)
    ap.add_argument("--n-single", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--in-process", action="store_true")
    a = ap.parse_args()
    base = {
        "model": a.model,
        "n_prompts": a.n_prompts,
        "n_single": a.n_single,
        "max_new_tokens": a.max_new_tokens,
    }
    plan = (
        ("hf_generate", 64, "float32"),
        ("sample_batch", 64, "float32"),
        ("sample_batch", 128, "float32"),
        ("sample_batch", 64, "bfloat16"),
        ("sample_batch", 128, "bfloat16"),
        ("sample_batch_bridge", 128, "float32"),
        ("single", 1, "float32"),
    )
    for method, batch, dtype in plan:
        opts = {**base, "batch": batch, "dtype": dtype}
        r = common.run(Path(__file__), measure, method, opts, not a.in_process)
        print(json.dumps(r))


if __name__ == "__main__":
    if not common.child_main(measure):
        main()
