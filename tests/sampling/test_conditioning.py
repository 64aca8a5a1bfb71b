"""Prompt weighting on embeddings follows compel's rule, token by token."""

import math

import pytest
import torch

from diffexp.sampling.conditioning import PromptEncoder

TEXT = "a red circle above a blue square"


def encode_ids(pipe, ids, attention_mask=None):
    mask = None if attention_mask is None else torch.tensor([attention_mask])
    with torch.no_grad():
        return pipe.text_encoder(torch.tensor([ids]), attention_mask=mask).last_hidden_state[0]


def padded(tok, ids):
    return [tok.bos_token_id] + ids + [tok.eos_token_id] + [tok.pad_token_id] * (75 - len(ids))


def word_ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("weight", [1.0, 1.3, 2.0])
def test_upweight_changes_only_the_phrase_tokens(sd15, weight):
    """w >= 1: z_empty + w * (z - z_empty) on the phrase's tokens, every other token unchanged."""
    tok = sd15.tokenizer
    ids = word_ids(tok, TEXT)
    phrase = word_ids(tok, "blue square")
    start = next(i for i in range(len(ids)) if ids[i : i + len(phrase)] == phrase) + 1  # +1 for <bos>
    z = encode_ids(sd15, padded(tok, ids))
    z_empty = encode_ids(sd15, padded(tok, []))
    expected = z.clone()
    rows = slice(start, start + len(phrase))
    expected[rows] = z_empty[rows] + weight * (z[rows] - z_empty[rows])

    weighted = PromptEncoder(sd15).encode([f"a red circle above a (blue square){weight}"]).embeds[0]
    torch.testing.assert_close(weighted, expected, atol=1e-5, rtol=0)
    changed = (weighted - z).abs().amax(dim=1) > 1e-6
    assert changed.nonzero().flatten().tolist() == (list(range(start, start + len(phrase))) if weight != 1.0 else [])


def test_downweight_blends_toward_prompt_without_phrase(sd15):
    """w < 1: compel lerps toward the embedding of the prompt with the phrase removed."""
    tok, w = sd15.tokenizer, 0.6
    ids = word_ids(tok, TEXT)
    phrase = word_ids(tok, "blue square")
    start = len(word_ids(tok, "a red circle above a")) + 1
    z = encode_ids(sd15, padded(tok, ids))
    z_empty = encode_ids(sd15, padded(tok, []))
    base = z.clone()
    rows = slice(start, start + len(phrase))
    base[rows] = z_empty[rows] + w * (z[rows] - z_empty[rows])
    mask = [1] * 77
    mask[rows] = [0] * len(phrase)
    z_masked = encode_ids(sd15, padded(tok, ids), mask)
    without = z_masked.clone()
    without[rows] = z_empty[rows] + w * (z_masked[rows] - z_empty[rows])
    lerp = math.tan((1 - w) * math.pi / 2)
    expected = (base + lerp * without) / (1 + lerp)

    weighted = PromptEncoder(sd15).encode([f"a red circle above a (blue square){w}"]).embeds[0]
    torch.testing.assert_close(weighted, expected, atol=1e-5, rtol=0)


def test_mixed_batch_keeps_order_and_plain_path(twin):
    encoder = PromptEncoder(twin)
    texts = ["a cat", "a (dog)1.4", "a bird", "a (red)1.2 circle"]
    mixed = encoder.encode(texts)
    plain = encoder.encode(["a cat", "a bird"])
    torch.testing.assert_close(mixed.embeds[[0, 2]], plain.embeds)
    alone = encoder.encode(["a (dog)1.4"])
    torch.testing.assert_close(mixed.embeds[1], alone.embeds[0])
    if encoder.sdxl:
        assert mixed.pooled.shape == (4, twin.text_encoder_2.config.projection_dim)


def test_sdxl_weighting_touches_only_phrase_tokens(sdxl):
    encoder = PromptEncoder(sdxl)
    plain = encoder.encode([TEXT]).embeds[0]
    weighted = encoder.encode(["a red circle above a (blue square)1.4"]).embeds[0]
    changed = ((weighted - plain).abs().amax(dim=1) > 1e-5).nonzero().flatten().tolist()
    n_before = len(word_ids(sdxl.tokenizer, "a red circle above a")) + 1
    n_phrase = len(word_ids(sdxl.tokenizer, "blue square"))
    assert changed == list(range(n_before, n_before + n_phrase))


def test_sdxl_negative_is_zero_by_default(sdxl):
    neg = PromptEncoder(sdxl).negative(3)
    assert neg.embeds.shape[0] == 3 and torch.all(neg.embeds == 0) and torch.all(neg.pooled == 0)


def test_sdxl_pooled_embedding_is_the_plain_prompts(sdxl):
    """A phrase weight acts on the token embeddings only; SDXL's pooled embedding is the plain
    prompt's, whatever the weight's digits (compel 2.5 pools the unparsed syntax string)."""
    encoder = PromptEncoder(sdxl)
    plain = encoder.encode([TEXT])
    a = encoder.encode(["a (red circle)1.3 above a blue square"])
    b = encoder.encode(["a (red circle)1.3001 above a blue square"])
    torch.testing.assert_close(a.pooled, plain.pooled, rtol=0, atol=0)
    torch.testing.assert_close(b.pooled, plain.pooled, rtol=0, atol=0)
    assert (a.embeds - b.embeds).abs().max() < 1e-2 and not torch.equal(a.embeds, plain.embeds)
