"""Generation backends: the corpus runs through the backend interface (a fake one proves the plumbing), the
torch backend equals the corpus's own sampler, and vLLM is only imported when asked for."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest
import torch

from emolib import backends
from emolib.corpus import build_jobs, generate_batch, read_jsonl, render_prompt
from emolib.generate import Sampling

torch.set_num_threads(1)

EMOTIONS = ["happy", "afraid", "calm"]
TOPICS = ["a lost key", "a long train ride", "a letter from home", "an exam"]


class FakeBackend:
    """Deterministic texts from (prompt, seed); records every call."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[int, int]] = []  # (batch size, seed)

    def generate(self, prompts, sampling, seed):
        self.calls.append((len(prompts), seed))
        out = []
        for p in prompts:
            h = hashlib.sha256(f"{seed}|{p}".encode()).hexdigest()
            n = 3 + int(h[:2], 16) % sampling.max_new_tokens
            out.append((f"story {h[:12]} " * 2, n, n < sampling.max_new_tokens))
        return out

    def describe(self):
        return {"backend": "fake"}


def _jobs():
    return build_jobs(EMOTIONS, TOPICS, 3, 2)


def test_fake_backend_satisfies_protocol(tiny):
    assert isinstance(FakeBackend(tiny.tokenizer), backends.GenerationBackend)
    assert isinstance(backends.TorchBackend(tiny.hf_model, tiny.tokenizer), backends.GenerationBackend)
    with pytest.raises(TypeError):
        backends.generate_corpus(object(), _jobs(), "unused.jsonl")


def test_corpus_runs_through_backend_and_resumes(tiny, tmp_path):
    jobs, s = _jobs(), Sampling(batch_size=4, max_new_tokens=20, seed=3)
    fake = FakeBackend(tiny.tokenizer)
    whole = tmp_path / "whole.jsonl"
    rep = backends.generate_corpus(fake, jobs, whole, s, progress=False)
    recs = read_jsonl(whole)
    assert rep.n_generated == len(jobs) == len(recs)
    assert [r["id"] for r in recs] == [j.id for j in jobs]
    n_batches = -(-len(jobs) // 4)
    assert fake.calls == [(len(jobs[b * 4 : b * 4 + 4]), 3 * 1_000_003 + b) for b in range(n_batches)]
    assert rep.new_tokens == sum(r["n_new_tokens"] for r in recs)
    # the texts are the backend's, for the corpus's own prompts
    first = fake.generate([render_prompt(jobs[0], tiny.tokenizer)], s, 3 * 1_000_003)[0][0]
    assert recs[0]["text"] == first

    # interrupted after one batch, then resumed: the same file as the uninterrupted run
    part = tmp_path / "part.jsonl"
    backends.generate_corpus(FakeBackend(tiny.tokenizer), jobs, part, s, progress=False, max_batches=1)
    assert len(read_jsonl(part)) == 4
    again = FakeBackend(tiny.tokenizer)
    backends.generate_corpus(again, jobs, part, s, progress=False)
    assert len(again.calls) == n_batches - 1  # the finished batch is not redone
    strip = [{k: v for k, v in r.items() if k != "model"} for r in read_jsonl(part)]
    assert json.dumps(strip) == json.dumps([{k: v for k, v in r.items() if k != "model"} for r in recs])


def test_torch_backend_equals_corpus_sampler(tiny):
    jobs = _jobs()[:3]
    prompts = [render_prompt(j, tiny.tokenizer) for j in jobs]
    s = Sampling(max_new_tokens=6, batch_size=3)
    got = backends.TorchBackend(tiny.hf_model, tiny.tokenizer).generate(prompts, s, seed=11)
    assert got == generate_batch(tiny.hf_model, tiny.tokenizer, prompts, s, seed=11)
    assert backends.TorchBackend(tiny.hf_model, tiny.tokenizer).describe()["backend"] == "torch"


def test_make_backend_validates(tiny):
    assert isinstance(backends.make_backend("torch", tiny), backends.TorchBackend)
    with pytest.raises(ValueError, match="loaded model"):
        backends.make_backend("torch")
    with pytest.raises(ValueError, match="Unknown backend"):
        backends.make_backend("tgi", tiny)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_is_optional_with_a_clear_error():
    import sys

    assert "vllm" not in sys.modules  # importing emolib.backends did not import vllm
    with pytest.raises(ImportError, match="pip install vllm"):
        backends.make_backend("vllm", model="Qwen/Qwen2.5-1.5B-Instruct")
