"""Text rules shared by every ID kind: normalisation, words, keyword phrases, round trips."""

from __future__ import annotations

import re
import unicodedata

from transformers import PreTrainedTokenizerBase

_SPACES = re.compile(r"\s+")
_FIELD = re.compile(r"(?:^|;\s*)([A-Za-z_ ]{1,30}):\s*")  # "title: ..." keys of the item text

# Function words that make poor ID words (a small list on purpose: content words only drop out).
STOPWORDS = frozenset(
    """a an the and or but nor of in on at to for from by with without into onto over under about as is are was
    were be been being it its this that these those i me my we our you your he she his her they them their
    not no so than too very can will just do does did has have had s t d ll m o re ve y de la le les el du des
    und der die das et""".split()
)


def normalise(text: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Lowercase, accents stripped, punctuation and symbols dropped, whitespace collapsed.

    The tokenizer's own normaliser runs first (BERT uncased: lowercase, strip accents,
    spaces around CJK characters), so normal forms agree with what the model reads.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c if c.isalnum() or c.isspace() else " " for c in text if not unicodedata.combining(c))
    return _SPACES.sub(" ", text).strip()


def words(text: str, tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
    return normalise(text, tokenizer).split()


def round_trips(text: str, tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when ``text`` encodes without [UNK] and decodes back to itself exactly."""
    if not text:
        return False
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
        return False
    return tokenizer.decode(ids) == text


def keyword_phrase(title: str, text: str, num_words: int) -> str:
    """Warm-up target: the title's content words, then other content words of the text.

    Field names of the ``field: value; ...`` item text are skipped, words are kept in
    order, each once; single letters (e.g. the ``s`` of ``children's``) are dropped.
    """
    chosen: list[str] = []
    for word in [*words(title), *words(field_values(text))]:
        if word in STOPWORDS or word in chosen or (len(word) == 1 and not word.isdigit()):
            continue
        chosen.append(word)
        if len(chosen) == num_words:
            break
    return " ".join(chosen)


def field_values(text: str) -> str:
    """``title: Toy Story; genres: Comedy`` -> ``Toy Story ; Comedy`` (keys removed)."""
    return _FIELD.sub(" ; ", text)
