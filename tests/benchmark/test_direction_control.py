"""benchmark/probes/ddpo_direction_control.py's weight variants: only the LoRA B matrices change."""

import pytest
import torch

from benchmark.probes.ddpo_direction_control import lora_variant


@pytest.fixture
def trained():
    g = torch.Generator().manual_seed(0)
    return {
        "blk.to_q.lora_A.weight": torch.randn(4, 8, generator=g),
        "blk.to_q.lora_B.weight": torch.randn(8, 4, generator=g),
        "blk.to_k.lora_A.weight": torch.randn(4, 8, generator=g),
        "blk.to_k.lora_B.weight": torch.randn(8, 4, generator=g),
    }


def test_variants_change_only_lora_b(trained):
    zero, same, negated = (lora_variant(trained, kind) for kind in ("zero", "trained", "negated"))
    for name, value in trained.items():
        if "lora_A" in name:
            for variant in (zero, same, negated):
                assert torch.equal(variant[name], value)
        else:
            assert not zero[name].any()
            assert torch.equal(same[name], value) and torch.equal(negated[name], -value)


def test_random_delta_keeps_each_norm_but_not_the_direction(trained):
    first, second = lora_variant(trained, "random", 0), lora_variant(trained, "random", 1)
    for name, value in trained.items():
        if "lora_B" in name:
            assert first[name].norm() == pytest.approx(value.norm().item(), rel=1e-5)
            cosine = torch.nn.functional.cosine_similarity(first[name].flatten(), value.flatten(), dim=0)
            assert abs(cosine) < 0.9
            assert not torch.equal(first[name], second[name])
    with pytest.raises(ValueError, match="unknown variant"):
        lora_variant(trained, "flipped")
