"""The embedded world: a tiny procedural text-to-image world of coloured shapes.

It replaces the paper's large-scale setting (Stable Diffusion + LAION aesthetic
predictor + animal prompts) with something a small model can learn on one GPU,
while keeping every quantity measurable from pixels:

- ``scenes``: procedural 32x32 scenes, their captions and ground-truth labels;
- ``evaluator``: pixel-only ground-truth judge of "does this image match its caption";
- ``aesthetic_rule``: the hidden procedural "aesthetic" score a reward model learns;
- ``prompt_sets``: the "objects" and "relations" prompt sets with train/held-out splits.
"""
