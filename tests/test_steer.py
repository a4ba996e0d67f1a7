"""Steering on the tiny model: no-op at strength 0, hooks fire and always go away, position rules under KV-cache
decoding (captured activations), cache on == cache off, band rule, a planted readout, padding-safe scoring."""

from __future__ import annotations

import pytest
import torch

from emolib.chat import continuation_ids
from emolib.constants import resid_post
from emolib.extract import extract
from emolib.steer import (
    Steering,
    generate,
    norms_by_layer,
    residual_norm,
    score_continuations,
    steer,
)
from emolib.vectors import EmotionVectors

PROMPTS = ["The quick brown fox", "She felt", "He walked slowly home, hands in"]
CONTS = [" jumps over", " her heart race", " pockets"]
LAYER = 1


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads make these tiny matmuls ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _direction(seed: int = 1, d: int = 32) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def unit(tiny):
    return residual_norm(tiny, PROMPTS, LAYER)


def _left_padded(model, texts):
    ids = [model.tokenizer(t).input_ids for t in texts]
    width = max(map(len, ids))
    pad = model.tokenizer.pad_token_id
    inp = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    att = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    return inp, att, [len(x) for x in ids]


def _deltas(model, layer, run, steering, **kw):
    """What the steering hook added at ``layer``, per hook call: probes registered before and after it on the
    same hook point (forward hooks run in registration order)."""
    pre, post = [], []
    name = resid_post(layer)

    def grab(store):
        def fn(t, hook):
            store.append(t.detach().clone())
            return t

        return fn

    with model.bridge.hooks(fwd_hooks=[(name, grab(pre))]):
        with steer(model, steering, **kw) as h:
            with model.bridge.hooks(fwd_hooks=[(name, grab(post))]):
                run()
    assert len(pre) == len(post) > 0
    return [b - a for a, b in zip(pre, post)], h


def _no_hooks_left(model):
    for name, hp in model.bridge.hook_dict.items():
        assert not hp.fwd_hooks and not hp.bwd_hooks, name
        assert not hp._forward_hooks, name


# --- the record --------------------------------------------------------------------------------------


def test_steering_record_and_validation():
    s = Steering(3 * _direction(), [4, 5, 6, 7], 0.8, 10.0, positions="generated", label="calm")
    assert abs(float(s.direction.norm()) - 1) < 1e-6 and s.layers == (4, 5, 6, 7)
    assert s.band_rule == "split" and s.strength_per_layer == pytest.approx(0.2)
    assert s.added_norm_per_layer == pytest.approx(2.0) and s.total_added_norm == pytest.approx(8.0)
    each = Steering(_direction(), (4, 5, 6, 7), 0.8, 10.0, band_rule="each")
    assert each.added_norm_per_layer == pytest.approx(8.0) and each.total_added_norm == pytest.approx(32.0)
    assert Steering(_direction(), 3, -0.5, 2.0).added_norm_per_layer == pytest.approx(1.0)
    assert s.scaled(0.4).strength == 0.4 and s.to_dict()["positions"] == "generated"
    bad = [
        dict(strength=float("nan")),
        dict(strength=float("inf")),
        dict(norm=0.0),
        dict(norm=-1.0),
        dict(layers=()),
        dict(layers=(1, 1)),
        dict(layers=(-1,)),
        dict(layers=(1.0,)),
        dict(direction=torch.zeros(32)),
        dict(direction=torch.ones(2, 16)),
        dict(d_model=64),
        dict(positions="last"),
        dict(band_rule="sum"),
    ]
    for kw in bad:
        args = dict(direction=_direction(), layers=(1,), strength=1.0, norm=1.0) | kw
        with pytest.raises(ValueError):
            Steering(**args)


def test_from_vectors():
    ev = EmotionVectors(torch.randn(2, 32), ("calm", "afraid"), layer=2)
    s = Steering.from_vectors(ev, "Afraid", strength=0.5, norm=3.0)
    assert s.layers == (2,) and s.label == "afraid"
    assert torch.allclose(s.direction, ev["afraid"] / ev["afraid"].norm())


def test_steer_checks_model(tiny):
    with pytest.raises(ValueError, match="d_model"):
        with steer(tiny, Steering(_direction(d=16), (1,), 1.0, 1.0)):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with steer(tiny, Steering(_direction(), (3,), 1.0, 1.0)):
            pass
    _no_hooks_left(tiny)


# --- the unit of strength -------------------------------------------------------------------------------


