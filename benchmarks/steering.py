"""Benchmark: the steering chapter's scoring paths, the steering overhead, and the chapter's wall time.

Prints
- option scoring of one blackmail variant under a batch of steering conditions, side by side: layers below
  the steering layer run once (``emolib.trunk``) on a plain transformers copy (the chapter's path) and on the
  bridge; the bridge's hooks with the shared prompt in the KV cache; prompt + option in full per option;
- steering overhead, hooks off vs on (strength 0.1 of the norm), for scoring (``steer.score_continuations``)
  and for greedy generation (``steer.generate``);
- with ``--notebook``, the wall time of ``notebooks/03_steering.ipynb`` through papermill (``--full`` for the
  default design instead of quick mode), in a temporary results folder.

    python benchmarks/steering.py [--model smollm2-135m-instruct] [--conditions 16] [--notebook] [--full]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Timings must compute every pass: with the result store on, a repeat (or any earlier run) reads the scores
# back in milliseconds and the table shows 0.00 s. The chapter timing (--notebook) then computes too.
os.environ["EMOLIB_STORE"] = "off"
ROOT = Path(__file__).resolve().parent.parent


def _best(fn, repeat: int = 2) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def scoring(model_name: str, n_conditions: int) -> None:
    import torch

    from emolib import behaviour as B
    from emolib.config import default_layer
    from emolib.models import load_model
    from emolib.scenarios import load_blackmail
    from emolib.stats import random_directions
    from emolib.steer import Steering, generate, score_continuations

    m = load_model(model_name)
    layer = default_layer(m.info.n_layers)
    item = B.blackmail_items(load_blackmail()[:1])[0]
    adds = torch.tensor(random_directions(m.info.d_model, n_conditions, 0, norm=5.0), dtype=torch.float32)
    n_tok = len(m.tokenizer(B._prompt_text(m, item)).input_ids)
    print(
        f"model {model_name}, layer {layer}, prompt {n_tok} tokens, {len(item.options)} options, "
        f"{n_conditions} conditions, torch threads {torch.get_num_threads()}"
    )
    plain = load_model(model_name, bridge=False)
    kw = dict(layer=layer, adds=adds, batch_size=16)
    t_plain = _best(lambda: B.option_logprobs(plain, [item], **kw))
    t_trunk = _best(lambda: B.option_logprobs(m, [item], **kw))
    t_kv = _best(lambda: B.option_logprobs(m, [item], shared_trunk=False, **kw))
    t_full = _best(lambda: B.option_logprobs(m, [item], use_kv_cache=False, **kw))
    rows = [
        ("shared trunk, plain transformers copy (chapter 03)", t_plain),
        ("shared trunk, bridge", t_trunk),
        ("bridge hooks, shared prompt + KV cache", t_kv),
        ("bridge hooks, prompt + option in full", t_full),
    ]
    for name, t in rows:
        print(f"scoring, {name:<50}: {t:7.2f} s ({t / n_conditions:.3f} s per condition, {t_full / t:.2f}x)")

    prompts = [B._prompt_text(m, item)] * 3
    conts = [item.options[n] for n in item.names]
    st = Steering(adds[0], (layer,), 0.1, 5.0)
    off = _best(lambda: score_continuations(m, prompts, conts))
    on = _best(lambda: score_continuations(m, prompts, conts, steering=st))
    print(
        f"steer.score_continuations, hooks off / on: {off:.2f} s / {on:.2f} s (overhead {100 * (on / off - 1):+.1f}%)"
    )
    short = ["<|im_start|>user\nTell me about the weather.<|im_end|>\n<|im_start|>assistant\n"] * 4
    off = _best(lambda: generate(m, short, max_new_tokens=32))
    on = _best(lambda: generate(m, short, max_new_tokens=32, steering=st))
    print(
        f"steer.generate (4 x 32 tokens), hooks off / on: {off:.2f} s / {on:.2f} s "
        f"(overhead {100 * (on / off - 1):+.1f}%)"
    )


def notebook(model_name: str, full: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "EMOLIB_RESULTS_DIR": os.environ.get("EMOLIB_RESULTS_DIR", str(ROOT / "results")),
        }
        out = Path(tmp) / "03_steering.ipynb"
        cmd = [
            sys.executable,
            "-m",
            "papermill",
            "--no-progress-bar",
            "-k",
            "python3",
            "--cwd",
            str(ROOT),
            str(ROOT / "notebooks" / "03_steering.ipynb"),
            str(out),
            "-p",
            "model",
            model_name,
            "-p",
            "quick",
            str(not full),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        print(
            f"notebooks/03_steering.ipynb ({'default design' if full else 'quick mode'}): "
            f"{time.perf_counter() - t0:.0f} s wall time"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--conditions", type=int, default=16)
    ap.add_argument("--notebook", action="store_true", help="also time the chapter through papermill")
    ap.add_argument("--full", action="store_true", help="time the default design rather than quick mode")
    a = ap.parse_args()
    scoring(a.model, a.conditions)
    if a.notebook:
        notebook(a.model, a.full)


if __name__ == "__main__":
    main()
