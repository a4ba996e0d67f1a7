"""Chapter 01's read-outs beyond recognition: the corpus in numbers, saving the vectors of every layer,
the logit lens, and prompts that imply an emotion or scale its intensity. Each returns a typed result
whose ``metrics()`` are the flat keys recorded in ``metrics.json`` (cross-validated recognition lives in
:mod:`emolib.recognition`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .stats import PValue, perm_p

# --- the corpus and the saved vectors ------------------------------------------------------------

QUALITY_KEYS = (
    "n_stories",
    "n_neutral",
    "n_degenerate",
    "stories_per_emotion_min",
    "cutoff_share",
    "leak_rate",
    "other_emotion_word_rate",
    "neutral_emotion_word_rate",
    "n_neutral_clean",
)


@dataclass(frozen=True)
class CorpusReport:
    quality: dict[str, Any]  # the QUALITY_KEYS of Corpus.quality()
    median_story_tokens: float
    kept_share: float  # share of a median story left after the token offset
    sha256: str

    def metrics(self) -> dict[str, Any]:
        return {
            **self.quality,
            "median_story_tokens": self.median_story_tokens,
            "kept_share": self.kept_share,
            "corpus_sha256": self.sha256[:16],
        }


def corpus_for(cfg: Any, folder: str | Path = "", regenerate: bool | str = "auto", loaded: Any = None) -> Any:
    """The model's corpus (``folder``, default ``data/corpus/<slug>``), generated first when ``regenerate``
    is True, or "auto" and there is none yet (:func:`emolib.corpus.run_corpus`)."""
    from .corpus import corpus_dir_for, corpus_file, load_corpus, run_corpus
    from .stimuli import load_emotions

    if regenerate not in (True, False, "auto"):
        raise ValueError(f"regenerate must be True, False or 'auto', got {regenerate!r}")
    path = Path(folder) if folder else corpus_dir_for(cfg.model)
    if regenerate is True or (regenerate == "auto" and not corpus_file(path).exists()):
        run_corpus(cfg.model, out_dir=path, loaded=loaded)
    return load_corpus(path, load_emotions())


def corpus_report(corpus: Any, tokenizer: Any, token_offset: int) -> CorpusReport:
    """Corpus quality (:meth:`emolib.corpus.Corpus.quality`) and how much of a median story the offset keeps."""
    q = corpus.quality()
    lengths = [len(ids) for ids in tokenizer(list(corpus.usable()["text"])).input_ids]
    med = float(np.median(lengths)) if lengths else float("nan")
    return CorpusReport(
        {k: q[k] for k in QUALITY_KEYS}, med, float(max(med - token_offset, 0) / med), corpus.sha256
    )


def save_vectors(ca: Any, cfg: Any, folder: str | Path, *, profile: Any = None) -> dict[int, Any]:
    """Fit (:func:`emolib.vectors.vectors_for_layer`) and save the vectors of every layer of ``ca`` with
    ``cfg.recipe()``; the sidecars record the corpus hash, offset, masking, denoising and weights hash.
    ``profile`` (:func:`profile_activations`), when it is not ``ca``: its vectors go to the sibling folder
    ``vectors_profile`` (chapter 02 reads its layer profile there). Returns ``ca``'s vectors."""
    from .vectors import vectors_for_layer

    out = {L: vectors_for_layer(ca, L, cfg.recipe()) for L in ca.layers}
    for v in out.values():
        v.save(folder)
    if profile is not None and profile is not ca:
        for L in profile.layers:
            vectors_for_layer(profile, L, cfg.recipe()).save(Path(folder).parent / "vectors_profile")
    return out


def profile_activations(model: Any, corpus: Any, cfg: Any, ca: Any, *, progress: bool = False) -> Any:
    """The activations behind the layer profile: ``ca`` itself when it holds every swept layer, else the
    stories of the first ``cfg.profile_rounds`` rounds at ``cfg.sweep_layers`` (a corpus too large to read at
    every layer; see :class:`emolib.config.VectorsConfig`)."""
    from .activations import from_config

    rounds = cfg.profile_subset()
    if rounds is None:
        return ca
    layers = cfg.sweep_layers(model.info.n_layers)
    return from_config(model, corpus, cfg, layers, progress=progress, rounds=rounds)


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


def readable_token(text: str, min_letters: float = 0.75, word_start: bool = True) -> bool:
    """A whole-looking word: at least two characters, mostly letters (drops byte fragments, digits,
    punctuation) and, with ``word_start``, starting a word (a leading space), which drops word pieces."""
    t = text.strip()
    if word_start and not text.startswith(" "):
        return False
    return len(t) >= 2 and sum(c.isalpha() for c in t) / len(t) >= min_letters and t.isprintable()


