"""One validated run configuration per notebook.

A notebook's ``parameters`` cell holds literals only; the next cell builds one frozen config::

    cfg = VectorsConfig(model=model, seed=seed, quick=quick, token_offset=token_offset, ...)

``__post_init__`` validates every field and applies quick mode *inside* the config (fewer emotions,
stories, layers and resamples), so what :meth:`RunConfig.provenance` records is what actually ran.

Conventions defined once here:

- :func:`default_layer`: the paper's "about two-thirds of the way through the model";
- :func:`topic_fold` / :data:`N_FOLDS`: the held-out rule (a story's fold is its topic index mod 5, so
  folds never share a topic);
- quick mode's subset (:data:`QUICK_EMOTIONS` and friends).

Chapter configs subclass :class:`RunConfig` and add their own fields (SAELens-style).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from .constants import DEFAULT_MODEL, QUICK_EMOTIONS, QUICK_NEUTRAL, QUICK_STORIES_PER_EMOTION, model_slug

N_FOLDS = 5
DTYPES = ("float32", "float16", "bfloat16")


def default_layer(n_layers: int) -> int:
    """The paper's default layer: about two-thirds of the way through the model."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return min(round(2 * n_layers / 3), n_layers - 1)


def trace_read_layer(n_layers: int) -> int:
    """The layer chapter 03 reads a steered trace at: four layers above :func:`default_layer` (the steering
    layer), so the reading is not the added vector itself; chapter 01 saves vectors there too."""
    return min(default_layer(n_layers) + 4, n_layers - 1)


def topic_fold(topic_index: Any, n_folds: int = N_FOLDS) -> Any:
    """Cross-validation fold of a story (or array of stories): its topic index mod ``n_folds``."""
    return topic_index % n_folds


