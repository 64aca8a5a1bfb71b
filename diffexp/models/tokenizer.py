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


#: T5's special tokens at T5's ids (pad 0, end 1, unknown 2)
T5_SPECIALS = ("<pad>", "</s>", "<unk>")


@functools.lru_cache(maxsize=2)
def t5_tokenizer(model_max_length: int = 512):
    """A whole-word stand-in for T5's tokenizer, built offline for the SD3/FLUX twins.

    T5's SentencePiece model is not shipped with any installed package, so the twins use a
    ``T5TokenizerFast`` built by T5's own constructor (a Unigram model, T5's pre-tokenizer and special
    tokens, so it saves and reloads as itself) over whole words: every alphanumeric whole-word entry of
    CLIP's BPE file (shipped with open_clip, as :func:`clip_tokenizer`'s), lower-case and capitalised,
    as word-initial pieces ("▁cat"), plus short punctuation. All pieces score alike, so a known word
    is one piece; an unknown one is split into known pieces or is ``<unk>``.
    """
    from transformers import T5TokenizerFast

    vocab, _ = clip_vocab_and_merges()
    whole = [t[: -len("</w>")] for t in vocab if t.endswith("</w>")]
    words = sorted({w for w in whole if w.isalnum()} | {w.capitalize() for w in whole if w.isalnum()})
    punctuation = sorted({w for w in whole if len(w) <= 3 and not any(c.isalnum() for c in w)})
    pieces = [*T5_SPECIALS, *(f"\u2581{w}" for w in words), *punctuation, "\u2581"]
    return T5TokenizerFast(vocab=[(piece, -1.0) for piece in pieces], extra_ids=0, model_max_length=model_max_length)


def t5_encoder_config(d_model: int, layers: int = 2, heads: int = 4):
    """A T5 encoder config that matches :func:`t5_tokenizer` (vocabulary, special-token ids)."""
    from transformers import T5Config

    tok = t5_tokenizer()
    return T5Config(
        vocab_size=len(tok),
        d_model=d_model,
        d_kv=d_model // heads,
        d_ff=2 * d_model,
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,  # a twin is sampled, not trained: no dropout in the pipeline and the sampler alike
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
