"""A byte-level tokenizer: no vocabulary file, nothing to download.

CLIP uses a 49,152-token byte-pair encoding with a 76-token context. Captions built from
class names need no learned merges: each UTF-8 byte is one token, with three special ids
in front, so any text (accents, "T-shirt/top") round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3  # byte b has id b + BYTE_OFFSET
VOCAB_SIZE = 256 + BYTE_OFFSET


class ByteTokenizer:
    """Text <-> ``[BOS, byte + 3, ..., EOS, PAD, ...]`` rows of ``context_length`` ids.

    Text too long for the context is cut, but the row still ends in EOS: the text encoder
    reads its feature at the EOS position (as CLIP does), so EOS must always be there.
    """

    vocab_size = VOCAB_SIZE

    def __init__(self, context_length: int = 64) -> None:
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (BOS, a byte, EOS), got "
                             f"{context_length}")
        self.context_length = context_length

    def encode_one(self, text: str) -> list[int]:
        """One text -> exactly ``context_length`` ids."""
        body = [byte + BYTE_OFFSET for byte in text.encode("utf-8")]
        body = body[: self.context_length - 2]  # room for BOS and EOS
        ids = [BOS_ID, *body, EOS_ID]
        return ids + [PAD_ID] * (self.context_length - len(ids))

    def encode(self, texts: Sequence[str]) -> Tensor:
        """(M,) texts -> (M, context_length) int64 ids."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts; wrap a single one in a list")
        rows = [self.encode_one(text) for text in texts]
        return torch.tensor(rows, dtype=torch.long).view(len(rows), self.context_length)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """One row of ids -> text, up to the first EOS; a multi-byte character cut by
        truncation decodes as U+FFFD."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        body = []
        for value in values:
            if value == EOS_ID:
                break
            if value >= BYTE_OFFSET:
                body.append(value - BYTE_OFFSET)
        return bytes(body).decode("utf-8", errors="replace")