def test_residual_norm_matches_extract(tiny, unit):
    acts = extract(tiny, PROMPTS, [LAYER], pooling="token", use_cache=False, progress=False)
    assert unit == pytest.approx(float(acts[LAYER].norm(dim=-1).mean()), rel=1e-5)
    by = norms_by_layer(tiny, PROMPTS, [0, 2], batch_size=2)
    assert set(by) == {0, 2} and all(v > 0 for v in by.values())


# --- hooks: no-op, firing, cleanup --------------------------------------------------------------------


def test_strength_zero_is_identity(tiny, unit):
    inp, att, _ = _left_padded(tiny, PROMPTS)
    s = Steering(_direction(), (0, 1, 2), 0.0, unit)
    with torch.no_grad():
        base = tiny.bridge(inp, attention_mask=att)
        with steer(tiny, s) as h:
            same = tiny.bridge(inp, attention_mask=att)
    assert h.calls == 3 and torch.equal(base, same)
    assert generate(tiny, PROMPTS, max_new_tokens=5) == generate(tiny, PROMPTS, max_new_tokens=5, steering=s)


@pytest.mark.parametrize("via", ["hf_generate", "bridge_generate"])
def test_bridge_hooks_fire_during_generation(tiny, via):
    """Hooks placed on the bridge fire at the prefill and at each KV-cached decode step ([batch, 1, d])."""
    inp, att, _ = _left_padded(tiny, PROMPTS)
    shapes = []

    def spy(t, hook):
        shapes.append(tuple(t.shape))
        return t

    with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=[(resid_post(LAYER), spy)]):
        if via == "hf_generate":
            tiny.hf_model.generate(
                input_ids=inp,
                attention_mask=att,
                max_new_tokens=4,
                min_new_tokens=4,
                do_sample=False,
                pad_token_id=tiny.tokenizer.pad_token_id,
            )
        else:
            tiny.bridge.generate(
                inp,
                attention_mask=att,
                max_new_tokens=4,
                do_sample=False,
                stop_at_eos=False,
                return_type="tokens",
                verbose=False,
            )
    assert shapes == [(3, inp.shape[1], 32)] + [(3, 1, 32)] * 3
    _no_hooks_left(tiny)


def test_handle_counts_calls(tiny, unit):
    inp, att, _ = _left_padded(tiny, PROMPTS)
    s = Steering(_direction(), (0, 2), 0.5, unit)
    with torch.no_grad(), steer(tiny, s) as h:
        tiny.hf_model.generate(
            input_ids=inp,
            attention_mask=att,
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            pad_token_id=tiny.tokenizer.pad_token_id,
        )
    assert h.calls == 2 * 3 and h.kinds == {"prefill": 2, "decode": 4}
    with torch.no_grad(), steer(tiny, s) as h:
        tiny.bridge(inp, attention_mask=att)
    assert h.calls == 2 and h.kinds == {"prefill": 2}


def test_no_hooks_remain_after_exit_or_exception(tiny, unit):
    inp = tiny.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        base = tiny.bridge(inp)
        s = Steering(_direction(), (0, 1, 2), 1.0, unit)
        with steer(tiny, [s, s.scaled(0.5)]) as h:
            assert len(tiny.bridge.hook_dict[resid_post(1)].fwd_hooks) == 2
            steered = tiny.bridge(inp)
        assert h.calls == 6 and not torch.allclose(base, steered)
        _no_hooks_left(tiny)
        with pytest.raises(KeyError):
            with steer(tiny, s):
                tiny.bridge(inp)
                raise KeyError("boom")
        _no_hooks_left(tiny)
        with pytest.raises(ValueError, match="token_mask"):  # an error raised inside a hook, mid-forward
            with steer(tiny, s, token_mask=torch.ones(2, 2, dtype=torch.bool)):
                tiny.bridge(inp)
        _no_hooks_left(tiny)
        assert torch.equal(tiny.bridge(inp), base)


# --- positions -------------------------------------------------------------------------------------------


def _nonzero(delta):
    return delta.abs().amax(-1) > 0  # [batch, seq]


