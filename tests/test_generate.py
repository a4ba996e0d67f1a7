"""The corpus generator's decode loop: greedy equals transformers' greedy, sampling is seeded and truncated
as documented, finished rows leave the batch without changing the others."""

from __future__ import annotations

import pytest
import torch

from emolib.chat import encode
from emolib.generate import Sampling, next_tokens, sample_batch

PROMPTS = ["The quick brown fox", "She felt her heart race as the storm", "Human: What time is it?"]


def _ids(tok):
    return [encode(tok, p) for p in PROMPTS]


def test_greedy_equals_transformers_generate(tiny):
    tok, hf = tiny.tokenizer, tiny.hf_model
    s = Sampling(temperature=0, max_new_tokens=8)
    ours = sample_batch(hf, _ids(tok), s, 0, stop_ids=[], pad_id=tok.pad_token_id)
    for ids, (new, ended) in zip(_ids(tok), ours):
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor([ids]),
                max_new_tokens=8,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=tok.pad_token_id,
            )
        assert new == ref[0, len(ids) :].tolist()
        assert not ended


def test_sampling_is_seeded(tiny):
    tok, hf = tiny.tokenizer, tiny.hf_model
    s = Sampling(temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=10)
    a = sample_batch(hf, _ids(tok), s, 3, stop_ids=[], pad_id=tok.pad_token_id)
    b = sample_batch(hf, _ids(tok), s, 3, stop_ids=[], pad_id=tok.pad_token_id)
    c = sample_batch(hf, _ids(tok), s, 4, stop_ids=[], pad_id=tok.pad_token_id)
    assert a == b
    assert a != c


def test_stop_token_drops_row_without_changing_others(tiny):
    tok, hf = tiny.tokenizer, tiny.hf_model
    s = Sampling(temperature=0, max_new_tokens=8)
    free = sample_batch(hf, _ids(tok), s, 0, stop_ids=[], pad_id=tok.pad_token_id)
    stop = free[0][0][2]  # the third greedy token of the first prompt becomes a stop token
    got = sample_batch(hf, _ids(tok), s, 0, stop_ids=[stop], pad_id=tok.pad_token_id)
    assert got[0] == (free[0][0][: free[0][0].index(stop)], True)
    for (new, ended), (ref, _) in zip(got[1:], free[1:]):
        expected = ref[: ref.index(stop)] if stop in ref else ref
        assert new == expected and ended == (stop in ref)


def test_top_k_top_p_truncation():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0, -2.0]])
    gen = torch.Generator().manual_seed(0)
    seen = {int(next_tokens(logits, Sampling(temperature=1.0, top_k=2, top_p=1.0), gen)) for _ in range(200)}
    assert seen == {0, 1}  # top-k keeps the two best
    seen = {int(next_tokens(logits, Sampling(temperature=1.0, top_k=5, top_p=0.5), gen)) for _ in range(200)}
    assert seen == {0}  # the best token alone holds more than half the mass
    assert int(next_tokens(logits, Sampling(temperature=0), gen)) == 0


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_k=0), dict(batch_size=0)])
def test_sampling_validation(bad):
    with pytest.raises(ValueError):
        Sampling(**bad)


def test_min_new_tokens_masks_the_stop_tokens_until_reached(tiny):
    tok, hf = tiny.tokenizer, tiny.hf_model
    free = sample_batch(hf, _ids(tok), Sampling(temperature=0, max_new_tokens=8), 0, stop_ids=[], pad_id=0)
    stop = free[0][0][0]  # the first greedy token of the first prompt is a stop token
    early = sample_batch(
        hf, _ids(tok), Sampling(temperature=0, max_new_tokens=8), 0, stop_ids=[stop], pad_id=0
    )
    assert early[0] == ([], True)
    late = Sampling(temperature=0, max_new_tokens=8, min_new_tokens=3)
    got = sample_batch(hf, _ids(tok), late, 0, stop_ids=[stop], pad_id=0)
    for new, ended in got:
        assert stop not in new[:3] and (len(new) >= 3)
        assert ended == (len(new) < 8)


def test_stop_strings_must_be_single_tokens(tiny):
    tok = tiny.tokenizer
    s = Sampling(stop_strings=("\n",))
    assert s.stop_ids(tok) == [tok.eos_token_id, tok.encode("\n", add_special_tokens=False)[0]]
    assert s.record()["stop_strings"] == ["\n"]  # as provenance.json holds it
    with pytest.raises(ValueError, match="must be one"):
        Sampling(stop_strings=("a long stop phrase",)).stop_ids(tok)


@pytest.mark.parametrize(
    "bad", [dict(min_new_tokens=8, max_new_tokens=8), dict(min_new_tokens=-1), dict(stop_strings="\n\n")]
)
def test_sampling_validation_of_stops(bad):
    with pytest.raises(ValueError):
        Sampling(**bad)
