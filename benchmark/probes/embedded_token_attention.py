"""Which prompt tokens does the embedded UNet read? (diagnostic for #3's phrase premise)

Phrase weighting (compel) scales the text encoder's output states of the weighted phrase's tokens
only. It can strengthen an object only if (a) the UNet's cross-attention reads those tokens, and
(b) their states stand for that object rather than the whole caption. This script measures both
on the shipped model, for composition prompts ("a red circle above a blue square"):

* **cross-attention mass per token group** (start token, first object's phrase, relation words,
  second object's phrase, end token, padding after it), averaged over the UNet's cross-attention
  layers, heads, latent pixels and sampling steps of the conditional CFG branch;
* **context dependence** of each object's token states: their cosine similarity with the same
  phrase encoded alone ("a blue square"). The text encoder is causal, so the first object's states
  see only the words before them; the second object's states also carry the first object and the
  relation.

    python benchmark/probes/embedded_token_attention.py                 # 48 train composition prompts
    python benchmark/probes/embedded_token_attention.py --prompts 100 --guidance 5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

GROUPS = ("start", "first object", "relation", "second object", "end", "padding")


def phrase_span(ids: list[int], phrase_ids: list[int]) -> list[int]:
    """Positions of the first occurrence of ``phrase_ids`` in ``ids``."""
    for i in range(len(ids) - len(phrase_ids) + 1):
        if ids[i : i + len(phrase_ids)] == phrase_ids:
            return list(range(i, i + len(phrase_ids)))
    raise ValueError(f"phrase tokens {phrase_ids} not in {ids}")


def padded_ids(tokenizer, text: str) -> list[int]:
    """Token ids as the pipeline encodes a prompt: padded to the tokenizer's full length."""
    return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids


def token_groups(tokenizer, text: str, phrases: tuple[str, str]) -> dict[str, list[int]]:
    """The padded token positions of ``text`` split into :data:`GROUPS`."""
    ids = padded_ids(tokenizer, text)
    first, second = (phrase_span(ids, tokenizer(p, add_special_tokens=False).input_ids) for p in phrases)
    end = ids.index(tokenizer.eos_token_id, 1)
    relation = [i for i in range(1, end) if i not in first and i not in second]
    return {
        "start": [0],
        "first object": first,
        "relation": relation,
        "second object": second,
        "end": [end],
        "padding": list(range(end + 1, len(ids))),
    }


class RecordingCrossAttention:
    """An attention processor that computes attention as diffusers' plain ``AttnProcessor`` does
    and, for cross-attention, records the attention each key token receives, averaged over heads
    and queries: one (batch, tokens) tensor per call."""

    def __init__(self):
        self.records: list[torch.Tensor] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        cross = encoder_hidden_states is not None
        context = encoder_hidden_states if cross else hidden_states
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key, value = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)
        if cross:
            self.records.append(probs.reshape(batch, attn.heads, -1, probs.shape[-1]).mean(dim=(1, 2)).detach())
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def attention_mass(pipe, prompts, guidance: float, steps: int, seed: int) -> dict[str, float]:
    """Mean cross-attention mass of each token group (conditional branch) while sampling ``prompts``."""
    from diffexp.embedded.measurements import sample_images

    recorder = RecordingCrossAttention()
    original = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(recorder)
    try:
        sample_images(pipe, [p.text for p in prompts], guidance, steps, seed=seed, batch=len(prompts))
    finally:
        pipe.unet.set_attn_processor(original)
    conditional = torch.stack(recorder.records)[:, len(prompts) :].mean(0)  # CFG batches are [uncond, cond]
    out = {g: [] for g in GROUPS}
    for row, p in zip(conditional, prompts):
        for group, positions in token_groups(pipe.tokenizer, p.text, p.phrases).items():
            out[group].append(row[positions].sum().item())
    return {g: float(np.mean(v)) for g, v in out.items()}


@torch.no_grad()
def context_dependence(pipe, prompts) -> dict[str, float]:
    """Mean cosine between an object's token states in the composition and in "a <phrase>" alone."""
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder

    def encode(text: str):
        ids = padded_ids(tokenizer, text)
        return ids, encoder(torch.tensor([ids])).last_hidden_state[0]

    cosines: dict[str, list[float]] = {"first object": [], "second object": []}
    for p in prompts:
        ids, states = encode(p.text)
        for name, phrase in zip(cosines, p.phrases):
            alone_ids, alone = encode(f"a {phrase}")
            phrase_ids = tokenizer(phrase, add_special_tokens=False).input_ids
            inside, apart = phrase_span(ids, phrase_ids), phrase_span(alone_ids, phrase_ids)
            cosines[name].append(F.cosine_similarity(states[inside], alone[apart], dim=-1).mean().item())
    return {k: float(np.mean(v)) for k, v in cosines.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=48, help="train composition prompts used (of 100)")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from diffexp.embedded.pipeline import load_world_pipeline
    from diffexp.embedded.prompt_sets import get_prompt_set

    pipe = load_world_pipeline()
    prompts = get_prompt_set("relations", "train")[: args.prompts]
    print(f"{len(prompts)} composition prompts, CFG {args.guidance}, {args.steps} steps, seed {args.seed}")
    print("cross-attention mass per token group (conditional branch):")
    for group, mass in attention_mass(pipe, prompts, args.guidance, args.steps, args.seed).items():
        print(f"  {group:14s} {mass:.3f}")
    print("token-state cosine, phrase inside the composition vs. encoded alone:")
    for name, cosine in context_dependence(pipe, prompts).items():
        print(f"  {name:14s} {cosine:.3f}")


if __name__ == "__main__":
    main()