def spaced_layers(n_layers: int, n: int = 10) -> list[int]:
    """About ``n`` evenly spaced layers ending at the last one, plus :func:`default_layer`: the layer profile
    of a corpus too large to keep at every layer (for 30 layers: 2, 5, ..., 29, which holds 20)."""
    if n_layers < 1 or n < 1:
        raise ValueError(f"n_layers and n must be >= 1, got {n_layers} and {n}")
    step = max(-(-n_layers // n), 1)
    return sorted({*range(n_layers - 1, -1, -step), default_layer(n_layers)})


def quick_layers(n_layers: int, extra: tuple[int, ...] = ()) -> list[int]:
    """The few layers a quick run looks at: around two-thirds depth, plus ``extra``."""
    L0 = default_layer(n_layers)
    return sorted({L0 // 2, max(L0 - 2, 0), L0, min(L0 + 4, n_layers - 1), *extra})


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class RunConfig:
    """Settings shared by every chapter. Construct with the notebook's parameters; quick mode is applied
    in ``__post_init__`` (see each class's ``QUICK`` caps)."""

    notebook: str
    model: str = DEFAULT_MODEL
    adapter: str | None = None  # a PEFT adapter folder applied on top of ``model``
    seed: int = 0
    quick: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    n_boot: int = 1000
    n_perm: int = 1000

    # caps applied when quick=True: field -> maximum value
    QUICK: ClassVar[dict[str, int]] = {"n_boot": 200, "n_perm": 200}

    def __post_init__(self) -> None:
        _check(isinstance(self.notebook, str) and bool(self.notebook), "notebook must be a non-empty name")
        _check(
            isinstance(self.model, str) and bool(self.model.strip()),
            f"model must be a spec string, got {self.model!r}",
        )
        _check(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            f"seed must be a non-negative int, got {self.seed!r}",
        )
        _check(isinstance(self.quick, bool), f"quick must be True or False, got {self.quick!r}")
        _check(
            self.device == "cpu" or self.device.startswith(("cuda", "mps")),
            f"device must be 'cpu', 'cuda[:n]' or 'mps', got {self.device!r}",
        )
        _check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("n_") and isinstance(v, int) and not isinstance(v, bool):
                _check(v >= 0, f"{f.name} must be >= 0, got {v}")
        if self.quick:
            for name, cap in self.QUICK.items():
                if getattr(self, name) is not None:
                    object.__setattr__(self, name, min(getattr(self, name), cap))

    # -- derived ---------------------------------------------------------------------------------
    @property
    def slug(self) -> str:
        """The model's folder name under results/ and data/corpus/."""
        try:
            return model_slug(self.model, self.adapter)  # type: ignore[call-arg]
        except TypeError:  # model_slug without adapter support
            return model_slug(self.model)

    def load_model(self) -> Any:
        from .models import load_model

        kw: dict[str, Any] = {"device": self.device, "dtype": self.dtype}
        if self.adapter:
            kw["adapter"] = self.adapter
        return load_model(self.model, **kw)

    def provenance(self) -> dict[str, Any]:
        """Every effective setting (after quick mode), JSON-ready."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def start(self, root: str | Path | None = None) -> Any:
        """Seed everything and open the chapter's :class:`emolib.results.Run` (records provenance)."""
        from .results import Run

        return Run(self, root=root)


@dataclass(frozen=True)
class VectorsConfig(RunConfig):
    """Settings of the emotion-vector recipe and of the chapters that use the vectors.

    layer: ``"default"`` (two-thirds depth, fixed in advance), ``"heldout"`` (the layer chapter 01 chose
    inside its training folds, read from metrics.json) or an int."""

    layer: int | str = "default"
    token_offset: int = 50
    mask_leaks: bool = True
    denoise_variance: float = 0.5
    standardize: bool = False
    n_null: int = 50
    emotions: tuple[str, ...] | None = None  # None: all 171; quick mode sets a readable subset
    stories_per_emotion: int | None = None  # None: every usable story
    max_neutral: int | None = None
    # None: every layer is read on every story. k: a corpus too large for that (corpus design 2) is read at
    # the analysed layer only, and the layer profile on the stories of its first k rounds at spaced_layers.
    profile_rounds: int | None = None
    chunked: bool = False  # per-story means through the result store's chunks (emolib.activations)

    QUICK: ClassVar[dict[str, int]] = {"n_boot": 200, "n_perm": 200, "n_null": 5}

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            isinstance(self.layer, int)
            and not isinstance(self.layer, bool)
            or self.layer in ("default", "heldout"),
            f"layer must be an int, 'default' or 'heldout', got {self.layer!r}",
        )
        _check(
            isinstance(self.token_offset, int) and self.token_offset >= 1,
            f"token_offset must be an int >= 1 (position 0 is never used), got {self.token_offset!r}",
        )
        _check(
            isinstance(self.mask_leaks, bool), f"mask_leaks must be True or False, got {self.mask_leaks!r}"
        )
        _check(
            isinstance(self.denoise_variance, (int, float))
            and 0 <= self.denoise_variance < 1
            and math.isfinite(self.denoise_variance),
            f"denoise_variance must be in [0, 1), got {self.denoise_variance!r}",
        )
        _check(
            self.profile_rounds is None
            or isinstance(self.profile_rounds, int)
            and not isinstance(self.profile_rounds, bool)
            and self.profile_rounds >= 2,
            f"profile_rounds must be None or an int >= 2, got {self.profile_rounds!r}",
        )
        _check(isinstance(self.chunked, bool), f"chunked must be True or False, got {self.chunked!r}")
        if self.emotions is not None:
            object.__setattr__(self, "emotions", tuple(self.emotions))
        if self.quick:
            if self.emotions is None:
                object.__setattr__(self, "emotions", tuple(QUICK_EMOTIONS))
            cap = QUICK_STORIES_PER_EMOTION
            object.__setattr__(self, "stories_per_emotion", min(self.stories_per_emotion or cap, cap))
            object.__setattr__(self, "max_neutral", min(self.max_neutral or QUICK_NEUTRAL, QUICK_NEUTRAL))

    def recipe(self) -> dict[str, Any]:
        """The settings an artefact built from the corpus depends on (checked when a chapter loads it)."""
        return {
            "token_offset": self.token_offset,
            "mask_leaks": self.mask_leaks,
            "denoise_variance": float(self.denoise_variance),
            "standardize": self.standardize,
        }

    def sweep_layers(self, n_layers: int, extra: tuple[int, ...] = ()) -> list[int]:
        """Layers a chapter sweeps: every layer, :func:`spaced_layers` when the profile is read on a subset
        (``profile_rounds``), or :func:`quick_layers` in quick mode."""
        if self.quick:
            return quick_layers(n_layers, extra)
        if self.profile_rounds is not None:
            return sorted({*spaced_layers(n_layers), *extra})
        return list(range(n_layers))

    def analysis_layers(self, n_layers: int, extra: tuple[int, ...] = ()) -> list[int]:
        """Layers read on every story: the swept layers, or only the default layer, chapter 03's trace read
        layer (:func:`trace_read_layer`) and ``extra`` when the layer profile is read on a subset
        (``profile_rounds``)."""
        if self.quick or self.profile_rounds is None:
            return self.sweep_layers(n_layers, extra)
        return sorted({default_layer(n_layers), trace_read_layer(n_layers), *extra})

    def profile_subset(self) -> int | None:
        """The rounds the layer profile reads (None: every story, as :meth:`analysis_layers`)."""
        return None if self.quick else self.profile_rounds

    def resolve_layer(self, n_layers: int, metrics: dict[str, Any] | None = None) -> int:
        """The analysed layer as an int (``"heldout"`` needs chapter 01's metrics)."""
        if self.layer == "default":
            return default_layer(n_layers)
        if self.layer == "heldout":
            if not metrics or "heldout_layer" not in metrics:
                raise ValueError(
                    "layer='heldout' needs chapter 01 (notebooks/01_emotion_vectors.ipynb) to have run "
                    "for this model: no 'heldout_layer' in its metrics.json"
                )
            return int(metrics["heldout_layer"])
        layer = int(self.layer)
        if not -n_layers <= layer < n_layers:
            raise ValueError(
                f"layer {layer} out of range for {self.model} ({n_layers} layers: 0..{n_layers - 1})"
            )
        return layer % n_layers