def test_positions_under_kv_cache(tiny, unit):
    inp, att, lens = _left_padded(tiny, PROMPTS)
    B, W = inp.shape

    def run():
        with torch.no_grad():
            tiny.hf_model.generate(
                input_ids=inp,
                attention_mask=att,
                max_new_tokens=3,
                min_new_tokens=3,
                do_sample=False,
                pad_token_id=tiny.tokenizer.pad_token_id,
            )

    first = W - torch.tensor(lens)  # each row's first real token (its attention sink)
    pos = torch.arange(W)[None]
    real = att.bool()
    expect_prefill = {
        "all": real,
        "prompt": real & (pos > first[:, None]),
        "generated": (pos == W - 1).expand(B, W),
    }
    for mode, want in expect_prefill.items():
        s = Steering(_direction(), (LAYER,), 0.5, unit, positions=mode)
        deltas, h = _deltas(tiny, LAYER, run, s, prompt_lengths=W, attention_mask=att)
        assert h.kinds == {"prefill": 1, "decode": 2}
        assert deltas[0].shape == (B, W, 32) and torch.equal(_nonzero(deltas[0]), want), mode
        for d in deltas[1:]:  # decode steps: [B, 1, d]
            assert d.shape == (B, 1, 32)
            assert bool(_nonzero(d).all()) == (mode != "prompt") and bool(_nonzero(d).any()) == (
                mode != "prompt"
            )
        added = deltas[0][want]
        assert torch.allclose(added.norm(dim=-1), torch.full((len(added),), 0.5 * unit), rtol=1e-4)


def test_prompt_mode_skips_position_zero_by_default(tiny, unit):
    inp = tiny.tokenizer(PROMPTS[2], return_tensors="pt").input_ids
    s = Steering(_direction(), (LAYER,), 1.0, unit, positions="prompt")
    (d,), _ = _deltas(tiny, LAYER, lambda: tiny.bridge(inp), s)
    assert _nonzero(d)[0].tolist() == [False] + [True] * (inp.shape[1] - 1)
    g = Steering(_direction(), (LAYER,), 1.0, unit, positions="generated")
    (d,), _ = _deltas(tiny, LAYER, lambda: tiny.bridge(inp), g)
    assert _nonzero(d)[0].tolist() == [False] * (inp.shape[1] - 1) + [True]


@pytest.mark.parametrize("mode", ["all", "prompt", "generated"])
def test_decode_equals_full_pass(tiny, unit, mode):
    """The logits of a KV-cached steered generation equal one steered full pass over prompt + generated tokens
    with prompt_lengths set: no off-by-one (the first generated token is steered in "generated" mode)."""
    inp = tiny.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    P = inp.shape[1]
    s = Steering(_direction(), (0, 2), 2.0, unit, positions=mode)
    with torch.no_grad():
        with steer(tiny, s):
            out = tiny.hf_model.generate(
                input_ids=inp,
                max_new_tokens=4,
                min_new_tokens=4,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tiny.tokenizer.pad_token_id,
            )
        with steer(tiny, s, prompt_lengths=P):
            full = tiny.bridge(out.sequences)
        plain = tiny.bridge(out.sequences)
    step_logits = torch.stack(out.logits, 1)[0]  # [4, vocab]: predictions made at positions P-1 .. P+2
    assert torch.allclose(full[0, P - 1 : P + 3], step_logits, atol=1e-4)
    assert not torch.allclose(plain[0, P - 1 : P + 3], step_logits, atol=1e-3)


@pytest.mark.parametrize("mode", ["generated", "prompt"])
def test_no_cache_steps_inferred_without_prompt_lengths(tiny, unit, mode):
    """Without prompt_lengths the first call fixes the prompt length; longer later calls (generation without
    KV cache re-reads the whole sequence) are read as prompt + generated tokens."""
    inp = tiny.tokenizer(PROMPTS[2], return_tensors="pt").input_ids
    s = Steering(_direction(), (0, 1), 2.0, unit, positions=mode)
    runs = {}
    for cache in (True, False):
        with torch.no_grad(), steer(tiny, s) as h:
            runs[cache] = tiny.hf_model.generate(
                input_ids=inp,
                max_new_tokens=4,
                min_new_tokens=4,
                do_sample=False,
                use_cache=cache,
                pad_token_id=tiny.tokenizer.pad_token_id,
            )
        assert h.kinds == ({"prefill": 2, "decode": 6} if cache else {"prefill": 2, "no-cache": 6})
    assert torch.equal(runs[True], runs[False])


