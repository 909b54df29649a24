"""Secret masking: the text that flows through a session, with credentials replaced by a named mask.

DESIGN section 7: the prompt, the model's output, tool arguments and tool output are masked at
the source, before they are journaled and before the model sees them. This module owns what
counts as a secret and how it is hidden; callers decide where to apply it.

Two shapes are hidden. Well-known credentials, each a literal prefix followed by a run of
characters from one alphabet (`_TOKEN_RULES`), a `Bearer` header's token, and private-key
blocks from `-----BEGIN ... PRIVATE KEY-----` to the matching END line. And the value of every
variable a job lists in `secret_env`, wherever it occurs; values shorter than
`MIN_ENV_VALUE_LENGTH` characters are ignored, because masking every "a" or "on" would garble
the text and protect nothing. A mask names the kind it hid (`[masked:aws_access_key]`,
`[masked:env:NAME]`), never the value.

Matching works on the raw text, position by position. Every position may start one or more
intervals to hide; the union of all of them is hidden, and each stretch of overlapping
intervals becomes one mask named after the longest interval at its start. Token-shaped
secrets must not follow an ASCII letter or digit, so `task-management-...` is not an `sk-` key,
and end at the first character outside their alphabet. A private-key block with no END line
is hidden up to the end of the text: fail closed.

Streaming gives exactly the same text as masking it whole, however the text is split: a
position is decided only once the text seen so far settles it, so the beginning of a
possible secret is held back until it is complete or ruled out, and everything before it is
released at once. Nothing is a regular expression except the scan for the next character
that could start a secret, which keeps plain text moving at C speed.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

MASK = "[masked:{kind}]"
MIN_ENV_VALUE_LENGTH = 4

_ALNUM = string.ascii_letters + string.digits
_WORD = frozenset(_ALNUM)  # a token-shaped secret, or the word Bearer, never follows one of these
_UPPER_DIGITS = string.ascii_uppercase + string.digits


class _TokenRule(NamedTuple):
    kind: str
    prefix: str
    alphabet: str
    min_length: int  # of the run after the prefix


_TOKEN_RULES = (
    _TokenRule("aws_access_key", "AKIA", _UPPER_DIGITS, 16),
    _TokenRule("aws_access_key", "ASIA", _UPPER_DIGITS, 16),
    *(_TokenRule("github_token", f"gh{c}_", _ALNUM, 36) for c in "pousr"),
    _TokenRule("github_token", "github_pat_", _ALNUM + "_", 22),
    _TokenRule("openai_key", "sk-", _ALNUM + "_-", 20),
)

_BEARER = "bearer"
_BEARER_TOKEN = _ALNUM + "._~+/=-"
_BEARER_MIN = 8

_KEY_BEGIN = "-----BEGIN "
_KEY_LABEL = string.ascii_uppercase + string.digits + " "  # "RSA PRIVATE KEY", "PGP PRIVATE KEY BLOCK"
_KEY_LABEL_MAX = 64
_KEY_DASHES = "-----"

# When intervals of the same length start at one place, the mask names the first of these.
_RANK = {
    "env": 0,
    "private_key": 1,
    "aws_access_key": 2,
    "github_token": 3,
    "openai_key": 4,
    "bearer_token": 5,
}


class _Hit(NamedTuple):
    """Hide `text[start:end]` as `kind`. Found at `start`, except a Bearer token: found at its word."""

    start: int
    end: int
    kind: str
    rank: int


_UNDECIDED = -1  # the text so far cannot tell yet
_NO_TOKEN = (0, 0)


class SecretMasker:
    """Masks the credential shapes every session hides, plus the values of a job's `secret_env`.

    `env_values` maps a variable's name to its value. Values shorter than `MIN_ENV_VALUE_LENGTH`
    characters are ignored. When one value contains or overlaps another, both are hidden under
    one mask named after the longer; two names with one value are masked as the first name.
    """

    def __init__(self, env_values: Mapping[str, str] | None = None) -> None:
        by_value: dict[str, str] = {}
        for name, value in sorted((env_values or {}).items()):
            if len(value) >= MIN_ENV_VALUE_LENGTH:
                by_value.setdefault(value, name)
        self._env_names = sorted(set(by_value.values()))
        self._env_by_first: dict[str, list[tuple[str, str]]] = {}
        for value, name in sorted(by_value.items(), key=lambda item: -len(item[0])):
            self._env_by_first.setdefault(value[0], []).append((value, f"env:{name}"))
        self._tokens_by_first: dict[str, list[_TokenRule]] = {}
        for rule in _TOKEN_RULES:
            self._tokens_by_first.setdefault(rule.prefix[0], []).append(rule)
        starts = {*self._env_by_first, *self._tokens_by_first, "b", "B", _KEY_BEGIN[0]}
        self._next_start = re.compile("[" + "".join(re.escape(c) for c in sorted(starts)) + "]").search
        # Whole text only: every secret starts with one of these literals, complete (a stream
        # can't use it: there, a literal may be cut between two chunks).
        literals = [*by_value, *(rule.prefix for rule in _TOKEN_RULES), _KEY_BEGIN]
        alternatives = sorted((re.escape(literal) for literal in literals), key=len, reverse=True)
        self._could_start = re.compile("|".join([*alternatives, f"(?i:{_BEARER})"])).search

    @classmethod
    def from_environment(cls, names: Iterable[str], environ: Mapping[str, str] | None = None) -> SecretMasker:
        """The masker for a job's `secret_env`: variables that are not set are skipped."""
        env = os.environ if environ is None else environ
        return cls({name: env[name] for name in names if name in env})

    def __repr__(self) -> str:  # names only: a masker must not put its secrets into a traceback
        return f"SecretMasker(env={self._env_names!r})"

    def mask(self, text: str) -> str:
        if self._could_start(text) is None:  # most text holds nothing a secret starts with
            return text
        released, _consumed, _pending = self._scan(text, "", [], final=True)
        return released

    def mask_json(self, value: Any) -> Any:
        """Mask every string inside dicts, lists and tuples, dict keys included; other values are kept.

        Two keys that mask to the same text collapse into one, the later value winning: a key
        that holds a secret has no name worth keeping.
        """
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {(self.mask(k) if isinstance(k, str) else k): self.mask_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_json(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.mask_json(v) for v in value)
        return value

    def stream(self) -> StreamMasker:
        return StreamMasker(self)

    # -- the scan shared by mask() and StreamMasker --------------------------------------------------

    def _scan(self, text: str, prev: str, pending: list[_Hit], *, final: bool) -> tuple[str, int, list[_Hit]]:
        """Mask `text` as far as it is decided.

        Returns the released text, how much of `text` it covers, and the Bearer tokens found
        but not reached yet. `prev` is the raw character before `text` ("" at the start).
        With `final`, nothing more follows, so everything is decided.
        """
        out: list[str] = []
        i = 0
        n = len(text)
        while i < n:
            stop = self._next_candidate(text, i, n, pending)
            if stop > i:
                out.append(text[i:stop])
                i = stop
                continue
            hits = self._hits_at(text, i, text[i - 1] if i else prev, final)
            if hits is None:
                break
            starting = [h for h in hits if h.start == i] + [h for h in pending if h.start == i]
            if not starting:
                pending = pending + hits  # only Bearer tokens, which start further on
                out.append(text[i])
                i += 1
                continue
            grown = self._grow(text, i, starting, [h for h in hits if h.start > i], pending, final)
            if grown is None:
                break
            out.append(grown[0])
            i, pending = grown[1], grown[2]
        return "".join(out), i, pending

    def _next_candidate(self, text: str, i: int, n: int, pending: list[_Hit]) -> int:
        found = self._next_start(text, i, n)
        stop = found.start() if found else n
        for hit in pending:
            stop = min(stop, hit.start)
        return stop

    def _grow(
        self, text: str, start: int, starting: list[_Hit], later: list[_Hit], pending: list[_Hit], final: bool
    ) -> tuple[str, int, list[_Hit]] | None:
        """Extend the mask that starts at `start` over every interval that overlaps it.

        Returns the mask, where it ends and the intervals still ahead, or None when the
        text so far does not decide where it ends.
        """
        first = min(starting, key=lambda h: (-h.end, h.rank, h.kind))
        end = first.end
        ahead = [h for h in pending if h.start != start] + later
        j = start + 1
        while True:
            while j < end:
                stop = self._next_candidate(text, j, end, [])
                if stop >= end:
                    break
                hits = self._hits_at(text, stop, text[stop - 1], final)
                if hits is None:
                    return None
                ahead += hits
                j = stop + 1
            j = end
            overlapping = [h for h in ahead if h.start < end]
            if not overlapping:
                return MASK.format(kind=first.kind), end, ahead
            ahead = [h for h in ahead if h.start >= end]
            end = max(end, *(h.end for h in overlapping))

    def _hits_at(self, text: str, p: int, prev: str, final: bool) -> list[_Hit] | None:
        """Every interval found by looking at `text[p:]`; None while the text so far can't tell."""
        hits: list[_Hit] = []
        first = text[p]
        for value, kind in self._env_by_first.get(first, ()):
            if text.startswith(value, p):
                hits.append(_Hit(p, p + len(value), kind, _RANK["env"]))
                break  # longest first: a shorter value here loses to this one
            if not final and len(text) - p < len(value) and value.startswith(text[p:]):
                return None
        for rule in self._tokens_by_first.get(first, ()):
            end = _token_end(text, p, prev, rule, final)
            if end == _UNDECIDED:
                return None
            if end:
                hits.append(_Hit(p, end, rule.kind, _RANK[rule.kind]))
        if first in "bB":
            span = _bearer_token(text, p, prev, final)
            if span is None:
                return None
            if span != _NO_TOKEN:
                hits.append(_Hit(span[0], span[1], "bearer_token", _RANK["bearer_token"]))
        if first == _KEY_BEGIN[0]:
            end = _private_key_end(text, p, final)
            if end == _UNDECIDED:
                return None
            if end:
                hits.append(_Hit(p, end, "private_key", _RANK["private_key"]))
        return hits


class StreamMasker:
    """Masks a stream chunk by chunk, releasing exactly what `SecretMasker.mask` would give the whole.

    `feed` returns the text that is safe to release now; the beginning of a possible secret is
    held until it is complete or ruled out. `flush` ends the stream, releases what is held
    (masked), and leaves the masker ready for a new stream.
    """

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        self._held = ""
        self._prev = ""
        self._pending: list[_Hit] = []

    def feed(self, chunk: str) -> str:
        if not chunk:
            return ""
        if not self._held and not self._pending and self._masker._next_start(chunk) is None:
            self._prev = chunk[-1]  # no secret can start in it: all of it is safe
            return chunk
        text = self._held + chunk
        released, consumed, pending = self._masker._scan(text, self._prev, self._pending, final=False)
        if consumed:
            self._prev = text[consumed - 1]
            self._held = text[consumed:]
            self._pending = [h._replace(start=h.start - consumed, end=h.end - consumed) for h in pending]
        else:
            self._held = text
        return released

    def flush(self) -> str:
        released, _consumed, _pending = self._masker._scan(self._held, self._prev, self._pending, final=True)
        self._held, self._prev, self._pending = "", "", []
        return released

    @property
    def held(self) -> int:
        """How many characters are held back: fed but not yet released."""
        return len(self._held)


def _token_end(text: str, p: int, prev: str, rule: _TokenRule, final: bool) -> int:
    """Where the token of `rule` starting at `p` ends; 0 for none."""
    if prev in _WORD:
        return 0
    n = len(text)
    if n - p < len(rule.prefix):
        return _UNDECIDED if not final and rule.prefix.startswith(text[p:]) else 0
    if not text.startswith(rule.prefix, p):
        return 0
    body = p + len(rule.prefix)
    end = body + _run(text, body, rule.alphabet)
    if end == n and not final:
        return _UNDECIDED  # the token may still grow
    return end if end - body >= rule.min_length else 0


def _bearer_token(text: str, p: int, prev: str, final: bool) -> tuple[int, int] | None:
    """Where the token after `Bearer` + spaces at `p` starts and ends; the word itself stays visible.

    `_NO_TOKEN` for none, None while the text so far can't tell.
    """
    if prev in _WORD:
        return _NO_TOKEN
    n = len(text)
    word = text[p : p + len(_BEARER)]
    if not word.isascii() or word.lower() != _BEARER[: len(word)]:
        return _NO_TOKEN
    if len(word) < len(_BEARER):
        return _NO_TOKEN if final else None
    token = p + len(_BEARER) + _run(text, p + len(_BEARER), " ")
    if token == n:
        return _NO_TOKEN if final else None
    if token == p + len(_BEARER):
        return _NO_TOKEN  # "Bearers", "Bearer:"
    end = token + _run(text, token, _BEARER_TOKEN)
    if end == n and not final:
        return None
    return (token, end) if end - token >= _BEARER_MIN else _NO_TOKEN


def _private_key_end(text: str, p: int, final: bool) -> int:
    """Where the private-key block whose BEGIN line starts at `p` ends; 0 for none.

    Its END line must carry the same label as its BEGIN line. With no END line the block
    runs to the end of the text.
    """
    n = len(text)
    opening = text[p : p + len(_KEY_BEGIN)]
    if opening != _KEY_BEGIN[: len(opening)]:
        return 0
    if len(opening) < len(_KEY_BEGIN):
        return 0 if final else _UNDECIDED
    label_start = p + len(_KEY_BEGIN)
    label_end = label_start + _run(text[: label_start + _KEY_LABEL_MAX + 1], label_start, _KEY_LABEL)
    if label_end - label_start > _KEY_LABEL_MAX:
        return 0
    if label_end == n:
        return 0 if final else _UNDECIDED
    label = text[label_start:label_end]
    if "PRIVATE KEY" not in label:
        return 0
    dashes = text[label_end : label_end + len(_KEY_DASHES)]
    if dashes != _KEY_DASHES[: len(dashes)]:
        return 0
    if len(dashes) < len(_KEY_DASHES):
        return 0 if final else _UNDECIDED
    closing = f"-----END {label}-----"
    found = text.find(closing, label_end + len(_KEY_DASHES))
    if found >= 0:
        return found + len(closing)
    return n if final else _UNDECIDED


def _run(text: str, start: int, alphabet: str) -> int:
    """How many characters from `alphabet` follow `start`."""
    rest = text[start:]
    return len(rest) - len(rest.lstrip(alphabet))
