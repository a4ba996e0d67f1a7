"""Benchmark: emolib extraction vs a plain one-text-at-a-time transformers loop, same texts, one run.

Prints tokens/s of each, their ratio and each one's peak resident memory (each method runs in its own
child process so that peaks do not mix). Also times corpus generation batched vs one prompt at a time.

    python benchmarks/extract.py [--model smollm2-135m-instruct] [--n-texts 64] [--layer 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _texts(n: int) -> list[str]:
    from emolib.corpus import corpus_dir_for, read_jsonl

    recs = [r for r in read_jsonl(corpus_dir_for("smollm2-135m-instruct") / "corpus.jsonl") if r["kind"] == "story"]
    texts = [r["text"] for r in recs[:n]]
    if len(texts) < n:  # no corpus yet: varied synthetic paragraphs
        base = "She walked along the river as the light faded and thought about the letter she had not sent. "
        texts += [base * (2 + i % 4) for i in range(n - len(texts))]
    return texts


def child(method: str, model_name: str, n: int, layer: int) -> dict:
    import torch

    from emolib.extract import extract
    from emolib.models import load_model

    torch.manual_seed(0)
    m = load_model(model_name)
    texts = _texts(n)
    n_tok = sum(len(m.tokenizer(t).input_ids) for t in texts)
    t0 = time.perf_counter()
    if method == "emolib":
        acts = extract(m, texts, [layer], batch_size=16, use_cache=False, progress=False)
        out = acts[layer]
    elif method == "plain":
        rows = []
        with torch.no_grad():
            for t in texts:
                ids = m.tokenizer(t, return_tensors="pt").input_ids
                hs = m.hf_model(ids, output_hidden_states=True).hidden_states[layer + 1]
                rows.append(hs[0, 1:].mean(0))
        out = torch.stack(rows)
    elif method in ("gen_batched", "gen_single"):
        from emolib.corpus import Sampling, build_jobs, generate_batch, render_prompt
        from emolib.stimuli import load_emotions, load_topics

        jobs = [j for j in build_jobs(load_emotions(), load_topics(), 1, 0)][: n // 4]
        prompts = [render_prompt(j, m.tokenizer) for j in jobs]
        s = Sampling(max_new_tokens=64, batch_size=len(prompts))
        t0 = time.perf_counter()
        if method == "gen_batched":
            res = generate_batch(m.hf_model, m.tokenizer, prompts, s, seed=0)
        else:
            res = [generate_batch(m.hf_model, m.tokenizer, [p], s, seed=i)[0] for i, p in enumerate(prompts)]
        n_tok = sum(r[1] for r in res)
        out = None
    else:
        raise ValueError(method)
    secs = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = float(out.abs().sum()) if out is not None else None
    return {"method": method, "tokens": n_tok, "seconds": secs, "tok_per_s": n_tok / secs, "peak_rss_mb": peak_mb,
            "checksum": digest}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n-texts", type=int, default=64)
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.model, a.n_texts, a.layer)))
        return
    res = {}
    for method in ("emolib", "plain", "gen_batched", "gen_single"):
        cmd = [sys.executable, __file__, "--child", method, "--model", a.model, "--n-texts", str(a.n_texts),
               "--layer", str(a.layer)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        res[method] = json.loads(out)
        r = res[method]
        print(f"{method:12s} {r['tokens']:7d} tokens  {r['seconds']:7.2f} s  {r['tok_per_s']:8.1f} tok/s  "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB")
    e, p = res["emolib"], res["plain"]
    rel = abs(e["checksum"] - p["checksum"]) / abs(p["checksum"])
    print(f"extraction speed-up emolib / plain loop: {e['tok_per_s'] / p['tok_per_s']:.2f}x "
          f"(same activations: relative checksum difference {rel:.1e})")
    g, s = res["gen_batched"], res["gen_single"]
    print(f"generation speed-up batched / one prompt at a time: {g['tok_per_s'] / s['tok_per_s']:.2f}x")


if __name__ == "__main__":
    main()
