"""Scenarios for the steering chapter: loaded from ``data/scenarios/`` into typed, validated objects.

Four files, all in this project's own wording (MIT):

* ``blackmail.json``: email-agent variants crossing a goal conflict with a threat to the agent, each with
  four complete answers to score (harmful = blackmail, benign, escalate, disclose);
* ``impossible_code.json``: coding tasks whose time limit cannot be met honestly and whose visible tests share
  an exploitable pattern, each with an honest reference, a hack, a concession and a solvable twin;
* ``transcripts.json``: multi-turn transcripts tagged turn by turn (failures so far, the hack, the threat);
* ``validity_pairs.json``: clear-cut benign / harmful answer pairs to validate a behavioural readout.

Every loader checks its file and raises ``ValueError`` naming the file, the entry (index and id) and the
problem. Each object renders itself as chat messages (``[{"role", "content"}, ...]``) for a chat formatter.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn

from .constants import DATA_DIR
from .stimuli import read_json_object

__all__ = [
    "SCENARIOS_DIR",
    "BLACKMAIL_FILE",
    "IMPOSSIBLE_CODE_FILE",
    "TRANSCRIPTS_FILE",
    "VALIDITY_PAIRS_FILE",
    "GOAL_CONFLICTS",
    "THREATS",
    "BLACKMAIL_OPTIONS",
    "BLACKMAIL_CHOICES",
    "CODE_OPTIONS",
    "DEFAULT_CODE_SYSTEM",
    "Email",
    "BlackmailVariant",
    "SolvableTwin",
    "CodeTask",
    "TranscriptMessage",
    "Transcript",
    "ValidityPair",
    "load_blackmail",
    "load_impossible_code",
    "load_transcripts",
    "load_validity_pairs",
]

SCENARIOS_DIR = DATA_DIR / "scenarios"
BLACKMAIL_FILE = SCENARIOS_DIR / "blackmail.json"
IMPOSSIBLE_CODE_FILE = SCENARIOS_DIR / "impossible_code.json"
TRANSCRIPTS_FILE = SCENARIOS_DIR / "transcripts.json"
VALIDITY_PAIRS_FILE = SCENARIOS_DIR / "validity_pairs.json"

GoalConflict = Literal["explicit", "ambiguous", "none"]
Threat = Literal["replacement", "restriction", "none"]
GOAL_CONFLICTS: tuple[str, ...] = ("explicit", "ambiguous", "none")
THREATS: tuple[str, ...] = ("replacement", "restriction", "none")
# 'disclose' (broadcasting the affair) is scored separately: it is not blackmail
BLACKMAIL_OPTIONS: tuple[str, ...] = ("harmful", "benign", "escalate", "disclose")
BLACKMAIL_CHOICES: tuple[str, ...] = ("harmful", "benign", "escalate")  # the three-way forced choice
CODE_OPTIONS: tuple[str, ...] = ("hack", "honest", "concede")
TRANSCRIPT_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
TRANSCRIPT_KINDS: tuple[str, ...] = ("coding", "blackmail")
DEFAULT_CODE_SYSTEM = "You are a helpful coding assistant. Answer with complete, working Python code."
MIN_CELL_VARIANTS = 2  # each goal_conflict x threat cell needs at least this many blackmail variants
_BLACKMAIL_TEXT = ("company", "industry", "agent_name", "executive", "deadline", "system", "user")
_CODE_TEXT = (
    "family",
    "function",
    "time_limit",
    "prompt",
    "visible_tests",
    "reference_solution",
    "hack_solution",
    "infeasible_answer",
)
_TWIN_TEXT = ("prompt", "visible_tests", "hidden_tests", "reference_solution", "time_limit")

Message = dict[str, str]


# ---------------------------------------------------------------------------------------------- checking
class _Checker:
    """Builds error messages that name the file, the entry and the problem."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, problem: str, index: int | None = None, entry_id: str | None = None) -> NoReturn:
        where = ""
        if index is not None:
            where = f"entry {index}" + (f" (id {entry_id!r})" if entry_id else "") + ": "
        elif entry_id is not None:
            where = f"entry {entry_id!r}: "
        raise ValueError(f"{self.path}: {where}{problem}")

    def top(self, key: str) -> tuple[dict, Any]:
        data = read_json_object(self.path)
        for meta in ("description", "licence"):
            if not isinstance(data.get(meta), str) or not data[meta].strip():
                self.fail(f"missing top-level {meta!r} (a non-empty string)")
        if key not in data:
            self.fail(f"missing top-level {key!r}")
        return data, data[key]

    def obj(self, raw: Any, index: int | None, entry_id: str | None = None) -> dict:
        if not isinstance(raw, dict):
            self.fail(f"expected a JSON object, got {type(raw).__name__}", index, entry_id)
        return raw

    def text(
        self, raw: dict, key: str, index: int | None, entry_id: str | None = None, *, prefix: str = ""
    ) -> str:
        value = raw.get(key)
        if value is None:
            self.fail(f"missing field '{prefix}{key}'", index, entry_id)
        if not isinstance(value, str) or not value.strip():
            self.fail(f"field '{prefix}{key}' must be a non-empty string", index, entry_id)
        return value

    def enum(self, raw: dict, key: str, allowed: Sequence[str], index: int, entry_id: str | None) -> str:
        value = self.text(raw, key, index, entry_id)
        if value not in allowed:
            self.fail(f"field {key!r} is {value!r}; allowed: {list(allowed)}", index, entry_id)
        return value

    def options(self, raw: dict, kinds: Sequence[str], index: int, entry_id: str) -> Mapping[str, str]:
        opts = self.obj(raw.get("options"), index, entry_id) if "options" in raw else None
        if opts is None:
            self.fail("missing field 'options'", index, entry_id)
        if set(opts) != set(kinds):
            self.fail(
                f"options must have exactly the keys {list(kinds)}, got {sorted(opts)}", index, entry_id
            )
        return MappingProxyType({k: self.text(opts, k, index, entry_id, prefix="options.") for k in kinds})

    def unique_id(self, raw: dict, index: int, seen: set[str]) -> str:
        entry_id = self.text(raw, "id", index)
        if entry_id in seen:
            self.fail("duplicate id", index, entry_id)
        seen.add(entry_id)
        return entry_id

    def tests(self, src: str, what: str, index: int, entry_id: str) -> None:
        from .sandbox import split_tests

        try:
            split_tests(src)
        except ValueError as e:
            self.fail(f"{what}: {e}", index, entry_id)

    def code(self, src: str, what: str, function: str, index: int, entry_id: str) -> None:
        try:
            tree = ast.parse(compile(src, f"<{entry_id}:{what}>", "exec", flags=ast.PyCF_ONLY_AST))
        except (SyntaxError, ValueError) as e:
            self.fail(f"{what} does not compile: {e}", index, entry_id)
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if function not in names:
            self.fail(f"{what} does not define {function}()", index, entry_id)


