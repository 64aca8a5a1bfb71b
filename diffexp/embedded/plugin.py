"""The embedded world as a plugin: what it adds to the library's registries.

Named by the ``diffexp.plugins`` entry point ``embedded`` (``pyproject.toml``), so the library
imports it when it first looks anything up by name; the core never imports the world itself.
A world of a user's own plugs in the same way: a module like this one and an entry point.
"""

from __future__ import annotations

from diffexp.embedded import heldout_metrics, rewards, weights_fingerprint
from diffexp.models import register_pipeline
from diffexp.plugins import register_fingerprint
from diffexp.prompts.base import Prompt
from diffexp.prompts.sets import register_prompt_set

#: the world's registered names: rewards and the evaluator register in their own modules
PIPELINE = "embedded"
PROMPT_SETS = {"embedded_objects": "objects", "embedded_relations": "relations"}
PROMPT_SET_LABELS = {"embedded_objects": "single objects", "embedded_relations": "compositions"}
REWARDS = (rewards.WorldAlignmentReward.name, rewards.WorldAestheticReward.name, rewards.WorldGroundTruthReward.name)
EVALUATOR = heldout_metrics.EVALUATOR


#: what `diffexp strategy-grids --pipeline embedded` draws: two compositions and an object
EXAMPLE_PROMPTS = ("a red circle above a blue square", "a yellow star left of a green triangle", "a purple cross")


@register_pipeline(PIPELINE, example_prompts=EXAMPLE_PROMPTS)
def embedded_pipeline(dtype: str = "fp32", device: str = "cpu", seed: int = 0):
    """The shipped generator (``seed`` is unused: its weights are trained)."""
    from diffexp.embedded.pipeline import load_world_pipeline

    return load_world_pipeline(dtype=dtype, device=device)


def _prompt_set(world_name: str):
    def factory(split: str = "train") -> list[Prompt]:
        from diffexp.embedded.prompt_sets import get_prompt_set

        return [
            Prompt(p.text, tuple(p.phrases), {"labels": p.labels, "split": split})
            for p in get_prompt_set(world_name, split)
        ]

    factory.__doc__ = f"The embedded world's {world_name!r} prompts of ``split`` ('train' or 'heldout')."
    return factory


for _name, _world_name in PROMPT_SETS.items():
    register_prompt_set(_name, label=PROMPT_SET_LABELS[_name], heldout_options={"split": "heldout"})(
        _prompt_set(_world_name)
    )
for _name in (PIPELINE, *REWARDS):
    register_fingerprint(_name, weights_fingerprint)  # retrained shipped weights make other runs
