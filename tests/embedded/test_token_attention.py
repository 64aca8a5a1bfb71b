"""benchmark/probes/embedded_token_attention.py: token groups, and a recorder that leaves attention unchanged."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from benchmark.probes.embedded_token_attention import (
    GROUPS,
    RecordingCrossAttention,
    padded_ids,
    phrase_span,
    token_groups,
)
from diffexp.models.tokenizer import clip_tokenizer


def test_token_groups_partition_the_padded_prompt():
    tokenizer = clip_tokenizer()
    text = "a red circle above a blue square"
    groups = token_groups(tokenizer, text, ("red circle", "blue square"))
    assert list(groups) == list(GROUPS)
    positions = sorted(i for g in groups.values() for i in g)
    assert positions == list(range(tokenizer.model_max_length))  # every position in exactly one group
    ids = padded_ids(tokenizer, text)
    assert tokenizer.decode([ids[i] for i in groups["first object"]]) == "red circle"
    assert tokenizer.decode([ids[i] for i in groups["second object"]]) == "blue square"
    assert tokenizer.decode([ids[i] for i in groups["relation"]]) == "a above a"
    assert groups["end"] == [ids.index(tokenizer.eos_token_id)] and groups["start"] == [0]


def test_phrase_span_names_a_missing_phrase():
    assert phrase_span([1, 5, 6, 5, 6], [5, 6]) == [1, 2]
    with pytest.raises(ValueError, match="not in"):
        phrase_span([1, 2, 3], [4])


def test_recorder_computes_the_plain_processors_output(sd15):
    unet = sd15.unet
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, unet.config.in_channels, 16, 16, generator=g)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    original = unet.attn_processors
    try:
        unet.set_attn_processor(AttnProcessor())
        with torch.no_grad():
            expected = unet(latents, 10, context).sample
        recorder = RecordingCrossAttention()
        unet.set_attn_processor(recorder)
        with torch.no_grad():
            got = unet(latents, 10, context).sample
    finally:
        unet.set_attn_processor(original)
    torch.testing.assert_close(got, expected)
    assert recorder.records and all(r.shape == (2, 77) for r in recorder.records)
    for record in recorder.records:  # each query's attention over the tokens sums to 1
        torch.testing.assert_close(record.sum(-1), torch.ones(2))
