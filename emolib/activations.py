"""From a corpus to activations: the mean residual stream of every usable story and neutral dialogue at
the requested layers (cached on disk by :func:`emolib.extract.extract`).

Stories are averaged from ``token_offset`` on (the paper's 50th token), leaving out the tokens of the story's
own emotion word when ``mask_leaks`` is on; neutral dialogues from their second token on. Stories with no
token left after the offset (within the extraction's ``max_tokens``) are dropped and counted.

**Stored chunks** (``chunked=True``): a corpus of crossed design (the default model's: 200 stories per emotion,
about 6.5 million tokens) takes hours to read on a CPU, so the per-story means can come from :mod:`emolib.store` in chunks:
stories grouped by round (story ``j`` of every emotion; :data:`ROUNDS_PER_CHUNK` rounds per chunk, so each
chunk covers every emotion alike) and neutral dialogues in blocks of :data:`NEUTRAL_PER_CHUNK`. Each chunk is
one store entry keyed by the model's weights, the chunk's texts, the layers and the mask (the whole corpus one
layer per entry, a layer profile on its first rounds every layer in one entry: :func:`layer_groups`), so a chunk computed
once (by the maintainers, committed under ``data/store/story_means``, or by this machine) is never computed
again, a corpus that grows keeps its finished chunks, and ``python -m emolib.activations --shard I/N`` lets
one process per core fill the chunks of one corpus. Chunks hold the means in float16 (relative rounding
below 2**-11, far under the story-to-story spread), or float32 if a value would not fit; the analyses read the
same rounded means whether a chunk was computed now or read, so the numbers do not depend on the cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import store
from .extract import EXTRACT_VERSION, MAX_TOKENS, TokenMask, extract, select_positions, tokenize

ROUNDS_PER_CHUNK = 3  # story rounds per stored chunk: 3 x 171 = 513 stories of the full emotion list
NEUTRAL_PER_CHUNK = 300  # neutral dialogues per stored chunk
FLOAT16_MAX = 60000.0  # chunks with a larger |value| are kept in float32 (float16 tops out at 65504)
_STORY_ID = re.compile(r"^story-(\d+)-(\d+)$")
_NEUTRAL_ID = re.compile(r"^neutral-(\d+)$")


@dataclass(frozen=True)
class CorpusActivations:
    """Mean activations of the usable stories and neutral dialogues of a corpus, per layer."""

    stories: Any  # DataFrame of the stories kept, in row order of ``acts``
    acts: dict[int, np.ndarray]  # layer -> [n_stories, d]
    neutral: dict[int, np.ndarray]  # layer -> [n_neutral, d]
    emotions: tuple[str, ...]
    n_short: int  # stories dropped because no token is left after the offset
    settings: dict[str, Any]

    @property
    def labels(self) -> np.ndarray:
        return self.stories["emotion_index"].to_numpy()

    @property
    def layers(self) -> list[int]:
        return sorted(self.acts)

    @property
    def folds(self) -> np.ndarray:
        """Cross-validation fold of each story (:func:`emolib.config.topic_fold`)."""
        from .config import topic_fold

        return topic_fold(self.stories["topic_index"].to_numpy())


def corpus_activations(
    model: Any,
    corpus: Any,
    layers: Sequence[int],
    *,
    token_offset: int = 50,
    mask_leaks: bool = True,
    neutral_offset: int = 1,
    emotions: Sequence[str] | None = None,
    max_per_emotion: int | None = None,
    max_neutral: int | None = None,
    batch_size: int = 16,
    max_tokens: int = MAX_TOKENS,
    progress: bool = True,
    chunked: bool = False,
    rounds: int | None = None,
) -> CorpusActivations:
    """Extract (cached) mean activations from ``token_offset`` on for every usable story, and from
    ``neutral_offset`` on for the neutral dialogues. ``emotions`` restricts to a subset (labels are then
    indices into that subset); ``mask_leaks`` leaves the emotion word's own tokens out of each mean.
    ``chunked``: read and write the means as stored chunks (see the module docstring). ``rounds``: only the
    stories of the first ``rounds`` rounds (``story-<emotion>-<round>`` ids; whole stored chunks when it is a
    multiple of :data:`ROUNDS_PER_CHUNK`), e.g. for a layer profile on part of a large corpus."""

    names = tuple(emotions) if emotions is not None else tuple(corpus.emotions)
    mask = TokenMask(start=token_offset)
    stories, exclude, n_short = _story_rows(
        model, corpus, names, mask, mask_leaks, max_per_emotion, max_tokens, rounds
    )
    neutral = corpus.usable_neutral()
    if max_neutral is not None:
        neutral = neutral.head(max_neutral)
    nmask = TokenMask(start=neutral_offset)
    common = dict(batch_size=batch_size, max_tokens=max_tokens, progress=progress)
    if chunked:
        means, nmeans = {}, {}
        for group in layer_groups(layers, rounds):
            means.update(_chunked_means(model, stories, group, mask, exclude, "story", **common))
            nmeans.update(_chunked_means(model, neutral, group, nmask, None, "neutral", **common))
    else:
        acts = extract(model, list(stories["text"]), list(layers), mask=mask, exclude=exclude, **common)
        nacts = extract(model, list(neutral["text"]), list(layers), mask=nmask, **common)
        means = {L: acts[L].double().numpy() for L in acts.layers}
        nmeans = {L: nacts[L].double().numpy() for L in nacts.layers}
    settings = {
        "token_offset": token_offset,
        "neutral_offset": neutral_offset,
        "mask_leaks": mask_leaks,
        "corpus_sha256": corpus.sha256,
        "n_neutral": int(len(neutral)),
        "model": model.info.name,
        "weights_hash": model.info.weights_hash,
        **({"chunked": True} if chunked else {}),  # the means were rounded to float16 (module docstring)
    }
    return CorpusActivations(stories, means, nmeans, names, n_short, settings)


def layer_groups(layers: Sequence[int], rounds: int | None) -> list[list[int]]:
    """The layers that share a stored chunk: one layer per chunk for the whole corpus (a chapter that needs
    one more layer computes only that layer, the others are read), every layer in one chunk for the first
    ``rounds`` rounds (the layer profile: one pass reads its many layers)."""
    return [[L] for L in layers] if rounds is None else [list(layers)]


def _story_rows(
    model: Any,
    corpus: Any,
    names: tuple[str, ...],
    mask: TokenMask,
    mask_leaks: bool,
    max_per_emotion: int | None,
    max_tokens: int,
    rounds: int | None = None,
) -> tuple[Any, list[tuple[str, ...]], int]:
    """The usable stories of ``names`` that keep a token after the mask (labelled by their index in
    ``names``), the words each one's mean leaves out, and how many were dropped as too short."""
    stories = corpus.usable()
    if rounds is not None:
        found = [_STORY_ID.match(str(i)) for i in stories["id"]] if "id" in stories else [None]
        if not all(found):
            raise ValueError("rounds needs story ids of the form story-<emotion>-<round> (corpus design 2)")
        stories = stories[[int(m.group(2)) < rounds for m in found]]
    stories = stories[stories["emotion"].isin(names)].copy()
    stories["emotion_index"] = stories["emotion"].map({e: i for i, e in enumerate(names)})
    if max_per_emotion is not None:
        stories = stories.groupby("emotion", sort=False).head(max_per_emotion)
    stories = stories.reset_index(drop=True)
    missing = sorted(set(names) - set(stories["emotion"]))
    if missing:
        raise ValueError(f"No usable story for emotion(s) {missing}")
    exclude = [(e,) if mask_leaks else () for e in stories["emotion"]]
    ids, offs = tokenize(model.tokenizer, list(stories["text"]))
    keep = [
        bool(select_positions(o, min(len(i), max_tokens), t, mask, ex, k))
        for k, (i, o, t, ex) in enumerate(zip(ids, offs, stories["text"], exclude))
    ]
    n_short = int(len(keep) - sum(keep))
    stories = stories[keep].reset_index(drop=True)
    exclude = [x for x, k in zip(exclude, keep) if k]
    return stories, exclude, n_short


