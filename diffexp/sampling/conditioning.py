"""Text conditioning for a diffusers pipeline: prompt embeddings, with prompt weighting.

Unweighted prompts go through the pipeline's own ``encode_prompt`` (so sampling matches the
pipeline exactly); prompts with ``(phrase)w`` weights go through the ``compel`` library, which
implements the weighting rule (w >= 1: z_empty + w * (z - z_empty) on the phrase's tokens;
w < 1: a blend toward the embedding of the prompt without the phrase). Weights act on the token
embeddings only: SDXL's pooled embedding is always the plain prompt's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from compel import Compel, ReturnedEmbeddingsType
from diffusers import DiffusionPipeline

from diffexp.models.pipelines import is_sdxl
from diffexp.prompts.weighting import has_weights, plain_text


@dataclass
class Conditioning:
    """Per-sample text conditioning. ``pooled`` is SDXL's pooled embedding of its second encoder."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    def __getitem__(self, index) -> Conditioning:
        return Conditioning(self.embeds[index], None if self.pooled is None else self.pooled[index])

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Conditioning(torch.cat([p.embeds for p in parts]), pooled)

    def to(self, *args, **kwargs) -> Conditioning:
        return Conditioning(
            self.embeds.to(*args, **kwargs), None if self.pooled is None else self.pooled.to(*args, **kwargs)
        )


class PromptEncoder:
    """Encodes prompt text (optionally weighted) for one pipeline; text encoders stay frozen."""

    def __init__(self, pipe: DiffusionPipeline):
        self.pipe = pipe
        self.sdxl = is_sdxl(pipe)
        self._compel: list[Compel] | None = None
        self._length_checked: set[str] = set()

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def _compels(self) -> list[Compel]:
        """One compel per text encoder (SDXL has two; their embeddings are concatenated)."""
        if self._compel is None:  # built lazily: most runs weight no prompt
            pipe = self.pipe
            if self.sdxl:
                kind = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
                self._compel = [
                    Compel(
                        tokenizer=pipe.tokenizer,
                        text_encoder=pipe.text_encoder,
                        returned_embeddings_type=kind,
                        truncate_long_prompts=True,
                        device=self.device,
                    ),
                    Compel(
                        tokenizer=pipe.tokenizer_2,
                        text_encoder=pipe.text_encoder_2,
                        returned_embeddings_type=kind,
                        requires_pooled=True,
                        truncate_long_prompts=True,
                        device=self.device,
                    ),
                ]
            else:
                self._compel = [
                    Compel(
                        tokenizer=pipe.tokenizer,
                        text_encoder=pipe.text_encoder,
                        truncate_long_prompts=True,
                        device=self.device,
                    )
                ]
        return self._compel

    @torch.no_grad()
    def _encode_plain(self, texts: list[str]) -> Conditioning:
        if self.sdxl:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=texts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            return Conditioning(embeds, pooled)
        embeds, _ = self.pipe.encode_prompt(texts, self.device, 1, False)
        return Conditioning(embeds)

    @torch.no_grad()
    def _encode_weighted(self, texts: list[str]) -> Conditioning:
        compels = self._compels()
        if not self.sdxl:
            return Conditioning(compels[0](texts))
        embeds_1 = compels[0](texts)
        embeds_2, _ = compels[1](texts)
        # compel 2.5 pools the second encoder's states of the unparsed syntax string ("(red)1.3 ..."),
        # so the weight's digits would move it (compel issue #96): pool the plain prompt instead.
        pooled = self._encode_plain([plain_text(t) for t in texts]).pooled
        return Conditioning(torch.cat([embeds_1, embeds_2], dim=-1), pooled)

    def warn_if_truncated(self, texts: list[str]) -> None:
        """The text encoder sees at most ``model_max_length`` tokens: say so for a longer prompt (once)."""
        tokenizer = self.pipe.tokenizer
        limit = tokenizer.model_max_length
        for text in texts:
            if text in self._length_checked or len(text) < limit:  # a token has at least one character
                continue
            self._length_checked.add(text)
            count = len(tokenizer(plain_text(text), truncation=False).input_ids)
            if count > limit:
                warnings.warn(
                    f"prompt of {count} tokens is cut to the text encoder's {limit} (begins {text[:60]!r})",
                    stacklevel=3,
                )

    def encode(self, texts: list[str]) -> Conditioning:
        """Embeddings for each text, in order; weighted and plain texts may be mixed."""
        self.warn_if_truncated(texts)
        weighted = [has_weights(t) for t in texts]
        order = [i for i, w in enumerate(weighted) if not w] + [i for i, w in enumerate(weighted) if w]
        parts = []
        if not all(weighted):
            parts.append(self._encode_plain([plain_text(t) for t, w in zip(texts, weighted) if not w]))
        if any(weighted):
            parts.append(self._encode_weighted([t for t, w in zip(texts, weighted) if w]))
        merged = Conditioning.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return merged[inverse.to(merged.embeds.device)]

    @torch.no_grad()
    def negative(self, batch_size: int, negative_prompt: str | None = None) -> Conditioning:
        """The unconditional branch of CFG, as the pipeline builds it (SDXL: zeros by default)."""
        if self.sdxl:
            _, neg, _, neg_pooled = self.pipe.encode_prompt(
                prompt=[""],
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=negative_prompt,
            )
            return Conditioning(neg.expand(batch_size, -1, -1), neg_pooled.expand(batch_size, -1))
        _, neg = self.pipe.encode_prompt([""], self.device, 1, True, negative_prompt=negative_prompt)
        return Conditioning(neg.expand(batch_size, -1, -1))

    def add_time_ids(self, batch_size: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor | None:
        """SDXL's micro-conditioning (original size, crop, target size); ``None`` for SD 1.x/2.x."""
        if not self.sdxl:
            return None
        ids = self.pipe._get_add_time_ids(
            (height, width),
            (0, 0),
            (height, width),
            dtype=dtype,
            text_encoder_projection_dim=self.pipe.text_encoder_2.config.projection_dim,
        )
        return ids.to(self.device).repeat(batch_size, 1)
