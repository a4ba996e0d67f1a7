"""Generation backends behind the corpus interface.

:func:`emolib.corpus.generate_corpus` lays out batches, seeds them, appends finished records and resumes; a
*backend* only turns a batch of prompt strings into continuations. Two backends:

- :class:`TorchBackend` (the default): :func:`emolib.generate.sample_batch`, a KV-cache decode loop over the
  Hugging Face model, on CPU or one GPU;
- :class:`VLLMBackend` (optional, for corpora at the paper's scale on GPUs): vLLM's paged-attention engine.
  vLLM is imported only when this backend is built; it is not a dependency of emolib (``pip install vllm``).

Both take the same :class:`emolib.generate.Sampling` and the batch seed that the corpus assigns, so a corpus
stays resumable whichever backend writes it. They do not give the same texts for the same seed (different
random streams and kernels): the backend's :meth:`describe` goes into the corpus provenance.

>>> backend = TorchBackend(m.hf_model, m.tokenizer)                     # doctest: +SKIP
>>> generate_corpus(backend, jobs, "data/corpus/x/corpus.jsonl")        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .generate import Sampling

Sample = tuple[str, int, bool]  # (text, number of new tokens, whether a stop token ended it)


@runtime_checkable
class GenerationBackend(Protocol):
    """What the corpus needs from a generator."""

    tokenizer: Any  # renders the prompts (:func:`emolib.corpus.render_prompt`) and counts tokens

    def generate(self, prompts: Sequence[str], sampling: Sampling, seed: int) -> list[Sample]:
        """One continuation per prompt, in order; the same prompts, settings and seed give the same texts."""
        ...

    def describe(self) -> dict[str, Any]:
        """Name and settings of the backend, for the corpus provenance."""
        ...


class TorchBackend:
    """The default: :func:`emolib.corpus.generate_batch` (which runs :func:`emolib.generate.sample_batch`).

    A model loaded with eager attention (the TransformerBridge's setting) is switched to SDPA for the call
    and switched back afterwards: same maths, faster decoding."""

    def __init__(self, hf_model: Any, tokenizer: Any) -> None:
        self.hf_model = hf_model
        self.tokenizer = tokenizer

    def generate(self, prompts: Sequence[str], sampling: Sampling, seed: int) -> list[Sample]:
        from .corpus import generate_batch

        old = getattr(getattr(self.hf_model, "config", None), "_attn_implementation", None)
        switch = old == "eager" and hasattr(self.hf_model, "set_attn_implementation")
        if switch:
            self.hf_model.set_attn_implementation("sdpa")
        try:
            return generate_batch(self.hf_model, self.tokenizer, list(prompts), sampling, seed)
        finally:
            if switch:
                self.hf_model.set_attn_implementation("eager")

    def describe(self) -> dict[str, Any]:
        p = next(self.hf_model.parameters(), None)
        return {
            "backend": "torch",
            "engine": "emolib.generate.sample_batch",
            "device": str(p.device) if p is not None else "cpu",
            "dtype": str(p.dtype).removeprefix("torch.") if p is not None else None,
        }


VLLM_MISSING = (
    "The vLLM backend needs the vllm package, which emolib does not install (it needs a CUDA GPU): "
    "pip install vllm. Without it, use the default TorchBackend."
)


class VLLMBackend:
    """Generation through vLLM (imported here, only when this backend is built).

    model: a hub name or a local Hugging Face folder (for a packaged model: ``emolib.models.packaged_dir``).
    Prompts are passed as token ids made by :func:`emolib.chat.encode`, so BOS handling matches the torch
    path. Request ``i`` of a batch with seed ``s`` samples with seed ``s * 100_003 + i``: a batch regenerated
    after an interruption gives the same texts (on the same vLLM version and GPU type)."""

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "bfloat16",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        llm: Any = None,
    ) -> None:
        try:
            import vllm
        except ImportError as e:
            raise ImportError(VLLM_MISSING) from e
        from transformers import AutoTokenizer

        self._vllm = vllm
        self.model = str(model)
        self.settings = {
            "dtype": dtype,
            "tensor_parallel_size": int(tensor_parallel_size),
            "gpu_memory_utilization": float(gpu_memory_utilization),
            "max_model_len": max_model_len,
        }
        self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        kw = {k: v for k, v in self.settings.items() if v is not None}
        self.llm = llm if llm is not None else vllm.LLM(model=self.model, **kw)

    def generate(self, prompts: Sequence[str], sampling: Sampling, seed: int) -> list[Sample]:
        from .chat import encode

        stops = sampling.stop_ids(self.tokenizer)
        params = [
            self._vllm.SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                max_tokens=sampling.max_new_tokens,
                min_tokens=sampling.min_new_tokens,
                seed=int(seed) * 100_003 + i,
                stop_token_ids=stops,
            )
            for i in range(len(prompts))
        ]
        reqs = [{"prompt_token_ids": encode(self.tokenizer, p)} for p in prompts]
        outs = self.llm.generate(reqs, params, use_tqdm=False)
        res = []
        for o in outs:
            c = o.outputs[0]
            ids = [t for t in c.token_ids if t not in stops]
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            res.append((text, len(ids), c.finish_reason == "stop"))
        return res

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "vllm_version": getattr(self._vllm, "__version__", None),
            "model": self.model,
            **self.settings,
        }


BACKENDS = ("torch", "vllm")


def make_backend(
    name: str, loaded: Any = None, *, model: str | Path | None = None, **kw: Any
) -> GenerationBackend:
    """``"torch"`` (needs ``loaded``, an :class:`emolib.models.LoadedModel`) or ``"vllm"`` (needs ``model``, a
    hub name or folder; extra keywords go to :class:`VLLMBackend`)."""
    if name == "torch":
        if loaded is None:
            raise ValueError("The torch backend needs a loaded model (emolib.models.load_model)")
        return TorchBackend(loaded.hf_model, loaded.tokenizer)
    if name == "vllm":
        if model is None:
            raise ValueError("The vllm backend needs model= (a hub name or a local model folder)")
        return VLLMBackend(model, **kw)
    raise ValueError(f"Unknown backend {name!r}; choose one of {BACKENDS}")


def generate_corpus(
    backend: GenerationBackend,
    jobs: list[Any],
    out_path: str | Path,
    sampling: Sampling | None = None,
    **kw: Any,
) -> Any:
    """:func:`emolib.corpus.generate_corpus` (batches, per-batch seeds, append-only JSONL, resume) with the
    texts written by ``backend``. Keywords go to it (``model_name``, ``progress``, ``max_batches``)."""
    from . import corpus

    sampling = sampling or corpus.DEFAULT_SAMPLING
    if not isinstance(backend, GenerationBackend):
        raise TypeError(f"{type(backend).__name__} lacks tokenizer / generate / describe")
    return corpus.generate_corpus(None, backend.tokenizer, jobs, out_path, sampling, backend=backend, **kw)
