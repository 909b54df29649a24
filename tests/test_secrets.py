"""Secret masking (DESIGN section 7), as a user of the journal would notice it.

Every kind in `fixtures/secrets/corpus.json` is hidden, named, and absent from the output;
its near-misses come through untouched. Streaming is held to one contract: however a model
splits the text into chunks, the chunks' output joined is exactly the whole text masked, no
released piece ever runs ahead of it (so the beginning of a secret is never let out), and
ordinary words are released promptly instead of being held back.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handshake_cli.engine.secrets import MASK, SecretMasker, StreamMasker
from tests.support.paths import FIXTURES

CORPUS = json.loads((FIXTURES / "secrets" / "corpus.json").read_text(encoding="utf-8"))
SECRETS: list[dict[str, str]] = CORPUS["secrets"]
NEAR_MISSES: list[dict[str, str]] = CORPUS["near_misses"]
ENV = {e["kind"].removeprefix("env:"): e["value"] for e in SECRETS if e["kind"].startswith("env:")}


def masker() -> SecretMasker:
    return SecretMasker(ENV)


def streamed(chunks: list[str], stream: StreamMasker | None = None) -> str:
    stream = stream or masker().stream()
    return "".join(stream.feed(chunk) for chunk in chunks) + stream.flush()


def secret_id(entry: dict[str, str]) -> str:
    return f"{entry['kind']}:{entry['hidden'][:12]}"


def test_corpus_covers_every_kind_twice() -> None:
    kinds = [e["kind"] for e in SECRETS if not e["kind"].startswith("env:")]
    for kind in ("aws_access_key", "github_token", "openai_key", "bearer_token", "private_key"):
        assert kinds.count(kind) >= 2, kind
    assert "HANDSHAKE_TEST_SECRET" in ENV
    assert {e["resembles"] for e in NEAR_MISSES} >= set(kinds)


@pytest.mark.parametrize("entry", SECRETS, ids=secret_id)
def test_each_kind_is_masked_and_named(entry: dict[str, str]) -> None:
    text = f"config: {entry['value']}\nthe rest stays"
    out = masker().mask(text)
    assert entry["hidden"] not in out
    assert MASK.format(kind=entry["kind"]) in out
    assert out.startswith("config: ") and out.endswith("\nthe rest stays")


def test_bearer_keeps_the_word_and_hides_the_token() -> None:
    out = masker().mask("Authorization: Bearer abc.DEF-123_~+/=xyz\r\n")
    assert out == "Authorization: Bearer [masked:bearer_token]\r\n"


def test_mask_names_the_kind_never_the_value() -> None:
    out = masker().mask("a AKIATX7LTXWLA7Z6KT5Q b o4tMVO5quqsWlTUybeiYnrYk7DUzYGAK c")
    assert out == "a [masked:aws_access_key] b [masked:env:HANDSHAKE_TEST_SECRET] c"


def test_secrets_next_to_each_other_get_one_mask_each() -> None:
    out = masker().mask(
        '{"id":"AKIATX7LTXWLA7Z6KT5Q","key":"sk-rKMu5OjxiRqAwJ58kd62t5RwSBujGq5VESwcpeiGirWcWZcu"}'
    )
    assert out == '{"id":"[masked:aws_access_key]","key":"[masked:openai_key]"}'


def test_a_token_runs_to_the_first_character_outside_its_alphabet() -> None:
    # 17 characters after AKIA is still a key, and all of it is hidden.
    assert masker().mask("AKIATX7LTXWLA7Z6KT5QZ.") == "[masked:aws_access_key]."


@pytest.mark.parametrize("entry", NEAR_MISSES, ids=lambda e: e["value"][:24])
def test_near_misses_are_not_masked(entry: dict[str, str]) -> None:
    text = f"see {entry['value']} here"
    assert masker().mask(text) == text
    assert streamed(list(text)) == text


@pytest.mark.parametrize("entry", SECRETS, ids=secret_id)
def test_a_secret_split_at_every_point_is_masked(entry: dict[str, str]) -> None:
    text = f"key={entry['value']} ok"
    expected = masker().mask(text)
    assert entry["hidden"] not in expected
    for cut in range(len(text) + 1):
        assert streamed([text[:cut], text[cut:]]) == expected, cut
    assert streamed(list(text)) == expected


def test_a_stream_never_releases_the_beginning_of_a_secret() -> None:
    stream = masker().stream()
    released = stream.feed("token: gh") + stream.feed("p_TOSGRa0kMSazzbflNW1o")
    assert released == "token: "
    released += stream.feed("DyJd3rinlqwClU7F")
    assert released == "token: "  # complete, but it could still grow
    released += stream.feed(" and more")
    assert released == "token: [masked:github_token] and more"
    assert stream.flush() == ""


def test_a_ruled_out_candidate_is_released() -> None:
    stream = masker().stream()
    assert stream.feed("use sk") == "use "
    assert stream.feed("-short ") == "sk-short "
    assert stream.feed("Bearer") == ""
    assert stream.feed(" tokens ") == "Bearer tokens "


def test_plain_words_stream_through() -> None:
    stream = masker().stream()
    assert stream.feed("hello world ").startswith("hello ")
    stream = masker().stream()
    released = ""
    words = ["The", "quick", "brown", "fox", "asks:", "a", "skier", "be", "brief?", "Naïve", "café,"]
    words += ["日本語", "🙂", "AKIA-style", "sk-8", "ghost_town", "-----", "bearer-of-news"]
    for word in words:
        released += stream.feed(word)
        assert stream.held <= len(word)
        released += stream.feed(" ")
        assert stream.held == 0, word
    assert released == " ".join(words) + " "


def test_bearer_is_held_only_until_its_token_is_ruled_out() -> None:
    stream = masker().stream()
    assert stream.feed("a bearer ") == "a "
    assert stream.feed("of") == ""
    assert stream.feed(" news") == "bearer of news"


def test_an_unterminated_private_key_is_masked_to_the_end() -> None:
    block = next(e for e in SECRETS if e["kind"] == "private_key")
    cut = block["value"].rsplit("\n", 1)[0]  # no END line
    text = f"here it is:\n{cut}\nand some text after\n"
    expected = "here it is:\n[masked:private_key]"
    assert masker().mask(text) == expected
    assert streamed(list(text)) == expected
    stream = masker().stream()
    assert stream.feed(text) == "here it is:\n"
    assert stream.flush() == "[masked:private_key]"


def test_a_private_key_ends_only_at_its_own_end_line() -> None:
    text = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END RSA PRIVATE KEY-----\ntail"
    assert masker().mask(text) == "[masked:private_key]"
    text = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----\ntail"
    assert masker().mask(text) == "[masked:private_key]\ntail"


def test_longer_env_value_wins_when_values_overlap() -> None:
    m = SecretMasker({"SHORT": "abcd1234", "LONG": "abcd1234efgh5678", "INNER": "1234efgh"})
    assert m.mask("x abcd1234efgh5678 y") == "x [masked:env:LONG] y"
    assert m.mask("x abcd1234 y") == "x [masked:env:SHORT] y"
    # Overlapping without one containing the other: nothing of either is left visible.
    assert m.mask("abcd1234efgh!") == "[masked:env:SHORT]!"
    assert streamed(list("abcd1234efgh!"), m.stream()) == "[masked:env:SHORT]!"


def test_mask_json_masks_nested_strings_and_keys() -> None:
    value: Any = {
        "tool": "shell",
        "args": {"env": ["HOME=/root", "AWS_ACCESS_KEY_ID=AKIATX7LTXWLA7Z6KT5Q"], "timeout": 30},
        "headers": [
            {"Authorization": "Bearer bhrpaPc9GGUFbSLPhhNyM4XdcFDD1qnRcf9yIwo6Lb7Env2m7NDUKZA.Vx8LNQ1C"}
        ],
        "o4tMVO5quqsWlTUybeiYnrYk7DUzYGAK": True,
        "n": None,
        "pair": (1.5, "sk-rKMu5OjxiRqAwJ58kd62t5RwSBujGq5VESwcpeiGirWcWZcu"),
    }
    assert masker().mask_json(value) == {
        "tool": "shell",
        "args": {"env": ["HOME=/root", "AWS_ACCESS_KEY_ID=[masked:aws_access_key]"], "timeout": 30},
        "headers": [{"Authorization": "Bearer [masked:bearer_token]"}],
        "[masked:env:HANDSHAKE_TEST_SECRET]": True,
        "n": None,
        "pair": (1.5, "[masked:openai_key]"),
    }


def test_from_environment_skips_missing_variables_and_short_values() -> None:
    environ = {"API_TOKEN": "tok-9f8e7d6c5b4a", "PIN": "123", "UNLISTED": "unlisted-value-42"}
    m = SecretMasker.from_environment(["API_TOKEN", "PIN", "NOT_SET"], environ)
    out = m.mask("tok-9f8e7d6c5b4a pin 123 unlisted-value-42")
    assert out == "[masked:env:API_TOKEN] pin 123 unlisted-value-42"
    assert "tok-9f8e7d6c5b4a" not in repr(m)


def test_from_environment_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDSHAKE_TEST_SECRET", ENV["HANDSHAKE_TEST_SECRET"])
    m = SecretMasker.from_environment(["HANDSHAKE_TEST_SECRET"])
    assert m.mask(ENV["HANDSHAKE_TEST_SECRET"]) == "[masked:env:HANDSHAKE_TEST_SECRET]"


def test_a_stream_can_be_reused_after_flush() -> None:
    stream = masker().stream()
    assert streamed(["a AKIATX7L", "TXWLA7Z6KT5Q"], stream) == "a [masked:aws_access_key]"
    assert streamed(["x", "AKIATX7LTXWLA7Z6KT5Q"], stream) == "xAKIATX7LTXWLA7Z6KT5Q"
    assert streamed(["AKIATX7LTXWLA7Z6KT5Q"], stream) == "[masked:aws_access_key]"


# -- the streaming contract, for any text and any chunking ---------------------------------------------

_WORDS = [
    "hello", "the", "key", "is", "Bearer", "bearer", "sk", "sk-", "AKIA", "ghp_", "github_pat_", "gh",
    "-----BEGIN", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "PRIVATE", "KEY-----",
    "token=", "Authorization:", "naïve", "日本語", "🙂", "o4tMVO5q", "Zr8!", "-", "=", "_", "\r\n",
]  # fmt: skip
_SEPARATORS = [" ", "\n", ", ", "; ", " (", ") ", ": ", "\t", " — ", '"', "'"]


@st.composite
def _texts(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Text made of secrets, near-misses, tricky words and noise; returns it and the secrets' hidden parts."""
    piece = st.one_of(
        st.sampled_from(SECRETS).map(lambda e: (e["value"], e["hidden"])),
        st.sampled_from(NEAR_MISSES).map(lambda e: (e["value"], "")),
        st.sampled_from(_WORDS).map(lambda w: (w, "")),
        st.text(max_size=6).map(lambda t: (t, "")),
    )
    parts = draw(st.lists(st.tuples(piece, st.sampled_from(_SEPARATORS)), max_size=12))
    text = "".join(value + sep for (value, _), sep in parts)
    return text, [hidden for (_, hidden), _ in parts if hidden]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=_texts(), data=st.data())
def test_any_chunking_releases_exactly_the_masked_text(
    sample: tuple[str, list[str]], data: st.DataObject
) -> None:
    text, hidden = sample
    m = masker()
    expected = m.mask(text)
    for secret in hidden:
        assert secret not in expected
    # Chunk lengths are drawn a few at a time and repeated, so long texts still get small chunks.
    lengths = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=16))
    bounds = [0]
    for length in itertools.cycle(lengths):
        if bounds[-1] >= len(text):
            break
        bounds.append(min(len(text), bounds[-1] + length))
    stream = m.stream()
    released = ""
    for start, end in itertools.pairwise(bounds):
        released += stream.feed(text[start:end])
        assert expected.startswith(released)  # never ahead of, or different from, the whole text masked
    released += stream.flush()
    assert released == expected
