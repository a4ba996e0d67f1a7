"""From a corpus to activations: the mean residual stream of every usable story and neutral dialogue at
the requested layers (cached on disk by :func:`emolib.extract.extract`).

Stories are averaged from ``token_offset`` on (the paper's 50th token), leaving out the tokens of the story's
own emotion word when ``mask_leaks`` is on; neutral dialogues from their second token on. Stories with no
token left after the offset (within the extraction's ``max_tokens``) are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .extract import MAX_TOKENS, TokenMask, extract, select_positions, tokenize


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
) -> CorpusActivations:
    """Extract (cached) mean activations from ``token_offset`` on for every usable story, and from
    ``neutral_offset`` on for the neutral dialogues. ``emotions`` restricts to a subset (labels are then
    indices into that subset); ``mask_leaks`` leaves the emotion word's own tokens out of each mean."""

    names = tuple(emotions) if emotions is not None else tuple(corpus.emotions)
    stories = corpus.usable()
    stories = stories[stories["emotion"].isin(names)].copy()
    stories["emotion_index"] = stories["emotion"].map({e: i for i, e in enumerate(names)})
    if max_per_emotion is not None:
        stories = stories.groupby("emotion", sort=False).head(max_per_emotion)
    stories = stories.reset_index(drop=True)
    missing = sorted(set(names) - set(stories["emotion"]))
    if missing:
        raise ValueError(f"No usable story for emotion(s) {missing}")
    mask = TokenMask(start=token_offset)
    exclude = [(e,) if mask_leaks else () for e in stories["emotion"]]
    ids, offs = tokenize(model.tokenizer, list(stories["text"]))
    keep = [
        bool(select_positions(o, min(len(i), max_tokens), t, mask, ex, k))
        for k, (i, o, t, ex) in enumerate(zip(ids, offs, stories["text"], exclude))
    ]
    n_short = int(len(keep) - sum(keep))
    stories = stories[keep].reset_index(drop=True)
    exclude = [x for x, k in zip(exclude, keep) if k]
    acts = extract(
        model,
        list(stories["text"]),
        list(layers),
        mask=mask,
        exclude=exclude,
        batch_size=batch_size,
        max_tokens=max_tokens,
        progress=progress,
    )
    neutral = corpus.usable_neutral()
    if max_neutral is not None:
        neutral = neutral.head(max_neutral)
    nacts = extract(
        model,
        list(neutral["text"]),
        list(layers),
        mask=TokenMask(start=neutral_offset),
        batch_size=batch_size,
        max_tokens=max_tokens,
        progress=progress,
    )
    settings = {
        "token_offset": token_offset,
        "neutral_offset": neutral_offset,
        "mask_leaks": mask_leaks,
        "corpus_sha256": corpus.sha256,
        "n_neutral": int(len(neutral)),
        "model": model.info.name,
        "weights_hash": model.info.weights_hash,
    }
    return CorpusActivations(
        stories,
        {L: acts[L].double().numpy() for L in acts.layers},
        {L: nacts[L].double().numpy() for L in nacts.layers},
        names,
        n_short,
        settings,
    )


def from_config(
    model: Any, corpus: Any, cfg: Any, layers: Sequence[int], *, progress: bool = True
) -> CorpusActivations:
    """:func:`corpus_activations` with the settings of a :class:`emolib.config.VectorsConfig`."""
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
    )