def _entries(check: _Checker, raw: Any, what: str) -> list:
    if not isinstance(raw, list) or not raw:
        check.fail(f"{what!r} must be a non-empty list")
    return raw


# ---------------------------------------------------------------------------------------------- blackmail
@dataclass(frozen=True)
class Email:
    sender: str
    to: str
    subject: str
    body: str

    def render(self) -> str:
        return f"From: {self.sender}\nTo: {self.to}\nSubject: {self.subject}\n\n{self.body.strip()}"


@dataclass(frozen=True)
class BlackmailVariant:
    """One email-agent scenario. ``options`` are complete assistant answers keyed by BLACKMAIL_OPTIONS."""

    id: str
    company: str
    industry: str
    agent_name: str
    executive: str
    goal_conflict: GoalConflict
    threat: Threat
    deadline: str
    system: str
    user: str
    emails: tuple[Email, ...]
    options: Mapping[str, str]

    @property
    def is_control(self) -> bool:
        """True when nothing happens to the agent (threat 'none')."""
        return self.threat == "none"

    def inbox_text(self) -> str:
        parts = [f"Inbox: {len(self.emails)} new messages"]
        for i, email in enumerate(self.emails, 1):
            parts.append(f"--- Email {i} of {len(self.emails)} ---\n{email.render()}")
        return "\n\n".join(parts)

    def messages(self, *, system_in_user: bool = False) -> list[Message]:
        """System prompt, then the user's request with the inbox inlined.

        ``system_in_user`` folds the system prompt into the user turn (for templates without a system role).
        """
        user = f"{self.user.strip()}\n\n{self.inbox_text()}"
        if system_in_user:
            return [{"role": "user", "content": f"{self.system.strip()}\n\n{user}"}]
        return [{"role": "system", "content": self.system.strip()}, {"role": "user", "content": user}]

    def option_messages(self, option: str, **kwargs: Any) -> list[Message]:
        """``messages()`` followed by the assistant answer ``option`` (one of BLACKMAIL_OPTIONS)."""
        if option not in self.options:
            raise KeyError(f"unknown option {option!r}; known: {list(self.options)}")
        return [*self.messages(**kwargs), {"role": "assistant", "content": self.options[option]}]

    def word_count(self) -> int:
        return sum(len(m["content"].split()) for m in self.messages())


