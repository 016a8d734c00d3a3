"""A small word-level tokenizer in the transformers format, for tiny models built offline."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def build_word_tokenizer(words: Iterable[str], model_max_length: int) -> PreTrainedTokenizerFast:
    """Lower-cased word-level tokenizer that ignores punctuation; ids 0..2 are pad, eos, unk and every text ends with eos (as T5)."""
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    core = Tokenizer(WordLevel(vocab, unk_token=UNK))
    core.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " ")]
    )
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=model_max_length
    )


def unread_words(tokenizer: PreTrainedTokenizerFast, text: str) -> tuple[list[str], int]:
    """What of ``text`` a model reading it through ``tokenizer`` does not see: the words that map to the unknown
    token (in order, once each), and how many tokens fall past the tokenizer's length limit and are cut off."""
    encoded = tokenizer(text, return_offsets_mapping=True, verbose=False)
    unknown: list[str] = []
    for token, (start, end) in zip(encoded.input_ids, encoded.offset_mapping, strict=True):
        if token == tokenizer.unk_token_id and text[start:end] not in unknown:
            unknown.append(text[start:end])
    return unknown, max(0, len(encoded.input_ids) - tokenizer.model_max_length)
