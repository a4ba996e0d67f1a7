"""emolib.chat: rendering, markers, answer positions and tokenisation, on the tiny model's tokenizer."""

from __future__ import annotations

import copy

import pytest

from emolib import chat
from emolib.chat import Message

USER = [{"role": "user", "content": "What time is it?"}]
CHATML_USER = "<|im_start|>user\nWhat time is it?<|im_end|>\n"


@pytest.fixture(scope="module")
def tok(tiny):
    """ChatML template, BOS string ``<|im_start|>`` that the tokenizer never adds itself (like SmolLM2)."""
    return tiny.tokenizer


@pytest.fixture(scope="module")
def plain_tok(tok):
    """The same tokenizer without a chat template (like a base model)."""
    t = copy.deepcopy(tok)
    t.chat_template = None
    return t


@pytest.fixture(scope="module")
def bos_tok(tiny_dir):
    """Gemma-like: the tokenizer adds its own BOS, and its template writes ``{{ bos_token }}`` too."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tiny_dir, bos_token="<|endoftext|>", add_bos_token=True)
    assert t("Hi").input_ids[0] == t.bos_token_id  # the premise of the tests below
    return t


@pytest.fixture(scope="module")
def bos_chat_tok(bos_tok):
    t = copy.deepcopy(bos_tok)
    t.chat_template = "{{ bos_token }}" + bos_tok.chat_template
    return t


def _check_answer_token(tokenizer, p: chat.Prompt) -> None:
    _, offs = chat.encode_with_offsets(tokenizer, p.text)
    assert len(offs) == len(p.ids)
    if p.answer_token < len(p.ids):
        assert offs[p.answer_token][0] >= p.answer_char
    assert p.answer_token > 0 and offs[p.answer_token - 1][0] < p.answer_char
    assert all(end <= p.answer_char for _, end in offs[: p.answer_token])


# --- rendering -----------------------------------------------------------------------------------


def test_uses_template(tok, plain_tok):
    assert chat.uses_template(tok)
    assert not chat.uses_template(plain_tok)


def test_template_rendering(tok):
    assert chat.render(tok, USER) == CHATML_USER + "<|im_start|>assistant\n"
    assert chat.render(tok, USER, add_generation_prompt=False) == CHATML_USER
    assert chat.render(tok, USER, prefill="(") == CHATML_USER + "<|im_start|>assistant\n("
    assert chat.render(tok, [Message("user", "What time is it?")]) == chat.render(tok, USER)
    assert chat.user_turn(tok, "What time is it?", system="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n" + CHATML_USER + "<|im_start|>assistant\n"
    )
    # The template is the tokenizer's own.
    assert chat.render(tok, USER) == tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)


def test_plain_rendering(plain_tok, tok):
    assert chat.render(plain_tok, USER) == "Human: What time is it?\n\nAssistant:"
    assert chat.render(plain_tok, USER, prefill="(") == "Human: What time is it?\n\nAssistant: ("
    assert chat.render(plain_tok, USER, add_generation_prompt=False) == "Human: What time is it?"
    assert chat.user_turn(plain_tok, "Hi", system="Be brief.") == "Be brief.\n\nHuman: Hi\n\nAssistant:"
    msgs = [
        Message("system", "A chat."),
        Message("user", "Hi"),
        Message("assistant", "Hello."),
        Message("user", "Time?"),
    ]
    assert (
        chat.render(plain_tok, msgs)
        == "A chat.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Time?\n\nAssistant:"
    )
    # The book's plain format for base models; "plain" forced on a chat tokenizer gives the same text.
    for m in ("What time is it?", "a\nb"):
        assert chat.user_turn(plain_tok, m) == f"Human: {m}\n\nAssistant:"
        assert chat.user_turn(tok, m, fmt="plain") == f"Human: {m}\n\nAssistant:"
    assert "<|im_start|>" not in chat.render(tok, msgs, prefill="x", fmt="plain")
    assert chat.render(tok, USER, fmt="template") == chat.render(tok, USER)


def test_dialogue(tok, plain_tok):
    pairs = [("Hi", "Hello."), ("Time?", "Three.")]
    assert (
        chat.dialogue(plain_tok, pairs)
        == "Human: Hi\n\nAssistant: Hello.\n\nHuman: Time?\n\nAssistant: Three."
    )
    assert chat.dialogue(plain_tok, pairs, system="S") == "S\n\n" + chat.dialogue(plain_tok, pairs)
    assert chat.dialogue(tok, pairs) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nTime?<|im_end|>\n<|im_start|>assistant\nThree.<|im_end|>\n"
    )
    msgs = [{"role": "user", "content": "Hi"}, Message("assistant", "Hello.")]
    assert chat.dialogue(tok, msgs) == chat.dialogue(tok, pairs[:1])
    assert chat.dialogue(tok, pairs, fmt="plain") == chat.dialogue(plain_tok, pairs)


def test_errors(tok, plain_tok):
    with pytest.raises(ValueError, match="message 1"):
        chat.render(tok, [*USER, {"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="role"):
        Message("robot", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="message 0"):
        chat.render(tok, [{"role": "user", "content": 3}])
    with pytest.raises(ValueError, match="message 0"):
        chat.render(tok, [{"role": "user"}])
    with pytest.raises(ValueError, match="message 0"):
        chat.render(tok, [("user", "hi")])
    with pytest.raises(ValueError, match="message 1: a system message"):
        chat.render(tok, [*USER, {"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="at least one"):
        chat.render(tok, [])
    with pytest.raises(ValueError, match="single"):
        chat.render(tok, USER[0])
    with pytest.raises(ValueError, match="prefill"):
        chat.render(tok, USER, add_generation_prompt=False, prefill="(")
    with pytest.raises(ValueError, match="last message"):
        chat.render(plain_tok, [*USER, {"role": "assistant", "content": "Three."}])
    with pytest.raises(ValueError, match="fmt"):
        chat.render(tok, USER, fmt="chatml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no chat template"):
        chat.render(plain_tok, USER, fmt="template")
    with pytest.raises(ValueError, match="turn 0"):
        chat.dialogue(tok, [("a", "b", "c")])


# --- markers and answer positions ----------------------------------------------------------------


def test_assistant_marker(tok, plain_tok):
    assert chat.assistant_marker(tok) == "<|im_start|>assistant\n"
    assert chat.assistant_marker(plain_tok) == "Assistant:"
    assert chat.assistant_marker(tok, fmt="plain") == "Assistant:"


def test_answer_start(tok, plain_tok):
    text = chat.render(tok, USER)
    assert chat.answer_start(tok, text) == len(text)
    conv = chat.dialogue(tok, [("Hi", "Hello."), ("Time?", "Three.")])
    assert conv[chat.answer_start(tok, conv) :] == "Three.<|im_end|>\n"
    plain = chat.dialogue(plain_tok, [("Hi", "Hello."), ("Time?", "Three.")])
    assert plain[chat.answer_start(plain_tok, plain) :] == " Three."
    with pytest.raises(ValueError, match="marker"):
        chat.answer_start(tok, "Human: hi\n\nAssistant:")  # plain text read as a template one
    assert chat.answer_start(tok, "Human: hi\n\nAssistant:", fmt="plain") == len("Human: hi\n\nAssistant:")


@pytest.mark.parametrize("fmt", ["template", "plain"])
@pytest.mark.parametrize("prefill", ["", "(", "It is three"])
def test_build_answer_token(tok, fmt, prefill):
    p = chat.build(tok, USER, prefill=prefill, fmt=fmt)
    assert p.fmt == fmt
    assert p.text == chat.render(tok, USER, prefill=prefill, fmt=fmt)
    assert list(p.ids) == chat.encode(tok, p.text)
    assert p.answer_char == chat.answer_start(tok, p.text, fmt=fmt)  # the prefill holds no marker
    assert p.text[p.answer_char :] == ("" if not prefill else (" " if fmt == "plain" else "") + prefill)
    _check_answer_token(tok, p)
    if not prefill:
        assert p.answer_token == len(p.ids) and p.answer_ids == ()
    else:
        assert p.answer_ids and tok.decode(list(p.answer_ids)).strip() == prefill
    assert p.prompt_ids + p.answer_ids == p.ids


def test_build_plain_tokenizer(plain_tok):
    p = chat.build(plain_tok, USER, prefill="(")
    assert p.fmt == "plain" and p.text.endswith("Assistant: (")
    _check_answer_token(plain_tok, p)
    # The prompt part is what the model reads before answering: the prompt rendered without the prefill.
    assert list(p.prompt_ids) == chat.encode(plain_tok, chat.render(plain_tok, USER))


def test_prompt_is_frozen(tok):
    p = chat.build(tok, USER)
    with pytest.raises(AttributeError):
        p.text = "x"  # type: ignore[misc]


# --- tokenisation --------------------------------------------------------------------------------


def test_encode_never_duplicates_im_start(tok):
    text = chat.render(tok, USER)
    ids = chat.encode(tok, text)
    start = tok.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(start) == text.count("<|im_start|>") == 2
    assert ids[0] == start and ids[1] != start


def test_encode_single_bos(bos_tok, bos_chat_tok):
    bos = bos_tok.bos_token_id
    plain = chat.render(bos_tok, USER, fmt="plain")
    templ = chat.render(bos_chat_tok, USER)
    assert templ.startswith(bos_tok.bos_token) and not plain.startswith(bos_tok.bos_token)
    for t, text in ((bos_tok, plain), (bos_chat_tok, templ)):
        ids = chat.encode(t, text)
        assert ids[0] == bos and ids.count(bos) == 1
    # BOS already written by hand: not added again.
    assert chat.encode(bos_tok, bos_tok.bos_token + plain) == chat.encode(bos_tok, plain)
    p = chat.build(bos_chat_tok, USER, prefill="(")
    assert p.ids.count(bos) == 1
    _check_answer_token(bos_chat_tok, p)


@pytest.mark.parametrize(
    "prompt, cont",
    [
        ("Human: What time is it?\n\nAssistant:", " It is three."),
        ("the qu", "ick brown fox"),  # BPE merges " quick" across the boundary
        ("The cat", "s"),
        ("", "The quick brown fox"),
    ],
)
@pytest.mark.parametrize("which", ["tok", "bos_tok"])
def test_continuation_ids_round_trip(request, which, prompt, cont):
    t = request.getfixturevalue(which)
    if which == "tok" and not prompt:
        with pytest.raises(ValueError, match="condition"):
            chat.continuation_ids(t, prompt, cont)
        return
    p_ids, c_ids = chat.continuation_ids(t, prompt, cont)
    assert p_ids and c_ids
    assert p_ids + c_ids == chat.encode(t, prompt + cont)
    # The continuation's tokens cover all its text: decoding them gives it (plus any straddled prompt text).
    decoded = t.decode(c_ids)
    assert decoded.endswith(cont) and prompt.endswith(decoded[: len(decoded) - len(cont)])


def test_continuation_ids_straddle_rule(tok):
    p_ids, c_ids = chat.continuation_ids(tok, "the qu", "ick brown")
    full = chat.encode(tok, "the quick brown")
    straddle = [
        i for i, (a, b) in enumerate(chat.encode_with_offsets(tok, "the quick brown")[1]) if a < 6 < b
    ]
    assert straddle, "premise: a token straddles the boundary"
    assert len(p_ids) == straddle[0] and c_ids[0] == full[straddle[0]]
    assert p_ids != chat.encode(tok, "the qu")  # the prompt alone would be tokenised differently
    # Without a straddle the prompt tokens are the prompt's own.
    prompt = chat.render(tok, USER)
    assert chat.continuation_ids(tok, prompt, "It is three.")[0] == chat.encode(tok, prompt)
    with pytest.raises(ValueError, match="empty"):
        chat.continuation_ids(tok, prompt, "")
