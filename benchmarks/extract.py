"""Extraction benchmark: emolib against the loop users write, like with like.

Four methods on the same texts and the same token ids (BOS added as :func:`emolib.chat.encode_with_offsets`
does), each returning the mean of positions 1.. per text:

- ``emolib_all``: :func:`emolib.extract.extract` of every layer (stops after the last block: no final norm,
  no LM head), batches of ``batch_size`` texts sorted by length;
- ``plain_all``: one text at a time through ``hf_model.model(ids, output_hidden_states=True)`` (the base
  model, so no LM head either);
- ``emolib_one``: emolib at one layer (default 2/3 depth: layer 20 of 30), stopping there;
- ``plain_one``: the same per-text loop stopped at that layer by a forward hook that raises.

``emolib_one`` also runs in bfloat16 (``--bf16``) on a time budget; its per-story means are compared with
fp32 (cosine) and, when every text finished, the 5-fold held-out top-1 on the labelled subset is computed for
both dtypes with the chapter's scorer (:func:`emolib.recognition.cv_recognition`).

Work is counted as in :mod:`common`: 2 x weights of the layers a token passes through, real tokens only.

    python benchmarks/extract.py [--model smollm2-135m-instruct] [--n-emotions 8] [--per-emotion 6]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import common

METHODS = ("emolib_all", "plain_all", "emolib_one", "plain_one")


def labelled_texts(n_emotions: int, per_emotion: int) -> list[dict[str, Any]]:
    """The first ``per_emotion`` usable stories of each of the first ``n_emotions`` emotions (committed
    corpus of the default model), with emotion index and topic; synthetic paragraphs if there is no corpus."""
    from emolib.constants import DEFAULT_MODEL
    from emolib.corpus import corpus_dir_for, degenerate_reason, read_jsonl

    recs = [
        r
        for r in read_jsonl(corpus_dir_for(DEFAULT_MODEL) / "corpus.jsonl")
        if r["kind"] == "story" and degenerate_reason(r["text"]) is None
    ]
    order = list(dict.fromkeys(r["emotion"] for r in recs))[:n_emotions]
    out = []
    for i, e in enumerate(order):
        mine = [r for r in recs if r["emotion"] == e][:per_emotion]
        out += [{"text": r["text"], "label": i, "topic": int(r["topic_index"])} for r in mine]
    if not out:  # no corpus: varied synthetic paragraphs (timing only)
        base = "She walked along the river as the light faded and thought about the letter she had not sent. "
        out = [
            {"text": base * (2 + k % 4), "label": k % 2, "topic": k} for k in range(n_emotions * per_emotion)
        ]
    return out


def _plain_means(m: Any, ids: list[list[int]], layer: int | None) -> Any:
    """The per-text loop; ``layer`` None: all layers via output_hidden_states, else stop after ``layer``."""
    import torch

    base = m.hf_model.model
    means = []

    class Stop(Exception):
        pass

    got: dict[str, Any] = {}

    def hook(_mod: Any, _inp: Any, out: Any) -> None:
        got["h"] = out[0] if isinstance(out, tuple) else out
        raise Stop

    def keep_last(_mod: Any, _inp: Any, out: Any) -> None:  # the last block's output before the final norm
        got["last"] = out[0] if isinstance(out, tuple) else out

    if layer is None:
        handle = base.layers[-1].register_forward_hook(keep_last)
    else:
        handle = base.layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            for x in ids:
                t = torch.tensor([x])
                if layer is None:
                    hs = list(base(t, output_hidden_states=True).hidden_states)  # embeddings + one per layer
                    hs[-1] = got["last"]  # transformers reports the last layer after the final norm
                    means.append(torch.stack([h[0, 1:].mean(0) for h in hs[1:]]))
                else:
                    try:
                        base(t)
                    except Stop:
                        pass
                    means.append(got["h"][0, 1:].float().mean(0, keepdim=True))
    finally:
        handle.remove()
    return torch.stack(means)  # [n_texts, n_layers kept, d]


def measure(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    import torch

    from emolib.config import default_layer
    from emolib.extract import MAX_TOKENS, extract, tokenize

    dtype = opts.get("dtype", "float32")
    m = common.load(opts["model"], dtype)
    n_layers = m.info.n_layers
    layer = opts.get("layer") if opts.get("layer") is not None else default_layer(n_layers)
    items = labelled_texts(opts["n_emotions"], opts["per_emotion"])
    texts = [it["text"] for it in items]
    ids = [x[:MAX_TOKENS] for x in tokenize(m.tokenizer, texts)[0]]
    budget = opts.get("budget_s")
    params = common.matrix_params(m.hf_model)
    kept = list(range(n_layers)) if method.endswith("_all") else [layer]
    used = sum(params["per_layer"][: max(kept) + 1])
    common.reset_peak_rss()
    t0 = time.perf_counter()
    done = len(texts)
    if method.startswith("emolib"):
        bs = opts.get("batch_size", 16)
        if budget:  # a slow path on a time budget: whole batches until the budget is spent
            parts, done = [], 0
            while done < len(texts) and time.perf_counter() - t0 < budget:
                chunk = texts[done : done + bs]
                a = extract(m, chunk, kept, batch_size=bs, use_cache=False, progress=False)
                parts.append(torch.stack([a[L] for L in kept], 1))
                done += len(chunk)
            means = torch.cat(parts)
        else:
            a = extract(m, texts, kept, batch_size=bs, use_cache=False, progress=False)
            means = torch.stack([a[L] for L in kept], 1)
    elif method == "plain_all":
        means = _plain_means(m, ids, None)
    elif method == "plain_one":
        means = _plain_means(m, ids, layer)
    else:
        raise ValueError(f"unknown method {method!r}")
    secs = time.perf_counter() - t0
    tokens = sum(len(x) for x in ids[:done])
    out = {
        "method": method,
        "dtype": dtype,
        "layers": f"0-{n_layers - 1}" if len(kept) > 1 else str(layer),
        "texts": done,
        "tokens": tokens,
        "seconds": secs,
        "tok_per_s": tokens / secs,
        "gflops": common.flop_eq(used, tokens) / secs / 1e9,
        "peak_rss_mb": common.peak_rss_mb(),
        "attn": getattr(m.hf_model.config, "_attn_implementation", None),
    }
    if opts.get("save"):
        li = kept.index(layer)
        torch.save({"means": means[:, li].float(), "layer": layer}, opts["save"])
    return out


def agreement(fp32_file: str | Path, other_file: str | Path) -> dict[str, float]:
    """Cosine between per-story means of two runs (on the texts both finished), and the largest relative
    difference of the means."""
    import torch

    a = torch.load(fp32_file)["means"].double()
    b = torch.load(other_file)["means"].double()
    n = min(len(a), len(b))
    cos = torch.nn.functional.cosine_similarity(a[:n], b[:n], dim=1)
    rel = ((a[:n] - b[:n]).norm(dim=1) / a[:n].norm(dim=1)).max()
    return {"n": n, "cos_min": float(cos.min()), "cos_median": float(cos.median()), "rel_max": float(rel)}


def heldout_top1(means_file: str | Path, items: list[dict[str, Any]]) -> float:
    """5-fold (topic mod 5) held-out top-1 of the labelled subset with the chapter's scorer."""
    import numpy as np
    import torch

    from emolib.config import topic_fold
    from emolib.recognition import cv_recognition

    X = torch.load(means_file)["means"].double().numpy()
    labels = np.array([it["label"] for it in items])
    topics = np.array([it["topic"] for it in items])
    r = cv_recognition("bench", X, labels, topic_fold(topics), topics, int(labels.max()) + 1, n_boot=10)
    return float(r.top1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n-emotions", type=int, default=8)
    ap.add_argument("--per-emotion", type=int, default=6)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--in-process", action="store_true")
    a = ap.parse_args()
    opts = {"model": a.model, "n_emotions": a.n_emotions, "per_emotion": a.per_emotion, "layer": a.layer}
    for method in METHODS:
        r = common.run(Path(__file__), measure, method, opts, not a.in_process)
        print(json.dumps(r))


if __name__ == "__main__":
    if not common.child_main(measure):
        main()
