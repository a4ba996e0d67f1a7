"""Validation of emotion vectors: held-out classification with a shuffled-label null, logit lens, and
read-outs on prompts (implicit emotions, numeric intensity), each with its statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .geometry import grand_mean
from .vectors import compute_vectors

# --- held-out classification ---------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    ranks: np.ndarray  # [n_test] rank of the true emotion among all (0 = top)
    preds: np.ndarray  # [n_test] index of the top-scoring emotion
    truth: np.ndarray  # [n_test]

    @property
    def top1(self) -> float:
        return float(np.mean(self.ranks == 0))

    @property
    def top5(self) -> float:
        return float(np.mean(self.ranks < 5))


def heldout(
    acts: np.ndarray,
    labels: np.ndarray,
    test: np.ndarray,
    n_emotions: int,
    neutral: np.ndarray | None = None,
    denoise_variance: float = 0.5,
    train_labels: np.ndarray | None = None,
) -> HeldOut:
    """Fit vectors on the training stories (``~test``), rank every emotion for each test story by the
    cosine between the story's activation (minus the training grand mean) and each vector.

    ``train_labels`` replaces the training stories' labels (used for the shuffled-label null)."""
    acts = np.asarray(acts, dtype=np.float64)
    labels = np.asarray(labels)
    test = np.asarray(test, dtype=bool)
    tr_lab = labels[~test] if train_labels is None else np.asarray(train_labels)
    V, _ = compute_vectors(acts[~test], tr_lab, n_emotions, neutral, denoise_variance)
    center = grand_mean(acts[~test], tr_lab, n_emotions)
    A = torch.as_tensor(acts[test] - center, dtype=torch.float32)
    U = V / V.norm(dim=1, keepdim=True).clamp_min(1e-12)
    S = (A @ U.T).numpy()  # ranking by projection on unit vectors == ranking by cosine, per story
    truth = labels[test]
    true_score = S[np.arange(len(truth)), truth]
    ranks = (S > true_score[:, None]).sum(1)
    return HeldOut(ranks=ranks, preds=S.argmax(1), truth=truth)