@pytest.mark.parametrize("mode", ["all", "generated", "prompt"])
def test_greedy_kv_cache_on_off_and_batching_agree(tiny, unit, mode):
    s = Steering(_direction(), (1,), 2.0, unit, positions=mode)
    cached = generate(tiny, PROMPTS, max_new_tokens=5, steering=s)
    assert cached == generate(tiny, PROMPTS, max_new_tokens=5, steering=s, use_cache=False)
    assert cached == generate(tiny, PROMPTS, max_new_tokens=5, steering=s, batch_size=1)
    assert cached != generate(tiny, PROMPTS, max_new_tokens=5)


def test_band_split_adds_total_strength(tiny, unit):
    inp = tiny.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    for rule, per_layer in [("split", 0.9 / 3), ("each", 0.9)]:
        s = Steering(_direction(), (0, 1, 2), 0.9, unit, band_rule=rule)
        total = 0.0
        for L in (0, 1, 2):
            (d,), _ = _deltas(tiny, L, lambda: tiny.bridge(inp), s)
            norms = d[0].norm(dim=-1)
            assert torch.allclose(norms, torch.full_like(norms, per_layer * unit), rtol=1e-4)
            assert torch.allclose(d[0] / norms[:, None], s.direction.expand_as(d[0]), atol=1e-4)
            total += float(norms[0])
        assert total == pytest.approx(s.total_added_norm, rel=1e-4)
    assert Steering(_direction(), (0, 1, 2), 0.9, unit).total_added_norm == pytest.approx(0.9 * unit)


# --- readouts --------------------------------------------------------------------------------------------


def test_planted_direction_moves_planted_readout(tiny, unit):
    """Steering the last layer along the unembedding row of a token raises that token's log-prob."""
    prompt, cont = "The quick brown", " cat"
    _, cont_ids = continuation_ids(tiny.tokenizer, prompt, cont)
    assert len(cont_ids) == 1
    w = tiny.hf_model.lm_head.weight[cont_ids[0]].detach() * tiny.hf_model.model.norm.weight.detach()
    last = tiny.info.n_layers - 1
    norm = residual_norm(tiny, PROMPTS, last)
    scores = [
        float(
            score_continuations(
                tiny, [prompt], [cont], steering=Steering(w, (last,), a, norm, positions="generated")
            )[0]
        )
        for a in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]
    assert all(b > a for a, b in zip(scores, scores[1:])), scores
    assert scores[0] == pytest.approx(float(score_continuations(tiny, [prompt], [cont])[0]))


def test_score_continuations_manual_and_padding_safe(tiny, unit):
    got = score_continuations(tiny, PROMPTS, CONTS, batch_size=8)
    p_ids, c_ids = continuation_ids(tiny.tokenizer, PROMPTS[1], CONTS[1])
    with torch.no_grad():
        logp = torch.log_softmax(tiny.bridge(torch.tensor([p_ids + c_ids])), -1)[0]
    want = sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(c_ids)) / len(c_ids)
    assert got[1] == pytest.approx(want, abs=1e-5)
    for mode in (None, "all", "prompt", "generated"):
        s = None if mode is None else Steering(_direction(), (0, 2), 1.5, unit, positions=mode)
        batched = score_continuations(tiny, PROMPTS, CONTS, steering=s, batch_size=8)
        single = [
            score_continuations(tiny, [p], [c], steering=s, batch_size=1)[0] for p, c in zip(PROMPTS, CONTS)
        ]
        assert abs(batched - single).max() < 1e-4, mode
        if s is not None:
            assert abs(batched - got).max() > 1e-3


def test_score_token_mask(tiny, unit):
    s = Steering(_direction(), (1,), 2.0, unit)
    n = [sum(map(len, continuation_ids(tiny.tokenizer, p, c))) for p, c in zip(PROMPTS, CONTS)]
    off = score_continuations(tiny, PROMPTS, CONTS, steering=s, token_mask=[[False] * k for k in n])
    assert abs(off - score_continuations(tiny, PROMPTS, CONTS)).max() < 1e-5
    on = score_continuations(tiny, PROMPTS, CONTS, steering=s, token_mask=[[True] * k for k in n])
    assert abs(on - score_continuations(tiny, PROMPTS, CONTS, steering=s)).max() < 1e-5
    with pytest.raises(ValueError, match="token_mask"):
        score_continuations(tiny, PROMPTS, CONTS, steering=s, token_mask=[[True] * (k + 1) for k in n])


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    a = generate(tiny, PROMPTS, max_new_tokens=5, do_sample=True, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a == generate(tiny, PROMPTS, max_new_tokens=5, do_sample=True, seed=3)
    assert a != generate(tiny, PROMPTS, max_new_tokens=5, do_sample=True, seed=4)
