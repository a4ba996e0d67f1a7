"""Activation extraction: padding invariance, agreement with HF hidden states, masks, cache and resume."""

from __future__ import annotations

import pytest
import torch

import emolib.extract as ex
from emolib.chat import assistant_marker
from emolib.extract import TokenMask, extract

TEXTS = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "She felt her heart race.",
    "He walked slowly home, hands in pockets, thinking about the letter and the money and the storm.",
    "Human: What time is it? Assistant: It is three o'clock.",
]


def _one_by_one(model, layers, **kw):
    return [extract(model, [t], layers, use_cache=False, progress=False, **kw) for t in TEXTS]


@pytest.mark.parametrize("pooling", ["mean", "last", "token"])
def test_padded_batch_equals_one_by_one(tiny, pooling):
    batched = extract(tiny, TEXTS, [0, 2], pooling=pooling, batch_size=4, use_cache=False, progress=False)
    singles = _one_by_one(tiny, [0, 2], pooling=pooling)
    for L in (0, 2):
        joined = torch.cat([s[L] for s in singles])
        assert batched[L].shape == joined.shape
        assert torch.allclose(batched[L], joined, atol=1e-5)
    assert batched.n_tokens.tolist() == [int(s.n_tokens[0]) for s in singles]


def test_matches_hf_hidden_states(tiny):
    acts = extract(tiny, TEXTS[:1], [0, 1], pooling="token", use_cache=False, progress=False)
    ids = tiny.tokenizer(TEXTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        hs = tiny.hf_model(ids, output_hidden_states=True).hidden_states
    for L in (0, 1):  # resid_post L == hidden_states[L + 1], position 0 excluded
        assert torch.allclose(acts[L], hs[L + 1][0, 1:], atol=1e-5)


def test_start_offset_and_last(tiny):
    full = extract(tiny, TEXTS[:1], [1], pooling="token", use_cache=False, progress=False)
    late = extract(
        tiny, TEXTS[:1], [1], pooling="token", mask=TokenMask(start=5), use_cache=False, progress=False
    )
    assert torch.allclose(late[1], full[1][4:])
    last = extract(tiny, TEXTS[:1], [1], pooling="last", use_cache=False, progress=False)
    assert torch.allclose(last[1][0], full[1][-1])
    # start 0 still never uses the attention-sink position 0
    zero = extract(
        tiny, TEXTS[:1], [1], pooling="token", mask=TokenMask(start=0), use_cache=False, progress=False
    )
    assert zero[1].shape == full[1].shape


def test_assistant_region(tiny):
    marker = assistant_marker(tiny.tokenizer)
    assert marker == "<|im_start|>assistant\n"
    chat = tiny.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What time is it?"}, {"role": "assistant", "content": "It is three."}],
        tokenize=False,
    )
    all_tok = extract(tiny, [chat], [1], pooling="token", use_cache=False, progress=False)
    asst = extract(
        tiny, [chat], [1], pooling="token", mask=TokenMask(after=marker), use_cache=False, progress=False
    )
    n_asst = int(asst.n_tokens[0])
    assert 0 < n_asst < int(all_tok.n_tokens[0])
    ids, offs = ex.tokenize(tiny.tokenizer, [chat])
    start_char = chat.rfind(marker) + len(marker)
    expected = [i for i, (s, e) in enumerate(offs[0]) if i >= 1 and s >= start_char and e > s]
    assert n_asst == len(expected)
    with pytest.raises(ValueError, match="marker"):
        extract(tiny, ["no marker here"], [1], mask=TokenMask(after=marker), use_cache=False, progress=False)


