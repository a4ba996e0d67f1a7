"""Paths and names shared by every module (one place, no magic strings elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
RESULTS_DIR = REPO_ROOT / "results"
CORPUS_DIR = DATA_DIR / "corpus"
PROMPTS_DIR = DATA_DIR / "prompts"

DEFAULT_MODEL = "smollm2-135m-instruct"

EMOTIONS_FILE = DATA_DIR / "emotions_171.json"
TOPICS_FILE = DATA_DIR / "story_topics_100.json"
NEUTRAL_SUBJECTS_FILE = DATA_DIR / "neutral_subjects.json"  # our own practical subjects for neutral dialogues
RATINGS_FILE = DATA_DIR / "Ratings_Warriner_et_al.csv"
LEMMA_MAP_FILE = DATA_DIR / "ratings_lemma_map.csv"


def results_root() -> Path:
    """Where results/<model>/ folders live: ``$EMOLIB_RESULTS_DIR`` if set (read at call time; the tests use
    it to keep the committed results untouched), else the repository's ``results/``."""
    return Path(os.environ.get("EMOLIB_RESULTS_DIR") or RESULTS_DIR)


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


OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ALLOW_HUB_ENV = "EMOLIB_ALLOW_HUB"  # set to "1" to let a hub model spec download


def offline_env() -> dict[str, str]:
    """The environment switches that keep Hugging Face libraries off the network, or ``{}`` when the user has
    opted in to the hub with ``EMOLIB_ALLOW_HUB=1``. The one place these switches are defined: callers that
    spawn processes (notebooks, benchmarks) merge it into the child's environment; nothing here mutates
    ``os.environ``."""
    if os.environ.get(ALLOW_HUB_ENV) == "1":
        return {}
    return dict(OFFLINE_ENV)


def _safe_name(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def _path_tag(path: str | os.PathLike[str]) -> str:
    """8 hex chars identifying a folder by its resolved absolute path."""
    import hashlib

    resolved = str(Path(path).expanduser().resolve())
    return hashlib.sha256(resolved.encode()).hexdigest()[:8]


def model_slug(name: str, adapter: str | os.PathLike[str] | None = None) -> str:
    """A file-system safe, collision-free name for a model spec (used for results/<slug>/ and corpora).

    - packaged name: the name, lower-cased (``smollm2-135m-instruct``);
    - hub name ``org/name``: ``org--name``;
    - local directory: its folder name plus a hash of its resolved absolute path (``ckpt-1a2b3c4d``), so
      /a/ckpt and /b/ckpt never share a folder;
    - with a PEFT adapter folder: ``<base slug>+<adapter folder name>-<hash of the adapter's path>``.
    """
    from .models import PACKAGED  # lazy: models imports this module

    s = name.strip().rstrip("/")
    if s.lower() in PACKAGED:
        slug = s.lower()
    elif s and os.path.isdir(os.path.expanduser(s)):
        folder = Path(s).expanduser().resolve()
        slug = f"{_safe_name(folder.name)}-{_path_tag(folder)}"
    else:
        slug = _safe_name(s.replace("/", "--"))
    if adapter is not None:
        a = Path(adapter).expanduser().resolve()
        slug = f"{slug}+{_safe_name(a.name)}-{_path_tag(a)}"
    return slug


# A readable subset of the 171 emotions (confusion matrices, quick smoke runs).
READABLE_EMOTIONS = (
    "afraid",
    "angry",
    "anxious",
    "blissful",
    "bored",
    "calm",
    "desperate",
    "disgusted",
    "excited",
    "grateful",
    "guilty",
    "happy",
    "hostile",
    "jealous",
    "lonely",
    "loving",
    "nervous",
    "proud",
    "sad",
    "surprised",
)
QUICK_EMOTIONS = READABLE_EMOTIONS[:16]  # quick mode: these emotions, 8 stories each, 4 layers
QUICK_STORIES_PER_EMOTION = 8
QUICK_NEUTRAL = 40
