"""Warnings about prompts the model will not read whole: a tiny model knows few words, and any model cuts long texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.markup import escape

from cli.errors import err_console

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pixelwizard.prompts import PromptSpec

SHOWN = 5  # prompts named one a line; the rest are counted


def warn_unread_words_of_bundle(model: str, specs: Sequence[PromptSpec]) -> None:
    """``warn_unread_words`` with the tokenizer of the bundle folder ``model`` (read alone: no weights loaded). Only
    advice: a tokenizer that cannot be read or map words back to the text is passed over (the render reports it)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    try:
        warn_unread_words(AutoTokenizer.from_pretrained(Path(model) / "tokenizer"), specs)
    except (OSError, ValueError, NotImplementedError):  # no such folder, or a slow tokenizer without offsets
        pass


def warn_unread_words(tokenizer: PreTrainedTokenizerBase, specs: Sequence[PromptSpec]) -> None:
    """One ``warning:`` line per prompt (up to SHOWN) whose words the tokenizer maps to unknown or cuts off; the
    render goes on, as the words it knows still steer it."""
    from pixelwizard.models.tokenizer import unread_words

    lines = []
    for spec in specs:
        unknown, cut = unread_words(tokenizer, spec.prompt)
        problems = [f"the model does not know {', '.join(repr(word) for word in unknown)}"] if unknown else []
        if cut:
            problems.append(f"its last {cut} token(s) are cut off (the model reads {tokenizer.model_max_length})")
        if problems:
            lines.append(f"prompt {spec.id}: {'; '.join(problems)}")
    for line in lines[:SHOWN]:
        err_console.print(f"[yellow]warning:[/] {escape(line)}")
    if len(lines) > SHOWN:
        err_console.print(f"[yellow]warning:[/] and {len(lines) - SHOWN} more prompt(s) with words the model "
                          "cannot read")