def chunk_of(ids: Sequence[str], kind: str) -> np.ndarray:
    """The stored chunk of each record: stories by round (``story-<emotion>-<round>``), in blocks of
    :data:`ROUNDS_PER_CHUNK` rounds; neutral dialogues (``neutral-<n>``) in blocks of
    :data:`NEUTRAL_PER_CHUNK`. Records whose ids follow neither pattern (corpora of another design) are
    chunked by their rank in id order, :data:`NEUTRAL_PER_CHUNK` at a time."""
    pattern, size = (_STORY_ID, ROUNDS_PER_CHUNK) if kind == "story" else (_NEUTRAL_ID, NEUTRAL_PER_CHUNK)
    found = [pattern.match(str(i)) for i in ids]
    if all(found):
        return np.array([int(m.groups()[-1]) // size for m in found], dtype=int)
    rank = {k: n for n, k in enumerate(sorted(map(str, ids)))}
    return np.array([rank[str(i)] // NEUTRAL_PER_CHUNK for i in ids], dtype=int)


def _chunked_means(
    model: Any,
    rows: Any,
    layers: list[int],
    mask: TokenMask,
    exclude: Sequence[Sequence[str]] | None,
    kind: str,
    *,
    batch_size: int,
    max_tokens: int,
    progress: bool,
    shard: tuple[int, int] | None = None,
) -> dict[int, np.ndarray]:
    """Per-record means at ``layers`` (float64 arrays in ``rows``' order), chunk by chunk through the store.
    Within a chunk, records are taken in id order, so a chunk's content never depends on row order.
    ``shard=(i, n)`` computes only the i-th of every n chunks (the others stay zero): for filling the store."""
    from tqdm.auto import tqdm

    d = int(model.info.d_model)
    out = {L: np.zeros((len(rows), d)) for L in layers}
    if not len(rows):
        return out
    ids = [str(i) for i in rows["id"]] if "id" in rows else [f"{k:08d}" for k in range(len(rows))]
    chunks = chunk_of(ids, kind)
    texts = list(rows["text"])
    excl = [tuple(x) for x in exclude] if exclude is not None else [()] * len(rows)
    todo = sorted(set(chunks.tolist()))
    if shard is not None:
        todo = todo[shard[0] :: shard[1]]
    for c in tqdm(todo, desc=f"{kind} chunks", disable=not progress, unit="chunk"):
        idx = sorted(np.flatnonzero(chunks == c).tolist(), key=lambda k: ids[k])
        got = chunk_means(
            model,
            tuple(texts[k] for k in idx),
            tuple(layers),
            mask,
            tuple(excl[k] for k in idx),
            batch_size,
            max_tokens,
        )
        for j, L in enumerate(layers):
            out[L][idx] = got[:, j].astype(np.float64)
    return out


@store.memo("story_means", version=1, ignore=("progress",), depends=(EXTRACT_VERSION,))
def chunk_means(
    model: Any,
    texts: tuple[str, ...],
    layers: tuple[int, ...],
    mask: TokenMask,
    exclude: tuple[tuple[str, ...], ...],
    batch_size: int = 16,
    max_tokens: int = MAX_TOKENS,
    *,
    progress: bool = False,
) -> np.ndarray:
    """Mean activations of ``texts`` at ``layers``, ``[n_texts, n_layers, d_model]``, in float16 (float32
    when a value exceeds :data:`FLOAT16_MAX`): one stored chunk."""
    acts = extract(
        model,
        list(texts),
        list(layers),
        mask=mask,
        exclude=[list(x) for x in exclude],
        batch_size=batch_size,
        max_tokens=max_tokens,
        progress=progress,
    )
    a = np.stack([acts[L].float().numpy() for L in layers], axis=1)
    if not np.isfinite(a).all():
        raise FloatingPointError("non-finite activations in a chunk: check the model's dtype")
    return a.astype(np.float16) if np.abs(a).max() < FLOAT16_MAX else a.astype(np.float32)


def from_config(
    model: Any,
    corpus: Any,
    cfg: Any,
    layers: Sequence[int],
    *,
    progress: bool = True,
    rounds: int | None = None,
) -> CorpusActivations:
    """:func:`corpus_activations` with the settings of a :class:`emolib.config.VectorsConfig` (stored chunks
    when ``cfg.chunked``); ``rounds``: only the stories of the first rounds (the layer profile)."""
    return corpus_activations(
        model,
        corpus,
        layers,
        token_offset=cfg.token_offset,
        mask_leaks=cfg.mask_leaks,
        emotions=cfg.emotions,
        max_per_emotion=cfg.stories_per_emotion,
        max_neutral=cfg.max_neutral,
        progress=progress,
        chunked=bool(getattr(cfg, "chunked", False)),
        rounds=rounds,
    )


def fill_store(
    model: Any,
    corpus: Any,
    layers: Sequence[int],
    *,
    token_offset: int = 50,
    mask_leaks: bool = True,
    neutral_offset: int = 1,
    shard: tuple[int, int] | None = None,
    rounds: int | None = None,
    kinds: Sequence[str] = ("story", "neutral"),
    progress: bool = True,
) -> None:
    """Compute the stored chunks of :func:`corpus_activations` (``chunked=True``, every emotion; every story,
    or those of the first ``rounds`` rounds), or with ``shard=(i, n)`` the i-th of every n chunks, so that n
    processes can share the work. ``kinds``: the stories, the neutral dialogues or both."""
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    if not kinds or set(kinds) - {"story", "neutral"}:
        raise ValueError(f"kinds must name 'story' and/or 'neutral', got {kinds!r}")
    mask = TokenMask(start=token_offset)
    names = tuple(corpus.emotions)
    stories, exclude, _ = _story_rows(model, corpus, names, mask, mask_leaks, None, MAX_TOKENS, rounds)
    common = dict(batch_size=16, max_tokens=MAX_TOKENS, progress=progress, shard=shard)
    for group in layer_groups(layers, rounds):
        if "story" in kinds:
            _chunked_means(model, stories, group, mask, exclude, "story", **common)
        if "neutral" in kinds:
            nmask = TokenMask(start=neutral_offset)
            _chunked_means(model, corpus.usable_neutral(), group, nmask, None, "neutral", **common)


if __name__ == "__main__":  # python -m emolib.activations --layers default --shard 0/2
    import argparse

    from .config import default_layer, spaced_layers
    from .corpus import corpus_dir_for, load_corpus
    from .models import load_model, shard_threads
    from .stimuli import load_emotions

    ap = argparse.ArgumentParser(description="Fill the result store with a corpus's per-story means.")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--corpus", default="", help="corpus folder (default data/corpus/<model>)")
    ap.add_argument(
        "--layers", default="default",
        help="comma-separated layers, 'default' (2/3 depth) or 'spaced' (emolib.config.spaced_layers)",
    )  # fmt: skip
    ap.add_argument("--rounds", type=int, default=None, help="only the stories of the first ROUNDS rounds")
    ap.add_argument("--token-offset", type=int, default=50)
    ap.add_argument("--no-mask-leaks", action="store_true")
    ap.add_argument("--shard", default=None, metavar="I/N", help="the I-th of every N chunks")
    ap.add_argument("--kinds", default="story,neutral", help="story, neutral or both (comma-separated)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores / shards)")
    a = ap.parse_args()
    shard = None
    if a.shard:
        try:
            shard = tuple(int(x) for x in a.shard.split("/"))
            assert len(shard) == 2
        except (ValueError, AssertionError):
            ap.error(f"--shard must look like 0/2, got {a.shard!r}")
    shard_threads(shard[1] if shard else 1, a.threads)
    m = load_model(a.model, device=a.device, dtype=a.dtype)
    n = m.info.n_layers
    named = {"default": [default_layer(n)], "spaced": spaced_layers(n)}
    layers = named[a.layers] if a.layers in named else [int(x) for x in a.layers.split(",")]
    corpus = load_corpus(a.corpus or corpus_dir_for(a.model), load_emotions())
    recipe = dict(token_offset=a.token_offset, mask_leaks=not a.no_mask_leaks)
    kinds = tuple(k.strip() for k in a.kinds.split(","))
    fill_store(m, corpus, layers, **recipe, shard=shard, rounds=a.rounds, kinds=kinds)
    print(f"{a.model}: stored chunks at layers {layers} ({store.summary()})")
