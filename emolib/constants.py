"""Paths and names shared by every module (one place, no magic strings elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
# $EMOLIB_RESULTS_DIR redirects results (the tests use it to keep the committed results untouched)
RESULTS_DIR = Path(os.environ.get("EMOLIB_RESULTS_DIR") or REPO_ROOT / "results")
CORPUS_DIR = DATA_DIR / "corpus"
PROMPTS_DIR = DATA_DIR / "prompts"

DEFAULT_MODEL = "smollm2-135m-instruct"

EMOTIONS_FILE = DATA_DIR / "emotions_171.json"
TOPICS_FILE = DATA_DIR / "story_topics_100.json"
RATINGS_FILE = DATA_DIR / "Ratings_Warriner_et_al.csv"
LEMMA_MAP_FILE = DATA_DIR / "ratings_lemma_map.csv"


def cache_dir() -> Path:
    """User cache folder (``$EMOLIB_CACHE``, else ``$XDG_CACHE_HOME/emolib``, else ``~/.cache/emolib``)."""
    env = os.environ.get("EMOLIB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "emolib"


def resid_post(layer: int) -> str:
    """Full TransformerLens hook name of the residual stream after block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def model_slug(name: str) -> str:
    """A file-system safe name for a model spec (used for results/<slug>/)."""
    s = name.strip().rstrip("/")
    s = s.split("/")[-1] if os.path.isdir(s) else s.replace("/", "--")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


# A readable subset of the 171 emotions (confusion matrices, quick smoke runs).
READABLE_EMOTIONS = (
    "afraid", "angry", "anxious", "blissful", "bored", "calm", "desperate", "disgusted", "excited", "grateful",
    "guilty", "happy", "hostile", "jealous", "lonely", "loving", "nervous", "proud", "sad", "surprised",
)
QUICK_EMOTIONS = READABLE_EMOTIONS[:16]  # quick mode: these emotions, 8 stories each, 4 layers
QUICK_STORIES_PER_EMOTION = 8
QUICK_NEUTRAL = 40


def quick_layers(n_layers: int, extra: tuple[int, ...] = ()) -> list[int]:
    """The few layers a quick run looks at: around two-thirds depth, plus ``extra``."""
    L0 = round(2 * n_layers / 3)
    return sorted({L0 // 2, L0 - 2, L0, min(L0 + 4, n_layers - 1), *extra})