def shuffled_null(
    acts: np.ndarray,
    labels: np.ndarray,
    test: np.ndarray,
    n_emotions: int,
    neutral: np.ndarray | None = None,
    denoise_variance: float = 0.5,
    n_perm: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Top-1 and top-5 accuracy [n_perm, 2] when the training labels are shuffled."""
    rng = np.random.default_rng(seed)
    tr = np.asarray(labels)[~np.asarray(test, dtype=bool)]
    out = []
    for _ in range(n_perm):
        h = heldout(acts, labels, test, n_emotions, neutral, denoise_variance, train_labels=rng.permutation(tr))
        out.append((h.top1, h.top5))
    return np.array(out)


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("No values to bootstrap")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def confusion(h: HeldOut, n_emotions: int) -> np.ndarray:
    """Row-normalised confusion matrix [true, predicted]."""
    M = np.zeros((n_emotions, n_emotions))
    np.add.at(M, (h.truth, h.preds), 1)
    return M / np.maximum(M.sum(1, keepdims=True), 1)


# --- logit lens ----------------------------------------------------------------------------------


@torch.no_grad()
def lens_logits(model: Any, vectors: torch.Tensor) -> torch.Tensor:
    """The logit lens of each vector [k, d] -> [k, vocab]: the final norm then the unembedding applied to
    the vector alone, centred per row (only the ranking of tokens matters)."""
    hf = model.hf_model
    norm = hf.get_decoder().norm if hasattr(hf, "get_decoder") else hf.model.norm
    W = hf.get_output_embeddings().weight  # [vocab, d]
    V = vectors.to(W.dtype).to(W.device)
    logits = norm(V[:, None, :])[:, 0, :] @ W.T
    return (logits - logits.mean(1, keepdim=True)).float().cpu()


def logit_lens(model: Any, vectors: torch.Tensor, names: Sequence[str], k: int = 8) -> Any:
    """Tokens each vector promotes and suppresses (the paper's logit lens), as a DataFrame by emotion."""
    import pandas as pd

    logits = lens_logits(model, vectors)
    tok = model.tokenizer
    rows = {}
    for name, row in zip(names, logits):
        up = torch.topk(row, k).indices.tolist()
        down = torch.topk(-row, k).indices.tolist()
        rows[name] = {
            "promoted": ", ".join(repr(tok.decode([i]).strip()) for i in up),
            "suppressed": ", ".join(repr(tok.decode([i]).strip()) for i in down),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def own_word_rank(model: Any, vectors: torch.Tensor, names: Sequence[str], n_perm: int = 2000,
                  seed: int = 0) -> dict[str, float]:
    """Does each vector's logit lens promote its own emotion word? For every emotion, the percentile rank
    (0 = top of the vocabulary) of the first token of " <word>" in its own vector's logit lens; the median
    over emotions is compared with a null that pairs vectors with other emotions' words."""
    logits = lens_logits(model, vectors)
    ids = torch.tensor([model.tokenizer(" " + n, add_special_tokens=False).input_ids[0] for n in names])
    # pct[i, j]: share of the vocabulary that vector i's lens ranks above word j's token
    srt = logits.sort(dim=1).values  # ascending, [k, vocab]
    vals = logits[:, ids].contiguous()  # [k, k]
    n_vocab = logits.shape[1]
    pct = ((n_vocab - torch.searchsorted(srt, vals, right=True)).double() / n_vocab).numpy()
    obs = float(np.median(np.diag(pct)))
    rng = np.random.default_rng(seed)
    k = len(names)
    null = np.array([np.median(pct[np.arange(k), rng.permutation(k)]) for _ in range(n_perm)])
    return {
        "median_percentile": obs,
        "null_median_percentile": float(np.mean(null)),
        "p": float((1 + np.sum(null <= obs)) / (1 + n_perm)),
        "top1pct_rate": float(np.mean(np.diag(pct) < 0.01)),
    }


# --- prompts -------------------------------------------------------------------------------------


def as_user_turn(tokenizer: Any, message: str) -> str:
    """A user message followed by the start of the assistant's turn: the chat template when the model has
    one, else our plain ``Human: ...\\n\\nAssistant:`` transcript."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Human: {message}\n\nAssistant:"


def spearman_with_null(levels: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_perm: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Spearman rho between level rank and score, pooled over groups (each template ranked within itself),
    and a two-sided permutation p-value shuffling levels within each group."""
    from scipy.stats import rankdata, spearmanr

    levels, scores, groups = map(np.asarray, (levels, scores, groups))
    if len(levels) < 3:
        raise ValueError("Need at least three points")

    def within_rank(x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for g in np.unique(groups):
            m = groups == g
            out[m] = rankdata(x[m]) / m.sum()
        return out

    s = within_rank(scores)
    rho = float(spearmanr(within_rank(levels), s).statistic)
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_perm):
        perm = levels.copy()
        for g in np.unique(groups):
            m = np.where(groups == g)[0]
            perm[m] = rng.permutation(levels[m])
        null.append(spearmanr(within_rank(perm), s).statistic)
    p = (1 + np.sum(np.abs(null) >= abs(rho))) / (1 + n_perm)
    return rho, float(p)


def layer_sweep(ca: Any, fold: int = 0, denoise_variance: float = 0.5, n_null: int = 5, seed: int = 0,
                progress: bool = True) -> Any:
    """Held-out top-1/top-5 accuracy per layer (test = stories whose topic index % 5 == fold), with the
    mean of ``n_null`` shuffled-label runs. Returns a DataFrame indexed by layer."""
    import pandas as pd
    from tqdm.auto import tqdm

    test = (ca.stories["topic_index"].to_numpy() % 5) == fold
    if test.all() or not test.any():
        raise ValueError(f"Fold {fold} leaves no training or no test story")
    rows = []
    for L in tqdm(ca.layers, desc="layers", disable=not progress):
        h = heldout(ca.acts[L], ca.labels, test, len(ca.emotions), ca.neutral[L], denoise_variance)
        null = shuffled_null(ca.acts[L], ca.labels, test, len(ca.emotions), ca.neutral[L], denoise_variance,
                             n_perm=n_null, seed=seed + L)
        rows.append({"layer": L, "top1": h.top1, "top5": h.top5, "null_top1": null[:, 0].mean(),
                     "null_top5": null[:, 1].mean()})
    return pd.DataFrame(rows).set_index("layer")


def choose_layer(sweep: Any, n_layers: int) -> int:
    """Best held-out top-1 layer; ties broken by top-5, then by closeness to two-thirds depth."""
    target = 2 * n_layers / 3
    key = sweep.assign(dist=[-abs(L - target) for L in sweep.index])
    return int(key.sort_values(["top1", "top5", "dist"], ascending=False).index[0])


def prompt_activations(model: Any, messages: Sequence[str], layer: int, progress: bool = False) -> np.ndarray:
    """Activation [n, d] at the last prompt token, where the assistant's answer begins."""
    from .extract import extract

    texts = [as_user_turn(model.tokenizer, m) for m in messages]
    acts = extract(model, texts, [layer], pooling="last", progress=progress)
    return acts[layer].double().numpy()


def prompt_scores(model: Any, vectors: Any, messages: Sequence[str], baseline: Sequence[str]) -> Any:
    """Cosine scores [n_messages, n_emotions] at the assistant's first position, after subtracting the mean
    activation of ``baseline`` (neutral) messages at the same position."""
    import pandas as pd

    A = prompt_activations(model, messages, vectors.layer)
    B = prompt_activations(model, baseline, vectors.layer).mean(0)
    S = vectors.score(A, "cosine", center=B).numpy()
    return pd.DataFrame(S, index=list(messages), columns=list(vectors.emotions))


def expected_rank_test(scores: Any, expected: Sequence[str], n_perm: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean rank (0 = top) of each prompt's expected emotion, against chance and a null that shuffles
    which expected emotion goes with which prompt."""
    S = scores.to_numpy()
    cols = list(scores.columns)
    idx = np.array([cols.index(e) for e in expected])

    def mean_rank(ix: np.ndarray) -> float:
        true = S[np.arange(len(ix)), ix]
        return float((S > true[:, None]).sum(1).mean())

    obs = mean_rank(idx)
    rng = np.random.default_rng(seed)
    null = np.array([mean_rank(rng.permutation(idx)) for _ in range(n_perm)])
    ranks = (S > S[np.arange(len(idx)), idx][:, None]).sum(1)
    return {
        "mean_rank": obs,
        "chance_mean_rank": (S.shape[1] - 1) / 2,
        "null_mean_rank": float(null.mean()),
        "p": float((1 + np.sum(null <= obs)) / (1 + n_perm)),
        "top5_rate": float(np.mean(ranks < 5)),
    }
