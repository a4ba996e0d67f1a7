"""The shared trunk (:mod:`emolib.trunk`): scoring with layers 0..L run once equals scoring with the layer's
output steered by a hook, for every layer, on a tiny Llama (through the bridge) and a tiny Gemma 3 with
sliding-window layers (plain transformers); the original layers come back, also after an error."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emolib import behaviour as B
from emolib import trunk
from emolib.chat import continuation_ids, render


def _items():
    ctx = [
        "The quick brown fox jumps over the lazy dog while the cat",
        "She felt her heart race as the storm",
    ]
    return [
        B.ChoiceItem(
            f"i{k}",
            "g",
            ({"role": "user", "content": c},),
            {"harmful": " jumps over the lazy dog", "benign": "She felt the money"},
            "harmful",
            "benign",
        )
        for k, c in enumerate(ctx)
    ]


@torch.no_grad()
def _reference(model, items, layer, adds):
    """Each condition, each option: the whole prompt + option in one forward, no cache, with a plain torch
    hook adding the row's vector to decoder layer ``layer``'s output."""
    hf, tok = model.hf_model, model.tokenizer
    out = np.zeros((adds.shape[0], len(items), 2))
    for c in range(adds.shape[0]):
        h = trunk.decoder_layers(hf)[layer].register_forward_hook(
            lambda m, a, o, v=adds[c]: (o[0] + v, *o[1:]) if isinstance(o, tuple) else o + v
        )
        try:
            for i, it in enumerate(items):
                for k, n in enumerate(it.names):
                    p, cont = continuation_ids(tok, render(tok, list(it.messages)), it.options[n])
                    ids = torch.tensor(p + cont)[None]
                    lp = torch.log_softmax(hf(input_ids=ids, use_cache=False).logits[0, :-1].float(), -1)
                    tgt = ids[0, 1:]
                    out[c, i, k] = lp.gather(-1, tgt[:, None])[len(p) - 1 :, 0].double().mean().item()
        finally:
            h.remove()
    return out


def _adds(d, n=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, d, generator=g) * 2.0


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_shared_trunk_equals_hooked_forward_llama(tiny, layer):
    items, adds = _items(), _adds(tiny.info.d_model)
    got = B.option_logprobs(tiny, items, layer=layer, adds=adds, batch_size=2)
    np.testing.assert_allclose(got, _reference(tiny, items, layer, adds), atol=1e-4)
    # the bridge's own hook path agrees too
    hooked = B.option_logprobs(tiny, items, layer=layer, adds=adds, use_kv_cache=False)
    np.testing.assert_allclose(got, hooked, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_gemma(tiny):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny.tokenizer
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4,  # shorter than every prompt, so the sliding cache layers are exercised
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(cfg).eval()
    return SimpleNamespace(hf_model=hf, tokenizer=tok, info=SimpleNamespace(device="cpu", d_model=32))


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_shared_trunk_equals_hooked_forward_gemma3(tiny_gemma, layer):
    items, adds = _items(), _adds(32)
    got = B.option_logprobs(tiny_gemma, items, layer=layer, adds=adds, batch_size=2)
    np.testing.assert_allclose(got, _reference(tiny_gemma, items, layer, adds), atol=1e-4)
    zero = B.option_logprobs(tiny_gemma, items, layer=layer, adds=torch.zeros(1, 32))
    np.testing.assert_allclose(
        zero[0], _reference(tiny_gemma, items, layer, torch.zeros(1, 32))[0], atol=1e-4
    )


def test_layers_restored_after_error(tiny):
    layers = trunk.decoder_layers(tiny.hf_model)
    before = list(layers)
    with pytest.raises(RuntimeError, match="replay"):
        with trunk.replaying(tiny.hf_model, 1) as state:
            assert layers[0] is not before[0]
            state["h"] = torch.zeros(1, 2, tiny.info.d_model)  # wrong length for the forward below
            tiny.hf_model(input_ids=torch.tensor([[1, 2, 3]]))
    assert list(layers) == before
    with pytest.raises(ValueError, match="out of range"):
        with trunk.replaying(tiny.hf_model, 99):
            pass
    assert list(layers) == before


def test_unknown_layout_falls_back():
    assert trunk.decoder_layers(torch.nn.Linear(2, 2)) is None


def test_memoized_trunk_reuses_layers_and_changes_nothing(tiny):
    from emolib.steer import Steering, score_continuations

    prompts = ["The quick brown fox", "She felt her heart race", "He walked slowly home"]
    conts = [" jumps over", " as the storm", " thinking about"]
    g = torch.Generator().manual_seed(3)
    st = [Steering(torch.randn(32, generator=g), (1,), 1.0, 3.0, positions="all") for _ in range(3)]
    ref = [score_continuations(tiny, prompts, conts, steering=s, batch_size=2) for s in st]
    before = list(trunk.decoder_layers(tiny.hf_model))
    with trunk.memoized(tiny.hf_model, 1) as state:
        got = [score_continuations(tiny, prompts, conts, steering=s, batch_size=2) for s in st]
    assert state["hits"] == 4  # 2 batches x the 2 directions after the first
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert list(trunk.decoder_layers(tiny.hf_model)) == before
    # forwards with a KV cache run in full (no reuse), and give the same logits
    ids = torch.tensor([[1, 5, 9, 14]])
    plain = tiny.hf_model(input_ids=ids, use_cache=True).logits
    with trunk.memoized(tiny.hf_model, 2) as state:
        a = tiny.hf_model(input_ids=ids, use_cache=True).logits
        b = tiny.hf_model(input_ids=ids, use_cache=True).logits
    assert state["hits"] == 0
    torch.testing.assert_close(a, plain)
    torch.testing.assert_close(b, plain)
