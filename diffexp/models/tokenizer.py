"""An offline CLIP tokenizer identical to Stable Diffusion 1.5's.

SD 1.5's tokenizer is OpenAI CLIP's BPE. open_clip_torch ships that vocabulary inside its
package (``bpe_simple_vocab_16e6.txt.gz``), so we can rebuild a transformers ``CLIPTokenizer``
without any download. The vocabulary layout is CLIP's: the 256 byte symbols, the same with the
end-of-word marker ``</w>``, one entry per merge, then the start and end tokens (49408 entries).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources

from transformers import CLIPTextConfig, CLIPTokenizer

#: SD 1.x/2.x and CLIP use 77-token contexts.
MODEL_MAX_LENGTH = 77
#: Number of merges CLIP keeps from the BPE file: 49152 - 256 - 2 (+1 for the header line).
_NUM_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode map (the BPE alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Read open_clip's shipped BPE file and build CLIP's vocabulary and merge list."""
    path = importlib.resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(str(path), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : _NUM_MERGES + 1]  # line 0 is a version header
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=4)
def clip_tokenizer(pad_token: str = EOS) -> CLIPTokenizer:
    """SD 1.5's tokenizer, built offline. SD 2.x and SDXL's second encoder pad with ``"!"``."""
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split()) for m in merges],
        pad_token=pad_token,
        model_max_length=MODEL_MAX_LENGTH,
    )


def clip_text_config(hidden: int, layers: int = 2, heads: int = 2, projection_dim: int | None = None) -> CLIPTextConfig:
    """A CLIP text-encoder config that matches :func:`clip_tokenizer` (vocabulary, special tokens, 77 positions)."""
    tok = clip_tokenizer()
    return CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        projection_dim=projection_dim or hidden,
        hidden_act="quick_gelu",
    )
