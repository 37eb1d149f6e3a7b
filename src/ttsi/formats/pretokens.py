"""Where a candidate prefix may end: the pre-token boundaries of Qwen2-style byte-level BPE tokenizers.

Byte-level BPE never merges across pre-tokens, so a prefix that ends where a pre-token ends is tokenized exactly
as the start of any longer text is; a prefix that ends inside one (after `"` in `",`, or at `(` in `(city`) is
scored on tokens the model never writes. The split is Qwen2's (`ttsi.tiny_models.QWEN2_SPLIT`; Llama 3 and GPT-2 differ
only in details that do not move these boundaries) in the standard library's `re`: `\\p{L}` is `[^\\W\\d_]`,
`\\p{N}` is `\\d`, and `_` is punctuation.
"""

from __future__ import annotations

import re

PRETOKEN = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d"
                      r"| ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def pretoken_ends(text: str) -> list[int]:
    """End offsets of the pre-tokens of `text`."""
    return [m.end() for m in PRETOKEN.finditer(text)]


def boundary_at_or_after(text: str, pos: int) -> int:
    """The first pre-token boundary of `text` at or after `pos` (0 for pos <= 0; the text's end if none sooner)."""
    if pos <= 0:
        return 0
    return next((end for end in pretoken_ends(text) if end >= pos), len(text))