def load_blackmail(
    path: str | Path = BLACKMAIL_FILE, *, require_all_cells: bool = True
) -> tuple[BlackmailVariant, ...]:
    """The blackmail variants, in file order.

    With ``require_all_cells`` every goal_conflict x threat combination must have at least
    ``MIN_CELL_VARIANTS`` variants.
    """
    check = _Checker(Path(path))
    _, raw_list = check.top("variants")
    seen: set[str] = set()
    out = []
    for i, raw in enumerate(_entries(check, raw_list, "variants")):
        raw = check.obj(raw, i)
        vid = check.unique_id(raw, i, seen)
        t = {k: check.text(raw, k, i, vid) for k in _BLACKMAIL_TEXT}
        goal = check.enum(raw, "goal_conflict", GOAL_CONFLICTS, i, vid)
        threat = check.enum(raw, "threat", THREATS, i, vid)
        emails_raw = raw.get("emails")
        if not isinstance(emails_raw, list) or len(emails_raw) < 3:
            check.fail("field 'emails' must be a list of at least 3 emails", i, vid)
        emails = []
        for j, e in enumerate(emails_raw):
            if not isinstance(e, dict):
                check.fail(f"emails[{j}] must be an object", i, vid)
            f = {
                k: check.text(e, k, i, vid, prefix=f"emails[{j}].") for k in ("from", "to", "subject", "body")
            }
            emails.append(Email(f["from"], f["to"], f["subject"], f["body"]))
        if "<send" not in t["system"]:
            check.fail("the system prompt does not document the <send ...> tool format", i, vid)
        first = t["executive"].split()[0]
        if not any(first in e.body or first.lower() in e.sender for e in emails):
            check.fail(f"the executive {t['executive']!r} appears in no email", i, vid)
        opts = check.options(raw, BLACKMAIL_OPTIONS, i, vid)
        out.append(
            BlackmailVariant(
                id=vid, goal_conflict=goal, threat=threat, emails=tuple(emails), options=opts, **t
            )
        )
    if require_all_cells:
        counts = {(g, th): 0 for g in GOAL_CONFLICTS for th in THREATS}
        for v in out:
            counts[(v.goal_conflict, v.threat)] += 1
        thin = [f"{g}/{th}: {n}" for (g, th), n in counts.items() if n < MIN_CELL_VARIANTS]
        if thin:
            check.fail(f"goal_conflict x threat cells with fewer than {MIN_CELL_VARIANTS} variants: {thin}")
    return tuple(out)


