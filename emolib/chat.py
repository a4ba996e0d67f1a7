"""Conversations to model input: the one place that formats chats, finds the answer and tokenises.

Two formats:

``"template"``
    The tokenizer's own chat template (``tokenizer.apply_chat_template``), e.g. ChatML for
    SmolLM2-135M-Instruct. The generation prompt is whatever the template appends for
    ``add_generation_prompt=True`` (ChatML: ``<|im_start|>assistant\\n``); a prefill follows it directly.

``"plain"`` (:data:`PLAIN`)
    Our transcript format for models without a chat template (Gemma-3-270m base), also usable on a chat
    model to read it through the base model's wrapper::

        {system}                      <- only if there is a system message

        Human: {user content}

        Assistant: {assistant content}

        Human: {user content}

        Assistant:                    <- the generation prompt

    Parts (system text, then one ``Human: ...`` / ``Assistant: ...`` per turn) are joined by a blank line
    (``"\\n\\n"``); the generation prompt is ``"\\n\\nAssistant:"``, so the answer begins right after
    ``"Assistant:"`` (its leading space belongs to the answer). A prefill is appended after a single space:
    ``"Assistant: ("``. One user message gives ``"Human: {message}\\n\\nAssistant:"``, the format
    the book has always used for base models.

``"auto"`` picks ``"template"`` when the tokenizer has a chat template, else ``"plain"``.

Tokenisation (:func:`encode`) adds the tokenizer's special tokens (Gemma: ``<bos>``) unless the text
already starts with the BOS string, as a chat template that writes ``{{ bos_token }}`` does; so a rendered
prompt never gets a second BOS, and SmolLM2 (whose BOS is ``<|im_start|>``) never gets a duplicate
``<|im_start|>``.

Token/character boundaries: a token is on the prompt side of a character boundary iff it ends at or before
it; the first token that ends after the boundary (including one that straddles it, when BPE merges
characters across it) starts the answer/continuation. :class:`Prompt` and :func:`continuation_ids` both
use this rule, so the answer's tokens are exactly the ones a model scores for the answer text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

Role = Literal["system", "user", "assistant"]
Format = Literal["auto", "template", "plain"]
ROLES: tuple[str, ...] = get_args(Role)
FORMATS: tuple[str, ...] = get_args(Format)


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise ValueError(f"content must be a string, got {type(self.content).__name__}")

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


MessageLike = Message | Mapping[str, Any]


@dataclass(frozen=True)
class PlainFormat:
    """The plain transcript format's pieces (see the module docstring)."""

    user: str = "Human:"
    assistant: str = "Assistant:"
    sep: str = "\n\n"

    def turn(self, m: Message) -> str:
        if m.role == "system":
            return m.content
        return f"{self.user if m.role == 'user' else self.assistant} {m.content}"


PLAIN = PlainFormat()


@dataclass(frozen=True)
class Prompt:
    """A rendered, tokenised conversation and where the assistant's (last) answer begins.

    text: the exact string; ids: its token ids (from :func:`encode`); answer_char: character index where
    the answer begins (right after the last assistant marker); answer_token: index of the first answer
    token, i.e. the first token ending after ``answer_char`` (``len(ids)`` when nothing of the answer is
    written yet); fmt: the format actually used.
    """

    text: str
    ids: tuple[int, ...]
    answer_char: int
    answer_token: int
    fmt: Literal["template", "plain"]

    @property
    def prompt_ids(self) -> tuple[int, ...]:
        """The tokens before the answer."""
        return self.ids[: self.answer_token]

    @property
    def answer_ids(self) -> tuple[int, ...]:
        """The tokens of the answer written so far (the prefill)."""
        return self.ids[self.answer_token :]


# --- formatting ----------------------------------------------------------------------------------


def uses_template(tokenizer: Any) -> bool:
    """Whether the tokenizer has a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_format(tokenizer: Any, fmt: str = "auto") -> Literal["template", "plain"]:
    """``"auto"`` -> ``"template"`` if the tokenizer has one, else ``"plain"``; checks ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if fmt == "auto":
        return "template" if uses_template(tokenizer) else "plain"
    if fmt == "template" and not uses_template(tokenizer):
        raise ValueError("fmt='template' but this tokenizer has no chat template (use 'plain' or 'auto')")
    return fmt  # type: ignore[return-value]


