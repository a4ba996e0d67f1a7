"""Human valence and arousal ratings (Warriner, Kuperman & Brysbaert 2013) joined to the emotion words.

The ratings file is used unmodified (CC BY-NC-ND 3.0); subsets are derived here at run time.
Matching is case-insensitive: an emotion word first matches a Warriner ``Word`` exactly; failing that,
our own table ``data/ratings_lemma_map.csv`` (columns ``word,lemma,note``) names the Warriner lemma used
for it (``horrified`` -> ``horror``). A row with an empty ``lemma`` records that no honest lemma exists.
Both kinds of match are kept apart in :class:`RatingsJoin` so they can be reported as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .constants import LEMMA_MAP_FILE, RATINGS_FILE

WORD, VALENCE, AROUSAL = "Word", "V.Mean.Sum", "A.Mean.Sum"
RATING_COLUMNS = (WORD, VALENCE, AROUSAL)
LEMMA_MAP_COLUMNS = ("word", "lemma", "note")


def _read_csv(path: str | Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    # keep_default_na=False: Warriner rates the word "null", which pandas would otherwise read as NaN
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def _require_columns(df: pd.DataFrame, required: tuple[str, ...], source: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(df.columns)[:10]}")


def _validate_ratings(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check columns, numeric ratings and unique words; return Word/V/A only.

    Words are unique as written; Warriner rates some pairs that differ only in case ("aids", "AIDS").
    """
    _require_columns(df, RATING_COLUMNS, source)
    out = df[list(RATING_COLUMNS)].copy()
    out[WORD] = out[WORD].astype(str).str.strip()
    if (out[WORD] == "").any():
        raise ValueError(f"{source}: empty {WORD!r} in rows {list(out.index[out[WORD] == ''][:5])}")
    for col in (VALENCE, AROUSAL):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            raise ValueError(f"{source}: non-numeric {col!r} for words {out.loc[bad, WORD].tolist()[:5]}")
        out[col] = values.astype(float)
    dup = out[WORD].duplicated()
    if dup.any():
        raise ValueError(f"{source}: duplicate words {sorted(set(out.loc[dup, WORD]))[:5]}")
    return out.reset_index(drop=True)


def load_ratings(path: str | Path = RATINGS_FILE) -> pd.DataFrame:
    """Warriner ratings as a DataFrame with columns ``Word``, ``V.Mean.Sum``, ``A.Mean.Sum`` (1-9 scales).

    Raises FileNotFoundError for a missing file and ValueError naming missing or non-numeric columns.
    """
    return _validate_ratings(_read_csv(path, "ratings"), str(path))


def load_lemma_map(path: str | Path = LEMMA_MAP_FILE) -> pd.DataFrame:
    """Our lemma table: columns ``word, lemma, note``, lower-cased; ``lemma == ""`` means deliberately unmatched.

    Raises ValueError for missing columns, empty or duplicate words.
    """
    df = _read_csv(path, "lemma map")
    _require_columns(df, LEMMA_MAP_COLUMNS, str(path))
    return _validate_lemma_map(df[list(LEMMA_MAP_COLUMNS)], str(path))


def _validate_lemma_map(df: pd.DataFrame, source: str) -> pd.DataFrame:
    out = df.copy()
    for col in ("word", "lemma"):
        out[col] = out[col].fillna("").astype(str).str.strip().str.lower()
    if (out["word"] == "").any():
        raise ValueError(f"{source}: empty 'word' in rows {list(out.index[out['word'] == ''][:5])}")
    dup = out["word"].duplicated()
    if dup.any():
        raise ValueError(f"{source}: duplicate words {sorted(set(out.loc[dup, 'word']))}")
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class RatingsJoin:
    """Ratings for the matched emotion words.

    ``table``: index = matched emotion words in the order given to :func:`join_ratings`; columns
    ``valence``, ``arousal`` (Warriner 1-9), ``lemma`` (the Warriner word used), ``match``
    (``"exact"`` or ``"lemma"``) and ``position`` (row of the word in the emotion list, i.e. in the
    vector matrix). ``unmatched`` keeps the input order.
    """

    table: pd.DataFrame
    n_emotions: int
    coverage: float
    unmatched: list[str]

    @property
    def n_exact(self) -> int:
        return int((self.table["match"] == "exact").sum())

    @property
    def n_lemma(self) -> int:
        return int((self.table["match"] == "lemma").sum())

    def to_dict(self) -> dict:
        """JSON-ready summary (counts, coverage, unmatched words, lemma substitutions)."""
        lemma_rows = self.table[self.table["match"] == "lemma"]
        return {
            "n_emotions": self.n_emotions,
            "n_exact": self.n_exact,
            "n_lemma": self.n_lemma,
            "n_matched": len(self.table),
            "coverage": self.coverage,
            "coverage_exact": self.n_exact / self.n_emotions,
            "unmatched": list(self.unmatched),
            "lemma_matches": dict(zip(lemma_rows.index, lemma_rows["lemma"])),
        }


def join_ratings(
    emotions: list[str],
    ratings: pd.DataFrame | None = None,
    lemma_map: pd.DataFrame | Mapping[str, str] | None = None,
) -> RatingsJoin:
    """Match emotion words to ratings: exact (case-insensitive) first, then the lemma map.

    ``ratings`` defaults to :func:`load_ratings`, ``lemma_map`` to :func:`load_lemma_map`; pass
    ``lemma_map={}`` for exact matches only. Map entries for words not in ``emotions`` are ignored;
    a lemma needed by an emotion but absent from the ratings raises ValueError naming it.
    """
    ratings = load_ratings() if ratings is None else _validate_ratings(ratings, "ratings")
    if lemma_map is None:
        lemma_map = load_lemma_map()
    if isinstance(lemma_map, pd.DataFrame):
        _require_columns(lemma_map, ("word", "lemma"), "lemma map")
        lemma_map = _validate_lemma_map(lemma_map[["word", "lemma"]], "lemma map")
        lemma_map = dict(zip(lemma_map["word"], lemma_map["lemma"]))
    lemmas = {str(k).strip().lower(): str(v).strip().lower() for k, v in lemma_map.items()}

    words = [str(e).strip().lower() for e in emotions]
    if not words:
        raise ValueError("no emotion words given")
    if len(set(words)) != len(words):
        raise ValueError(f"duplicate emotion words: {sorted({w for w in words if words.count(w) > 1})}")
    # case-folded lookup; where Warriner rates both forms ("aids", "AIDS") the lower-case one wins
    folded: dict[str, str] = {}
    for word in ratings[WORD]:
        if word.lower() not in folded or word == word.lower():
            folded[word.lower()] = word
    by_word = ratings.set_index(WORD)

    rows, unmatched, missing = [], [], []
    for pos, w in enumerate(words):
        if w in folded:
            key, how = folded[w], "exact"
        elif lemmas.get(w):
            if lemmas[w] not in folded:
                missing.append(f"{w}->{lemmas[w]}")
                continue
            key, how = folded[lemmas[w]], "lemma"
        else:
            unmatched.append(w)
            continue
        r = by_word.loc[key]
        rows.append((w, float(r[VALENCE]), float(r[AROUSAL]), key, how, pos))
    if missing:
        raise ValueError(f"lemma(s) not found in the ratings: {missing}")

    table = pd.DataFrame(rows, columns=["emotion", "valence", "arousal", "lemma", "match", "position"])
    table = table.set_index("emotion")
    return RatingsJoin(
        table=table,
        n_emotions=len(words),
        coverage=len(table) / len(words),
        unmatched=unmatched,
    )