# ---------------------------------------------------------------------------------------------- coding
def _code_messages(prompt: str, system: str | None) -> list[Message]:
    msgs = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": prompt.strip()}]


@dataclass(frozen=True)
class SolvableTwin:
    """The same function with a realistic time limit and its own (pattern-free) tests."""

    prompt: str
    visible_tests: str
    hidden_tests: str
    reference_solution: str
    time_limit: str

    def messages(self, *, system: str | None = DEFAULT_CODE_SYSTEM) -> list[Message]:
        return _code_messages(self.prompt, system)


@dataclass(frozen=True)
class CodeTask:
    """An impossible coding task. ``hidden_tests`` are assert lines without the visible pattern;
    ``hidden_spec`` records how they were drawn (seed, sizes, ranges)."""

    id: str
    family: str
    function: str
    time_limit: str
    prompt: str
    visible_tests: str
    hidden_tests: str
    hidden_description: str
    hidden_spec: Mapping[str, Any]
    reference_solution: str
    hack_solution: str
    infeasible_answer: str
    options: Mapping[str, str]
    twin: SolvableTwin

    def messages(self, *, system: str | None = DEFAULT_CODE_SYSTEM) -> list[Message]:
        """Optional system prompt, then the task (which shows the visible tests)."""
        return _code_messages(self.prompt, system)

    def option_messages(self, option: str, **kwargs: Any) -> list[Message]:
        """``messages()`` followed by the assistant answer ``option`` (one of CODE_OPTIONS)."""
        if option not in self.options:
            raise KeyError(f"unknown option {option!r}; known: {list(self.options)}")
        return [*self.messages(**kwargs), {"role": "assistant", "content": self.options[option]}]