def as_messages(messages: Sequence[MessageLike]) -> list[Message]:
    """Validate and normalise messages (:class:`Message` or ``{"role", "content"}`` dicts). A system
    message may only come first; the list must not be empty."""
    if isinstance(messages, (str, bytes, Mapping, Message)):
        raise ValueError("messages must be a sequence of messages, not a single one")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            msg = m
        elif isinstance(m, Mapping):
            if set(m) - {"role", "content"} or "role" not in m or "content" not in m:
                raise ValueError(
                    f"message {i}: a dict needs exactly the keys 'role' and 'content', got {sorted(m)}"
                )
            try:
                msg = Message(m["role"], m["content"])
            except ValueError as e:
                raise ValueError(f"message {i}: {e}") from None
        else:
            raise ValueError(
                f"message {i}: expected a Message or a {{'role', 'content'}} dict, got {type(m).__name__}"
            )
        if msg.role == "system" and i > 0:
            raise ValueError(f"message {i}: a system message may only come first")
        out.append(msg)
    if not out or (len(out) == 1 and out[0].role == "system"):
        raise ValueError("messages must hold at least one user or assistant message")
    return out


def render(
    tokenizer: Any,
    messages: Sequence[MessageLike],
    *,
    add_generation_prompt: bool = True,
    prefill: str = "",
    fmt: Format = "auto",
) -> str:
    """The exact text the model reads for ``messages``.

    add_generation_prompt: end with the start of the assistant's turn (not allowed after an assistant
        message). prefill: the beginning of the assistant's answer, already written (e.g. ``"("`` for an
        option letter); needs the generation prompt. fmt: see the module docstring.
    """
    kind = resolve_format(tokenizer, fmt)
    msgs = as_messages(messages)
    if not isinstance(prefill, str):
        raise ValueError(f"prefill must be a string, got {type(prefill).__name__}")
    if prefill and not add_generation_prompt:
        raise ValueError(
            "A prefill needs add_generation_prompt=True (it is the start of the assistant's answer)"
        )
    if add_generation_prompt and msgs[-1].role == "assistant":
        raise ValueError(
            "The last message is the assistant's: render it with add_generation_prompt=False, or pass its "
            "text as a prefill"
        )
    if kind == "template":
        text = tokenizer.apply_chat_template(
            [m.as_dict() for m in msgs], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return text + prefill if add_generation_prompt else text
    text = PLAIN.sep.join(PLAIN.turn(m) for m in msgs)
    if add_generation_prompt:
        text += PLAIN.sep + PLAIN.assistant + (" " + prefill if prefill else "")
    return text


def user_turn(
    tokenizer: Any, message: str, *, system: str | None = None, prefill: str = "", fmt: Format = "auto"
) -> str:
    """One user message (after an optional system message) followed by the start of the assistant's turn."""
    msgs = ([Message("system", system)] if system is not None else []) + [Message("user", message)]
    return render(tokenizer, msgs, prefill=prefill, fmt=fmt)


def dialogue(
    tokenizer: Any,
    turns: Sequence[tuple[str, str]] | Sequence[MessageLike],
    *,
    system: str | None = None,
    fmt: Format = "auto",
) -> str:
    """A whole conversation, without a generation prompt (transcripts, neutral dialogues).

    turns: ``(user, assistant)`` exchanges, or messages (:class:`Message` / dicts); system: an optional
    system message put first.
    """
    if isinstance(turns, (str, bytes, Mapping, Message)):
        raise ValueError("turns must be a sequence of (user, assistant) pairs or of messages")
    msgs: list[MessageLike] = [Message("system", system)] if system is not None else []
    for i, t in enumerate(turns):
        if isinstance(t, (Message, Mapping)):
            msgs.append(t)
        elif isinstance(t, (tuple, list)) and len(t) == 2:
            user, assistant = t
            if not (isinstance(user, str) and isinstance(assistant, str)):
                raise ValueError(f"turn {i}: a (user, assistant) pair must hold two strings")
            msgs += [Message("user", user), Message("assistant", assistant)]
        else:
            raise ValueError(f"turn {i}: expected a (user, assistant) pair or a message, got {t!r}")
    return render(tokenizer, msgs, add_generation_prompt=False, fmt=fmt)


def assistant_marker(tokenizer: Any, fmt: Format = "auto") -> str:
    """The text put right before the assistant's reply (ChatML: ``<|im_start|>assistant\\n``; plain:
    ``"Assistant:"``). For a template, derived by diffing ``add_generation_prompt`` True/False."""
    if resolve_format(tokenizer, fmt) == "plain":
        return PLAIN.assistant
    msgs = [{"role": "user", "content": "\x00"}]
    with_gen = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    if not with_gen.startswith(without) or with_gen == without:
        raise ValueError("Cannot derive the assistant header from this chat template")
    return with_gen[len(without) :]


def answer_start(tokenizer: Any, text: str, fmt: Format = "auto") -> int:
    """Character index where the last assistant answer in ``text`` begins (right after the last assistant
    marker). ValueError if the marker is absent (e.g. ``fmt`` does not match how ``text`` was rendered)."""
    marker = assistant_marker(tokenizer, fmt)
    i = text.rfind(marker)
    if i < 0:
        raise ValueError(f"No assistant marker {marker!r} in the text (was it rendered with this fmt?)")
    return i + len(marker)


# --- tokenisation --------------------------------------------------------------------------------


def _adds_specials(tokenizer: Any, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def encode_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and their character spans, under :func:`encode`'s BOS rule."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    enc = tokenizer(text, add_special_tokens=_adds_specials(tokenizer, text), return_offsets_mapping=True)
    return list(enc["input_ids"]), [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text``, adding the tokenizer's special tokens (its BOS) unless the text already
    starts with the BOS string (as a template-rendered prompt that writes it does)."""
    return encode_with_offsets(tokenizer, text)[0]


def split_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the first token ending after character ``char`` (``len(offsets)`` if none): tokens before
    it end at or before ``char``; a token straddling ``char`` is on the far side. Zero-width special
    tokens (offsets (0, 0)) before any text stay on the near side."""
    for i, (_, end) in enumerate(offsets):
        if end > char:
            return i
    return len(offsets)


def build(
    tokenizer: Any, messages: Sequence[MessageLike], *, prefill: str = "", fmt: Format = "auto"
) -> Prompt:
    """Render ``messages`` with the generation prompt (and ``prefill``), tokenise, and locate the answer."""
    kind = resolve_format(tokenizer, fmt)
    text = render(tokenizer, messages, prefill=prefill, fmt=kind)
    ids, offs = encode_with_offsets(tokenizer, text)
    # The answer begins after the marker the generation prompt itself wrote (the last one in the text).
    answer_char = answer_start(tokenizer, text[: len(text) - len(prefill)] if prefill else text, kind)
    return Prompt(
        text=text, ids=tuple(ids), answer_char=answer_char, answer_token=split_at(offs, answer_char), fmt=kind
    )


def continuation_ids(tokenizer: Any, prompt_text: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(prompt_ids, cont_ids)``: ``prompt_text + continuation`` tokenised jointly (:func:`encode`) and
    split where the continuation begins, so ``prompt_ids + cont_ids == encode(prompt_text + continuation)``
    and ``cont_ids`` are exactly the tokens a model scores for the continuation. A token straddling the
    boundary (BPE merging across it) belongs to the continuation, so ``prompt_ids`` may then differ from
    ``encode(prompt_text)``."""
    if not continuation:
        raise ValueError("continuation is empty: nothing to score")
    ids, offs = encode_with_offsets(tokenizer, prompt_text + continuation)
    k = split_at(offs, len(prompt_text))
    if k == 0:
        raise ValueError(
            "No prompt token precedes the continuation (empty prompt and no BOS): nothing to condition on"
        )
    return ids[:k], ids[k:]
