import open_clip
import pytest

from diffexp.models.tokenizer import clip_tokenizer

PROMPTS = [
    "a photo of a cat",
    "A monkey washing the dishes!",
    "an astronaut riding a horse on the moon, 4k, trending on artstation",
    "Ça va? naïve café crème brûlée",
    "a red circle above a blue square",
    "",
    "HELLO   world  ",
    "two dogs & 3 cats; it's 10:30 p.m.",
    "a (red circle)1.3 above a blue square",
    "emoji 🐶🚲 and ümlauts",
    "word " * 100,  # longer than the context: both truncate to 77
]


def test_vocabulary_has_clip_size():
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_match_open_clip(prompt):
    ours = clip_tokenizer()(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = open_clip.get_tokenizer("ViT-L-14")([prompt])[0].tolist()
    # open_clip pads with 0, SD 1.5 pads with <|endoftext|>; compare up to and including the end token.
    end = theirs.index(49407) + 1
    assert ours[:end] == theirs[:end]
    assert all(i == 49407 for i in ours[end:])
