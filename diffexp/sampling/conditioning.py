"""Text conditioning for a diffusers pipeline: prompt embeddings, with prompt weighting.

Unweighted prompts go through the pipeline's own ``encode_prompt`` (so sampling matches the
pipeline exactly); prompts with ``(phrase)w`` weights go through the ``compel`` library, which
implements the weighting rule (w >= 1: z_empty + w * (z - z_empty) on the phrase's tokens;
w < 1: a blend toward the embedding of the prompt without the phrase), once per text encoder the
model has (SD 1.x: CLIP; SDXL: CLIP-L, CLIP-G; SD3: CLIP-L, CLIP-G, T5; FLUX: T5, its CLIP only
pools). Weights act on the token embeddings only: pooled embeddings are always the plain prompt's.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from compel import Compel, ReturnedEmbeddingsType
from diffusers import DiffusionPipeline

from diffexp.models.pipelines import model_family
from diffexp.prompts.weighting import has_weights, plain_text


@dataclass
class Conditioning:
    """Per-sample text conditioning. ``pooled``: SDXL's and SD3's pooled CLIP embeddings, FLUX's CLIP one."""

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
        self.family = model_family(pipe)
        self.sdxl = self.family == "sdxl"
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
            elif self.family in ("sd3", "flux"):
                self._compel = self._flow_compels()
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

    def _flow_compels(self) -> list[Compel | None]:
        """SD3: CLIP-L and CLIP-G (penultimate states, as SD3's pipeline) and T5 if loaded; FLUX: T5."""
        pipe = self.pipe
        clip = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
        t5_encoder = pipe.text_encoder_3 if self.family == "sd3" else pipe.text_encoder_2
        t5_tokenizer = pipe.tokenizer_3 if self.family == "sd3" else pipe.tokenizer_2
        t5 = None
        if t5_encoder is not None:
            t5 = Compel(
                tokenizer=t5_tokenizer,
                text_encoder=t5_encoder,
                truncate_long_prompts=True,
                model_max_length=self.max_sequence_length,
                device=self.device,
            )
        if self.family == "flux":
            return [t5]
        clips = [
            Compel(
                tokenizer=tok,
                text_encoder=enc,
                returned_embeddings_type=clip,
                truncate_long_prompts=True,
                device=self.device,
            )
            for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
        ]
        return [*clips, t5]

    #: T5 tokens the pipelines encode by default (SD3: 256; FLUX: 512)
    @property
    def max_sequence_length(self) -> int:
        return 512 if self.family == "flux" else 256

    @torch.no_grad()
    def _encode_plain(self, texts: list[str]) -> Conditioning:
        if self.family == "sd3":
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=texts,
                prompt_2=None,
                prompt_3=None,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length,
            )
            return Conditioning(embeds, pooled)
        if self.family == "flux":
            embeds, pooled, _ = self.pipe.encode_prompt(
                prompt=texts,
                prompt_2=None,
                device=self.device,
                num_images_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
            )
            return Conditioning(embeds, pooled)
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
        if self.family in ("sd3", "flux"):
            return self._encode_weighted_flow(texts, compels)
        if not self.sdxl:
            return Conditioning(compels[0](texts))
        embeds_1 = compels[0](texts)
        embeds_2, _ = compels[1](texts)
        # compel 2.5 pools the second encoder's states of the unparsed syntax string ("(red)1.3 ..."),
        # so the weight's digits would move it (compel issue #96): pool the plain prompt instead.
        pooled = self._encode_plain([plain_text(t) for t in texts]).pooled
        return Conditioning(torch.cat([embeds_1, embeds_2], dim=-1), pooled)

    def _encode_weighted_flow(self, texts: list[str], compels: list[Compel | None]) -> Conditioning:
        """Each encoder's weighted token states, laid out as the pipeline's ``encode_prompt`` lays them."""
        plain = self._encode_plain([plain_text(t) for t in texts])  # the pooled embeddings, and T5's zeros
        *clips, t5 = compels
        if self.family == "flux":
            return Conditioning(plain.embeds if t5 is None else t5(texts).to(plain.embeds), plain.pooled)
        clip_embeds = torch.cat([c(texts) for c in clips], dim=-1)
        width = plain.embeds.shape[-1]
        clip_embeds = torch.nn.functional.pad(clip_embeds, (0, width - clip_embeds.shape[-1]))
        num_clip = clip_embeds.shape[1]
        t5_embeds = plain.embeds[:, num_clip:] if t5 is None else t5(texts)
        return Conditioning(torch.cat([clip_embeds, t5_embeds.to(clip_embeds)], dim=-2), plain.pooled)

    def warn_if_truncated(self, texts: list[str]) -> None:
        """The text encoder sees at most ``model_max_length`` tokens: say so for a longer prompt (once)."""
        tokenizer = self.pipe.tokenizer
        limit = tokenizer.model_max_length
        for text in texts:
            if text in self._length_checked or len(text) < limit:  # a token has at least one character
                continue
            self._length_checked.add(text)
            count = len(tokenizer(plain_text(text), truncation=False, verbose=False).input_ids)
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
            with _quiet_diffusers():  # its truncation notice repeats the cut text whole; warn_if_truncated says it once
                parts.append(self._encode_plain([plain_text(t) for t, w in zip(texts, weighted) if not w]))
        if any(weighted):
            parts.append(self._encode_weighted([t for t, w in zip(texts, weighted) if w]))
        merged = Conditioning.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return merged[inverse.to(merged.embeds.device)]

    @torch.no_grad()
    def negative(self, batch_size: int, negative_prompt: str | None = None) -> Conditioning:
        """The unconditional branch of CFG, as the pipeline builds it (SDXL: zeros by default; FLUX has
        no unconditional branch unless a negative prompt is given, its pipeline's ``true_cfg_scale``)."""
        if self.family == "sd3":
            _, neg, _, neg_pooled = self.pipe.encode_prompt(
                prompt=[""],
                prompt_2=None,
                prompt_3=None,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=negative_prompt,
                max_sequence_length=self.max_sequence_length,
            )
            return Conditioning(neg.expand(batch_size, -1, -1), neg_pooled.expand(batch_size, -1))
        if self.family == "flux":
            neg = self._encode_plain([negative_prompt or ""])
            return Conditioning(neg.embeds.expand(batch_size, -1, -1), neg.pooled.expand(batch_size, -1))
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
        """SDXL's micro-conditioning (original size, crop, target size); ``None`` for the others."""
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


@contextlib.contextmanager
def _quiet_diffusers():
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)
