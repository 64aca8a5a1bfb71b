"""Peak memory of one AlignProp step with and without UNet gradient checkpointing (same batch).

Each setting runs in a fresh process; on CPU the figure is the process's peak RSS growth over the
step, on CUDA ``torch.cuda.max_memory_allocated``:

    python benchmark/alignprop_memory.py --pipeline embedded --k 10 --batch 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, torch
from diffexp.models import get_pipeline
from diffexp.models.lora import add_lora
from diffexp.sampling.plan import SamplingPlan
from diffexp.sampling.trajectory import TrajectorySampler
device = {device!r}
pipe = get_pipeline({pipeline!r}, device=device)
params = add_lora(pipe.unet)
sampler = TrajectorySampler(pipe, num_steps={steps}, eta=1.0, gradient_checkpointing={ckpt})
texts = ["a red circle above a blue square"] * {batch}
plan = SamplingPlan(texts, texts, torch.full(({batch}, {steps}), 5.0))
mask = torch.arange({steps}) >= {steps} - {k}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
traj = sampler.sample(plan, torch.Generator().manual_seed(0), grad_steps=mask)
traj.images.mean().backward()
if device == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({{"peak_mib": peak}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="embedded")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--k", type=int, default=10, help="steps that carry gradient")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    results = {}
    for ckpt in (True, False):
        code = CHILD.format(
            device=args.device, pipeline=args.pipeline, steps=args.steps, ckpt=ckpt, batch=args.batch, k=args.k
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        results[ckpt] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    print(f"AlignProp step, {args.pipeline}, batch {args.batch}, K={args.k} of {args.steps} steps, {args.device}:")
    print(f"  gradient checkpointing on : {results[True]:8.1f} MiB peak")
    print(
        f"  gradient checkpointing off: {results[False]:8.1f} MiB peak  (on/off = {results[True] / results[False]:.2f})"
    )


if __name__ == "__main__":
    main()
