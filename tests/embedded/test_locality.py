"""The fourth generator phase's locality term: the second object's token states in a composition
caption against the same tokens in that object's own caption, checked against hand-indexed
positions of the CLIP tokenization."""

import math

import torch
import torch.nn.functional as F

from diffexp.embedded import architecture
from diffexp.embedded.stage_tools import token_ids
from diffexp.embedded.training import second_object_locality
from diffexp.models.tokenizer import clip_tokenizer


def _encoder():
    torch.manual_seed(0)
    return architecture.text_encoder().eval()


def _states(encoder, texts, length=12):
    return encoder(token_ids(texts, length)).last_hidden_state


def test_cosine_is_taken_at_the_second_phrase_and_its_own_caption():
    encoder = _encoder()
    composition, alone = "a red circle above a blue square", "a blue square"
    # <start> a red circle above a blue square <end> ...: "blue square" at 6, 7; alone at 2, 3
    tokens = clip_tokenizer().convert_ids_to_tokens(token_ids([composition, alone])[:, :9].flatten().tolist())
    assert tokens[6:8] == ["blue</w>", "square</w>"] and tokens[9 + 2 : 9 + 4] == ["blue</w>", "square</w>"]
    states = _states(encoder, [composition, alone])
    expected = F.cosine_similarity(states[0, 6:8], states[1, 2:4], dim=-1).mean()
    got = second_object_locality(encoder, [composition], states[:1], 12)
    torch.testing.assert_close(got, expected)
    assert got < 0.99  # a random causal encoder does mix the context in


def test_only_compositions_count_and_articles_and_two_word_relations_are_handled():
    encoder = _encoder()
    texts = ["an orange star", "a green cross left of an orange triangle", "", "a red circle below a blue square"]
    states = _states(encoder, texts)
    # "left of" is two tokens and "an" is the article: "orange triangle" are the two tokens before <end>
    second = _states(encoder, ["an orange triangle"])
    first_pair = F.cosine_similarity(states[1, 7:9], second[0, 2:4], dim=-1)
    plain = _states(encoder, ["a blue square"])
    second_pair = F.cosine_similarity(states[3, 6:8], plain[0, 2:4], dim=-1)
    expected = torch.cat([first_pair, second_pair]).mean()
    torch.testing.assert_close(second_object_locality(encoder, texts, states, 12), expected)
    assert math.isnan(
        second_object_locality(encoder, ["a red circle", ""], _states(encoder, ["a red circle", ""]), 12).item()
    )


def test_gradient_reaches_only_the_composition_states_of_the_second_phrase():
    encoder = _encoder()
    texts = ["a red circle above a blue square", "a yellow star"]
    states = _states(encoder, texts).detach().requires_grad_(True)
    (1 - second_object_locality(encoder, texts, states, 12)).backward()
    touched = states.grad.abs().sum(-1) > 0
    expected = torch.zeros_like(touched)
    expected[0, 6:8] = True
    assert torch.equal(touched, expected)
    assert all(p.grad is None for p in encoder.parameters())  # the own-caption target is detached