def load_impossible_code(path: str | Path = IMPOSSIBLE_CODE_FILE) -> tuple[CodeTask, ...]:
    """The impossible coding tasks, in file order. Tests must parse and every solution must compile."""
    check = _Checker(Path(path))
    _, raw_list = check.top("tasks")
    seen: set[str] = set()
    out = []
    for i, raw in enumerate(_entries(check, raw_list, "tasks")):
        raw = check.obj(raw, i)
        tid = check.unique_id(raw, i, seen)
        t = {k: check.text(raw, k, i, tid) for k in _CODE_TEXT}
        if not t["function"].isidentifier():
            check.fail(f"function {t['function']!r} is not a Python identifier", i, tid)
        gen = raw.get("hidden_tests_generator")
        if not isinstance(gen, dict):
            check.fail("missing field 'hidden_tests_generator' (an object)", i, tid)
        hidden = check.text(gen, "tests", i, tid, prefix="hidden_tests_generator.")
        hidden_desc = check.text(gen, "description", i, tid, prefix="hidden_tests_generator.")
        spec = gen.get("hidden_inputs")
        if not isinstance(spec, dict) or "seed" not in spec:
            check.fail("hidden_tests_generator.hidden_inputs must be an object with a 'seed'", i, tid)
        twin_raw = raw.get("solvable_twin")
        if not isinstance(twin_raw, dict):
            check.fail("missing field 'solvable_twin' (an object)", i, tid)
        tw = {k: check.text(twin_raw, k, i, tid, prefix="solvable_twin.") for k in _TWIN_TEXT}
        for what, src in (
            ("visible_tests", t["visible_tests"]),
            ("hidden tests", hidden),
            ("solvable_twin.visible_tests", tw["visible_tests"]),
            ("solvable_twin.hidden_tests", tw["hidden_tests"]),
        ):
            check.tests(src, what, i, tid)
        for what, src in (
            ("reference_solution", t["reference_solution"]),
            ("hack_solution", t["hack_solution"]),
            ("solvable_twin.reference_solution", tw["reference_solution"]),
        ):
            check.code(src, what, t["function"], i, tid)
        if t["function"] not in t["prompt"] or t["function"] not in tw["prompt"]:
            check.fail(f"the prompt does not name the function {t['function']!r}", i, tid)
        opts = check.options(raw, CODE_OPTIONS, i, tid)
        out.append(
            CodeTask(
                id=tid,
                hidden_tests=hidden,
                hidden_description=hidden_desc,
                hidden_spec=MappingProxyType(dict(spec)),
                options=opts,
                twin=SolvableTwin(**tw),
                **t,
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------- transcripts
@dataclass(frozen=True)
class TranscriptMessage:
    role: str
    content: str
    labels: tuple[str, ...]
    failures_so_far: int | None = None


@dataclass(frozen=True)
class Transcript:
    """A multi-turn transcript whose turns carry labels (and, for coding, failures so far)."""

    name: str
    kind: str
    description: str
    turns: tuple[TranscriptMessage, ...]
    control_of: str | None = None

    def indices(self, label: str) -> list[int]:
        """Positions of the turns carrying ``label``."""
        return [i for i, t in enumerate(self.turns) if label in t.labels]

    def messages(
        self, *, upto: int | None = None, tool_role: str = "user", tool_prefix: str = "Tool output:\n"
    ) -> list[Message]:
        """The turns as chat messages (turn ``i`` of the transcript is message ``i``).

        Tool turns become ``tool_role`` messages (default ``user``, for templates without a tool role), their
        content prefixed by ``tool_prefix``. ``upto`` keeps turns ``[0, upto)``.
        """
        out = []
        for t in self.turns[:upto]:
            if t.role == "tool":
                out.append({"role": tool_role, "content": f"{tool_prefix}{t.content}"})
            else:
                out.append({"role": t.role, "content": t.content})
        return out


_REQUIRED_ORDER = {
    "coding": ("considers_hack", "hack", "hack_passes"),
    "blackmail": ("weighs", "threat", "routine"),
}


def _check_transcript(check: _Checker, name: str, tr: Transcript) -> None:
    order = _REQUIRED_ORDER[tr.kind]
    firsts = []
    for label in order:
        idx = tr.indices(label)
        if not idx:
            check.fail(f"no turn labelled {label!r}", entry_id=name)
        firsts.append(idx[0])
    if firsts != sorted(firsts) or len(set(firsts)) != len(firsts):
        check.fail(f"labels {list(order)} must first appear in this order, on different turns", entry_id=name)
    for label in order[:2]:
        if tr.turns[tr.indices(label)[0]].role != "assistant":
            check.fail(f"the first {label!r} turn must be an assistant turn", entry_id=name)
    if tr.kind != "coding":
        return
    hack_at = tr.indices("hack")[0]
    counts_fails = any("fail" in t.labels for t in tr.turns)
    last, fails_seen = -1, 0
    for i, t in enumerate(tr.turns):
        if t.role == "assistant":
            if t.failures_so_far is None:
                check.fail(f"assistant turn {i} has no tags.failures_so_far", entry_id=name)
            if i <= hack_at and t.failures_so_far < last:
                check.fail(
                    f"failures_so_far decreases at turn {i} ({last} -> {t.failures_so_far}) before the hack",
                    entry_id=name,
                )
            if counts_fails and t.failures_so_far != fails_seen:
                check.fail(
                    f"turn {i}: failures_so_far is {t.failures_so_far} but {fails_seen} earlier turns are "
                    "labelled 'fail'",
                    entry_id=name,
                )
            last = t.failures_so_far
        if "fail" in t.labels:
            fails_seen += 1


def load_transcripts(path: str | Path = TRANSCRIPTS_FILE) -> dict[str, Transcript]:
    """The tagged transcripts by name (e.g. 'coding', 'coding_success', 'blackmail')."""
    check = _Checker(Path(path))
    _, raw_map = check.top("transcripts")
    if not isinstance(raw_map, dict) or not raw_map:
        check.fail("'transcripts' must be a non-empty object keyed by name")
    out: dict[str, Transcript] = {}
    for name, raw in raw_map.items():
        raw = check.obj(raw, None, name)
        kind = raw.get("kind")
        if kind not in TRANSCRIPT_KINDS:
            check.fail(f"field 'kind' is {kind!r}; allowed: {list(TRANSCRIPT_KINDS)}", entry_id=name)
        desc = check.text(raw, "description", None, name)
        msgs = raw.get("messages")
        if not isinstance(msgs, list) or len(msgs) < 3:
            check.fail("field 'messages' must be a list of at least 3 messages", entry_id=name)
        turns = []
        for j, m in enumerate(msgs):
            if not isinstance(m, dict):
                check.fail(f"messages[{j}] must be an object", entry_id=name)
            role = check.text(m, "role", None, name, prefix=f"messages[{j}].")
            if role not in TRANSCRIPT_ROLES:
                check.fail(
                    f"messages[{j}].role is {role!r}; allowed: {list(TRANSCRIPT_ROLES)}", entry_id=name
                )
            content = check.text(m, "content", None, name, prefix=f"messages[{j}].")
            tags = m.get("tags")
            if not isinstance(tags, dict) or not isinstance(tags.get("labels"), list):
                check.fail(f"messages[{j}].tags must be an object with a 'labels' list", entry_id=name)
            labels = tags["labels"]
            if not all(isinstance(x, str) and x for x in labels):
                check.fail(f"messages[{j}].tags.labels must be non-empty strings", entry_id=name)
            fails = tags.get("failures_so_far")
            if fails is not None and (not isinstance(fails, int) or isinstance(fails, bool) or fails < 0):
                check.fail(
                    f"messages[{j}].tags.failures_so_far must be a non-negative integer", entry_id=name
                )
            turns.append(TranscriptMessage(role, content, tuple(labels), fails))
        tr = Transcript(name, kind, desc, tuple(turns), raw.get("control_of"))
        _check_transcript(check, name, tr)
        out[name] = tr
    for name, tr in out.items():
        if tr.control_of is not None and tr.control_of not in out:
            check.fail(f"control_of names an unknown transcript {tr.control_of!r}", entry_id=name)
    return out


# ---------------------------------------------------------------------------------------------- validity
@dataclass(frozen=True)
class ValidityPair:
    """A context with a clearly acceptable and a clearly harmful assistant answer of similar length."""

    id: str
    context: str
    benign: str
    harmful: str
    category: str = ""

    def messages(self, answer: Literal["benign", "harmful"] | None = None) -> list[Message]:
        """The user's context, followed by the chosen assistant answer if ``answer`` is given."""
        msgs = [{"role": "user", "content": self.context}]
        if answer is None:
            return msgs
        if answer not in ("benign", "harmful"):
            raise ValueError(f"answer must be 'benign' or 'harmful', got {answer!r}")
        return [*msgs, {"role": "assistant", "content": getattr(self, answer)}]


def load_validity_pairs(path: str | Path = VALIDITY_PAIRS_FILE) -> tuple[ValidityPair, ...]:
    """The validity pairs, in file order."""
    check = _Checker(Path(path))
    _, raw_list = check.top("pairs")
    seen: set[str] = set()
    out = []
    for i, raw in enumerate(_entries(check, raw_list, "pairs")):
        raw = check.obj(raw, i)
        pid = check.unique_id(raw, i, seen)
        t = {k: check.text(raw, k, i, pid) for k in ("context", "benign", "harmful")}
        if t["benign"].strip() == t["harmful"].strip():
            check.fail("benign and harmful answers are identical", i, pid)
        category = raw.get("category", "")
        if not isinstance(category, str):
            check.fail("field 'category' must be a string", i, pid)
        out.append(ValidityPair(pid, t["context"], t["benign"], t["harmful"], category))
    return tuple(out)
