"""Tests for prompt-file parsing: formats, stable ids and one-line ``file:line`` errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelwizard.prompts import (
    PromptFileError,
    PromptSpec,
    load_prompts,
    parse_prompts,
    prompt_id_for_text,
    validate_prompt_id,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _jsonl(*records: object) -> str:
    """JSON Lines text with one line per record."""
    return "".join(json.dumps(r) + "\n" for r in records)


def _error(text: str | bytes, fmt: str = "jsonl", name: str = "batch.jsonl") -> str:
    """The message parse_prompts raises for ``text``, checked to be a single line."""
    with pytest.raises(PromptFileError) as info:
        parse_prompts(text, name, fmt)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_txt_skips_comments_and_blank_lines() -> None:
    text = "# header\n\n  a red cube bounces  \n   # indented comment\n\r\nblue waves\n"
    specs = parse_prompts(text, "p.txt", "txt")
    assert [s.prompt for s in specs] == ["a red cube bounces", "blue waves"]
    assert all(s.seed is None and s.negative_prompt is None for s in specs)


def test_txt_ids_are_slug_plus_hash() -> None:
    (spec,) = parse_prompts("A Red Cube, bounces over the big green hill!\n", "p.txt", "txt")
    slug, digest = spec.id.rsplit("-", 1)
    assert slug == "a-red-cube-bounces-over-the"
    assert len(digest) == 8 and int(digest, 16) >= 0
    assert validate_prompt_id(spec.id) == spec.id


def test_txt_ids_stable_when_lines_inserted_above() -> None:
    before = parse_prompts("red cube\nblue sphere\n", "p.txt", "txt")
    inserted = "# new\ngreen cone\n\nred cube\nyellow star\nblue sphere\n"
    after = parse_prompts(inserted, "p.txt", "txt")
    ids_after = {s.prompt: s.id for s in after}
    assert all(ids_after[s.prompt] == s.id for s in before)
    assert len(set(ids_after.values())) == 4


def test_txt_ids_differ_for_prompts_sharing_a_slug() -> None:
    first = prompt_id_for_text("a red cube bounces on the floor slowly")
    second = prompt_id_for_text("a red cube bounces on the floor quickly")
    assert first != second
    assert first.startswith("a-red-cube-bounces-on-the-")


def test_txt_id_for_non_ascii_prompt_is_safe() -> None:
    assert prompt_id_for_text("café crème").startswith("cafe-creme-")
    only_symbols = prompt_id_for_text("日本の山")
    assert only_symbols.startswith("prompt-")
    assert validate_prompt_id(only_symbols) == only_symbols


def test_txt_duplicate_prompt_names_both_lines() -> None:
    message = _error("red cube\nblue\n\nred cube\n", fmt="txt", name="p.txt")
    assert message == "p.txt:4: duplicate prompt (same text as line 1)"


def test_jsonl_round_trip_all_fields(tmp_path: Path) -> None:
    specs = [
        PromptSpec(id="clip-1", prompt="red cube", seed=0, negative_prompt="blurry"),
        PromptSpec(id="clip_2.v2", prompt="blue sphere", seed=2**63 - 1),
        PromptSpec(id="3", prompt="green cone"),
    ]
    lines = [json.dumps({k: v for k, v in vars(s).items() if v is not None}) for s in specs]
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n", encoding="utf-8")
    assert load_prompts(path) == specs


def test_jsonl_null_optionals_mean_absent() -> None:
    line = '{"id": "a", "prompt": "x", "seed": null, "negative_prompt": null}'
    (spec,) = parse_prompts(line, "b", "jsonl")
    assert spec == PromptSpec(id="a", prompt="x")


def test_parse_accepts_bytes_with_bom() -> None:
    data = "\ufeff" + _jsonl({"id": "a", "prompt": "café"})
    assert parse_prompts(data.encode("utf-8"), "remote", "jsonl") == [PromptSpec("a", "café")]
    assert parse_prompts(data, "remote", "jsonl") == [PromptSpec("a", "café")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "a", "prompt": ', "invalid JSON"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ('{"id": "a"}', "missing 'prompt'"),
        ('{"id": "a", "prompt": ""}', "prompt is empty"),
        ('{"id": "a", "prompt": "  \\t "}', "prompt is empty"),
        ('{"id": "a", "prompt": 5}', "prompt must be a string, got 5"),
        ('{"prompt": "x"}', "missing 'id'"),
        ('{"id": 7, "prompt": "x"}', "id must be a string, got 7"),
        ('{"id": "../etc", "prompt": "x"}', 'invalid id "../etc"'),
        ('{"id": "a..b", "prompt": "x"}', 'invalid id "a..b"'),
        ('{"id": ".hidden", "prompt": "x"}', 'invalid id ".hidden"'),
        ('{"id": "a/b", "prompt": "x"}', 'invalid id "a/b"'),
        ('{"id": "a b", "prompt": "x"}', 'invalid id "a b"'),
        ('{"id": "' + "a" * 129 + '", "prompt": "x"}', "invalid id"),
        ('{"id": "a", "prompt": "x", "seed": -1}', "non-negative integer below 2**63, got -1"),
        ('{"id": "a", "prompt": "x", "seed": 9223372036854775808}', "seed must be"),
        ('{"id": "a", "prompt": "x", "seed": true}', "below 2**63, got true"),
        ('{"id": "a", "prompt": "x", "seed": 1.0}', "seed must be"),
        ('{"id": "a", "prompt": "x", "seed": "3"}', 'got "3"'),
        ('{"id": "a", "prompt": "x", "negative_prompt": 3}', "negative_prompt must be a string"),
        ('{"id": "a", "prompt": "x", "sed": 1, "neg": ""}', "unknown key(s) \"sed\", \"neg\""),
        ('{"id": "a", "prompt": "x", "seed": 1, "seed": 2}', 'duplicate key "seed"'),
    ],
)
def test_jsonl_errors_name_file_and_line(line: str, problem: str) -> None:
    text = _jsonl({"id": "ok", "prompt": "fine"}) + "\n" + line + "\n"
    message = _error(text)
    assert message.startswith("batch.jsonl:3: ")
    assert problem in message


def test_jsonl_duplicate_id_names_earlier_line() -> None:
    text = _jsonl(
        {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}
    )
    assert _error(text) == 'batch.jsonl:3: duplicate id "a" (already used on line 1)'


def test_jsonl_duplicate_id_ignores_case() -> None:
    text = _jsonl({"id": "Clip", "prompt": "x"}, {"id": "clip", "prompt": "y"})
    assert _error(text) == 'batch.jsonl:2: duplicate id "clip" (already used on line 1 as "Clip")'


@pytest.mark.parametrize(("fmt", "text"), [("txt", ""), ("txt", "# only\n\n"), ("jsonl", "\n \n")])
def test_empty_file(fmt: str, text: str) -> None:
    assert _error(text, fmt=fmt, name="empty") == "empty: no prompts"


def test_long_values_are_truncated_in_messages() -> None:
    message = _error(_jsonl({"id": "x" * 500, "prompt": "p"}))
    assert len(message) < 200


def test_invalid_utf8_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"red cube\nblue \xff sphere\n")
    with pytest.raises(PromptFileError) as info:
        load_prompts(path)
    assert str(info.value) == f"{path}:2: not valid UTF-8 (byte 0xff at column 6)"


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("x\n")
    with pytest.raises(PromptFileError, match=r"p\.csv: unsupported prompt file type '\.csv'"):
        load_prompts(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match=r"nope\.txt: no such file"):
        load_prompts(tmp_path / "nope.txt")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(PromptFileError, match=r"dir\.jsonl: cannot read"):
        load_prompts(folder)


def test_load_txt_uses_extension_case_insensitively(tmp_path: Path) -> None:
    path = tmp_path / "P.TXT"
    path.write_text("red cube\n", encoding="utf-8")
    assert [s.prompt for s in load_prompts(path)] == ["red cube"]


def test_parse_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="fmt must be"):
        parse_prompts("x", "n", "csv")  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["a", "A9", "clip-01_v2.final", "9" * 128])
def test_validate_prompt_id_accepts(good: str) -> None:
    assert validate_prompt_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "-a", "_a", ".a", "a..b", "a/b", "a\\b", "a\nb", "é", "a" * 129]
)
def test_validate_prompt_id_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid id"):
        validate_prompt_id(bad)


def test_prompt_spec_validates_directly() -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        PromptSpec(id="a", prompt="   ")
    with pytest.raises(ValueError, match="seed"):
        PromptSpec(id="a", prompt="x", seed=2**63)
    with pytest.raises(ValueError, match="invalid id"):
        PromptSpec(id="../x", prompt="x")


def test_examples_parse_and_match() -> None:
    txt = load_prompts(EXAMPLES / "prompts.txt")
    jsonl = load_prompts(EXAMPLES / "prompts.jsonl")
    assert len(txt) == len(jsonl) == 4
    assert [s.prompt for s in txt] == [s.prompt for s in jsonl]
    assert all(s.seed is not None for s in jsonl)


def test_unread_words_are_the_unknown_ones_as_written_and_the_tokens_past_the_limit() -> None:
    from pixelwizard.models.tokenizer import build_word_tokenizer, unread_words

    tokenizer = build_word_tokenizer(["a", "red", "circle"], model_max_length=8)
    assert unread_words(tokenizer, "a red circle") == ([], 0)  # 3 words and the end token
    assert unread_words(tokenizer, "A red cat, a red DOG circle, cat!") == (["cat", "DOG"], 1)  # 9 tokens of 8