def _first_token(tokenizer: Any, word: str) -> int:
    return int(tokenizer(" " + word, add_special_tokens=False).input_ids[0])


def logit_lens(model: Any, vectors: torch.Tensor, names: Sequence[str], k: int = 6, scan: int = 400) -> Any:
    """Readable tokens each vector promotes and suppresses most (byte fragments and non-words skipped), and
    the rank (1 = top of the vocabulary) of the vector's own emotion word (first token of " <word>")."""
    import pandas as pd

    logits = lens_logits(model, vectors)
    tok = model.tokenizer

    def words(ids: list[int]) -> str:
        out = [tok.decode([i]).strip() for i in ids if readable_token(tok.decode([i]))]
        return ", ".join(out[:k])

    rows = {}
    for name, row in zip(names, logits):
        own = _first_token(tok, name)
        rows[name] = {
            "promoted": words(torch.topk(row, scan).indices.tolist()),
            "suppressed": words(torch.topk(-row, scan).indices.tolist()),
            "own word's rank": int((row > row[own]).sum()) + 1,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass(frozen=True)
class OwnWord:
    """Percentile rank (0 = top) of each vector's own word in its logit lens, against vectors paired with
    other emotions' words."""

    percentiles: np.ndarray  # [k]
    null_medians: np.ndarray  # [n_perm]
    p: PValue

    @property
    def median(self) -> float:
        return float(np.median(self.percentiles))

    def metrics(self) -> dict[str, Any]:
        return {
            "lens_own_word_percentile": self.median,
            "lens_own_word_null_percentile": float(np.mean(self.null_medians)),
            "lens_own_word_p": float(self.p),
            "lens_own_word_p_text": self.p.text(),
            "lens_own_word_top1pct": float(np.mean(self.percentiles < 0.01)),
        }


def own_word_rank(
    model: Any, vectors: torch.Tensor, names: Sequence[str], n_perm: int = 1000, seed: int = 0
) -> OwnWord:
    """Does each vector's logit lens promote its own emotion word? Median percentile over emotions, tested
    (lower tail) against a null that pairs each vector with another emotion's word."""
    logits = lens_logits(model, vectors)
    ids = torch.tensor([_first_token(model.tokenizer, n) for n in names])
    srt = logits.sort(dim=1).values  # ascending, [k, vocab]
    vals = logits[:, ids].contiguous()  # [k, k]: vector i's logit for word j
    n_vocab = logits.shape[1]
    pct = ((n_vocab - torch.searchsorted(srt, vals, right=True)).double() / n_vocab).numpy()
    rng = np.random.default_rng(seed)
    k = len(names)
    null = np.array([np.median(pct[np.arange(k), rng.permutation(k)]) for _ in range(n_perm)])
    diag = np.diag(pct).copy()
    return OwnWord(diag, null, perm_p(float(np.median(diag)), null, "less"))


# --- prompts -------------------------------------------------------------------------------------


def prompt_activations(model: Any, messages: Sequence[str], layer: int, progress: bool = False) -> np.ndarray:
    """Activation [n, d] at the last prompt token, where the assistant's answer begins (one chat formatter:
    :func:`emolib.chat.user_turn`)."""
    from .chat import user_turn
    from .extract import extract

    texts = [user_turn(model.tokenizer, m) for m in messages]
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


def _mean_rank(Z: np.ndarray, idx: np.ndarray) -> float:
    true = Z[np.arange(len(idx)), idx]
    return float((Z > true[:, None]).sum(1).mean())


@dataclass(frozen=True)
class ImplicitResult:
    """Where each implicit prompt's expected emotion ranks, on raw scores and on scores z-scored per
    emotion across prompts (what the prompt raises *relative to the other prompts*)."""

    scores: Any  # DataFrame [prompt, emotion] raw cosine scores
    expected: tuple[str, ...]
    ranks_raw: np.ndarray
    ranks_z: np.ndarray
    null_z: np.ndarray  # [n_perm] mean z-rank with expected emotions shuffled across prompts
    p: PValue

    def table(self, n_top: int = 3) -> Any:
        import pandas as pd

        S = self.scores
        Z = (S - S.mean(axis=0)) / S.std(axis=0, ddof=0).replace(0, 1)
        top = Z.apply(lambda r: ", ".join(r.sort_values(ascending=False).index[:n_top]), axis=1)
        return pd.DataFrame(
            {"top 3 (z-scored)": top.values, "expected": self.expected, "rank of expected": self.ranks_z},
            index=[t if len(t) <= 60 else t[:60] + "…" for t in S.index],
        )

    def metrics(self) -> dict[str, Any]:
        K = self.scores.shape[1]
        return {
            "implicit_expected_rank_z": float(self.ranks_z.mean()),
            "implicit_expected_rank_z_p": float(self.p),
            "implicit_expected_rank_z_p_text": self.p.text(),
            "implicit_expected_rank_z_null_mean": float(self.null_z.mean()),
            "implicit_top5_rate_z": float(np.mean(self.ranks_z < 5)),
            "implicit_mean_rank": float(self.ranks_raw.mean()),
            "implicit_chance_rank": (K - 1) / 2,
            "implicit_n": len(self.expected),
        }


def implicit_readout(
    model: Any, vectors: Any, prompts: Any, *, n_perm: int = 1000, seed: int = 0
) -> ImplicitResult:
    """Score :func:`emolib.prompt_sets.load_implicit` prompts (those whose expected emotion is among the
    vectors) and test the expected emotion's mean z-rank against prompts paired with each other's."""
    items = [p for p in prompts.prompts if p.expected in vectors.emotions]
    if len(items) < 3:
        raise ValueError("Need at least three implicit prompts whose expected emotion is among the vectors")
    S = prompt_scores(model, vectors, [p.text for p in items], list(prompts.neutral))
    expected = tuple(p.expected for p in items)
    idx = np.array([list(S.columns).index(e) for e in expected])
    raw = S.to_numpy()
    Z = (raw - raw.mean(0)) / np.where(raw.std(0) > 0, raw.std(0), 1.0)
    ranks = lambda M: (M > M[np.arange(len(idx)), idx][:, None]).sum(1)  # noqa: E731
    rng = np.random.default_rng(seed)
    null = np.array([_mean_rank(Z, rng.permutation(idx)) for _ in range(n_perm)])
    return ImplicitResult(S, expected, ranks(raw), ranks(Z), null, perm_p(_mean_rank(Z, idx), null, "less"))


def _within_rank(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    out = np.empty(len(x))
    for g in np.unique(groups):
        m = groups == g
        out[m] = rankdata(x[m]) / m.sum()
    return out


@dataclass(frozen=True)
class IntensityResult:
    """Scores of a few emotions as each template's quantity grows, with a pooled within-template Spearman
    rho per emotion and a two-sided p from shuffling levels within each template."""

    table: Any  # long DataFrame: template, level, quantity, emotion, score
    rho: dict[str, float]
    p: dict[str, PValue]

    def trend(self, emotion: str, alpha: float = 0.05) -> str:
        if float(self.p[emotion]) >= alpha:
            return "shows no reliable trend"
        return "rises with the quantity" if self.rho[emotion] > 0 else "falls with the quantity"

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.rho:
            out[f"intensity_rho_{e}"] = self.rho[e]
            out[f"intensity_rho_{e}_p"] = float(self.p[e])
            out[f"intensity_rho_{e}_p_text"] = self.p[e].text()
            out[f"intensity_trend_{e}"] = self.trend(e)
        return out


def intensity_readout(
    model: Any,
    vectors: Any,
    templates: Sequence[Any],
    neutral: Sequence[str],
    emotions: Sequence[str] = ("afraid", "calm"),
    *,
    n_perm: int = 1000,
    seed: int = 0,
) -> IntensityResult:
    """Score ``emotions`` on every filled :class:`emolib.prompt_sets.IntensityTemplate` (relative to the
    neutral requests), at the token where the answer begins."""
    import pandas as pd
    from scipy.stats import spearmanr

    emos = [e for e in emotions if e in vectors.emotions]
    if not emos:
        raise ValueError(f"None of {list(emotions)} is among the vectors")
    texts = [(t.name, k, v, t.fill(v)) for t in templates for k, v in enumerate(t.values)]
    S = prompt_scores(model, vectors.subset(emos), [x[3] for x in texts], neutral)
    wide = pd.DataFrame([{"template": n, "level": k, "quantity": v} for n, k, v, _ in texts])
    wide[emos] = S.to_numpy()
    groups, levels = wide["template"].to_numpy(), wide["level"].to_numpy()
    lev = _within_rank(levels, groups)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    perms = []
    for _ in range(n_perm):
        perm = lev.copy()
        for m in members:
            perm[m] = lev[rng.permutation(m)]
        perms.append(perm)
    rho, p = {}, {}
    for e in emos:
        s = _within_rank(wide[e].to_numpy(), groups)
        rho[e] = float(spearmanr(lev, s).statistic)
        null = np.array([spearmanr(q, s).statistic for q in perms])
        p[e] = perm_p(rho[e], null, "two-sided")
    long = wide.melt(
        id_vars=["template", "level", "quantity"], value_vars=emos, var_name="emotion", value_name="score"
    )
    return IntensityResult(long, rho, p)