def test_exclude_words(tiny):
    text = "She was happy, so happy and happily laughing at the sea."
    base = extract(tiny, [text], [1], pooling="token", use_cache=False, progress=False)
    masked = extract(
        tiny, [text], [1], pooling="token", exclude=[("happy",)], use_cache=False, progress=False
    )
    assert int(masked.n_tokens[0]) < int(base.n_tokens[0])
    ids, offs = ex.tokenize(tiny.tokenizer, [text])
    spans = [(m.start(), m.end()) for m in __import__("re").finditer(r"happ\w*", text)]
    assert len(spans) == 3  # happy, happy, happily
    hits = [i for i, (s, e) in enumerate(offs[0]) if i >= 1 and any(s < b and a < e for a, b in spans)]
    assert hits and int(base.n_tokens[0]) - int(masked.n_tokens[0]) == len(hits)


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match="empty"):
        extract(tiny, [], [0], use_cache=False, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        extract(tiny, TEXTS, [3], use_cache=False, progress=False)
    with pytest.raises(ValueError, match="selects no token"):
        extract(tiny, TEXTS, [0], mask=TokenMask(start=500), use_cache=False, progress=False)
    with pytest.raises(ValueError, match="pooling"):
        extract(tiny, TEXTS, [0], pooling="max", use_cache=False, progress=False)


def test_cache_reuse_resume_and_corruption(tiny, tmp_path, monkeypatch):
    kw = dict(batch_size=1, cache_root=tmp_path, progress=False)
    first = extract(tiny, TEXTS, [0, 2], **kw)
    folder = tmp_path / first.provenance["cache_key"]
    files = sorted(folder.glob("batch_*.safetensors"))
    assert len(files) == len(TEXTS)

    calls = []
    real = ex._run_batch
    monkeypatch.setattr(ex, "_run_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = extract(tiny, TEXTS, [0, 2], **kw)
    assert calls == []  # everything read from the cache
    assert torch.equal(again[2], first[2])

    files[1].unlink()  # an interrupted run: one batch missing
    resumed = extract(tiny, TEXTS, [0, 2], **kw)
    assert len(calls) == 1 and torch.equal(resumed[2], first[2])

    raw = bytearray(files[2].read_bytes())  # flip bytes in the tensor data: checksum must catch it
    raw[-8:] = b"\x00\x11\x22\x33\x44\x55\x66\x77"
    files[2].write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="Corrupt"):
        rebuilt = extract(tiny, TEXTS, [0, 2], **kw)
    assert len(calls) == 2 and torch.equal(rebuilt[2], first[2])

    files[3].write_bytes(b"garbage")  # a truncated / unreadable file
    with pytest.warns(UserWarning, match="Corrupt"):
        rebuilt = extract(tiny, TEXTS, [0, 2], **kw)
    assert len(calls) == 3 and torch.equal(rebuilt[0], first[0])


def test_cache_key_depends_on_inputs(tiny, tmp_path):
    kw = dict(cache_root=tmp_path, progress=False)
    a = extract(tiny, TEXTS, [1], **kw).provenance["cache_key"]
    assert extract(tiny, TEXTS[:3], [1], **kw).provenance["cache_key"] != a
    assert extract(tiny, TEXTS, [1], mask=TokenMask(start=2), **kw).provenance["cache_key"] != a
    assert extract(tiny, TEXTS, [1], pooling="last", **kw).provenance["cache_key"] != a
    assert extract(tiny, TEXTS, [1], **kw).provenance["cache_key"] == a


def test_smollm2_extraction(smollm, tmp_path):
    acts = extract(smollm, TEXTS, [20], batch_size=2, cache_root=tmp_path, progress=False)
    assert acts[20].shape == (len(TEXTS), 576)
    ids = smollm.tokenizer(TEXTS[2], return_tensors="pt").input_ids
    with torch.no_grad():
        hs = smollm.hf_model(ids, output_hidden_states=True).hidden_states[21][0, 1:].mean(0)
    assert torch.allclose(acts[20][2], hs, rtol=1e-4, atol=1e-3)


def test_last_layer_and_no_hooks_left(tiny):
    acts = extract(tiny, TEXTS[:2], [2], pooling="token", use_cache=False, progress=False)
    ids = tiny.tokenizer(TEXTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        _, cache = tiny.bridge.run_with_cache(ids, names_filter=["blocks.2.hook_resid_post"])
    n0 = int(acts.n_tokens[0])
    assert torch.allclose(acts[2][:n0], cache["blocks.2.hook_resid_post"][0, 1:], atol=1e-5)
    # the early stop raises inside a hook: every hook must still be gone afterwards
    leftover = [n for n, hp in tiny.bridge.hook_dict.items() if hp._forward_hooks]
    assert leftover == []
    with torch.no_grad():
        assert torch.equal(tiny.bridge(ids), tiny.hf_model(ids).logits)
