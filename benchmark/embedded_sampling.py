"""Time to load the shipped embedded model and sample 32 images (20 DDIM steps, CFG 5).

Each repeat runs in a fresh process, so loading is measured cold, as a user would see it:

    python benchmark/embedded_sampling.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, time, torch
t0 = time.perf_counter()
from diffexp.models import get_pipeline
from diffexp.sampling.plan import SamplingPlan
from diffexp.sampling.trajectory import TrajectorySampler
from diffexp.embedded.prompt_sets import get_prompt_set
pipe = get_pipeline({pipeline!r})
t1 = time.perf_counter()
texts = [p.text for p in get_prompt_set("relations", "train")][:32]
sampler = TrajectorySampler(pipe, num_steps={steps}, eta=1.0)
with torch.no_grad():
    plan = SamplingPlan(texts, texts, torch.full((32, {steps}), {cfg}))
    images = sampler.sample(plan, torch.Generator().manual_seed(0)).images
t2 = time.perf_counter()
times = {{"import_and_load_s": t1 - t0, "sample_s": t2 - t1, "total_s": t2 - t0}}
print(json.dumps({{**times, "images": list(images.shape)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="embedded")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    code = CHILD.format(pipeline=args.pipeline, steps=args.steps, cfg=args.cfg)
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for key in ("import_and_load_s", "sample_s", "total_s"):
        print(
            f"{key:>18}: median {statistics.median(r[key] for r in runs):.2f}  "
            f"(runs: {', '.join(f'{r[key]:.2f}' for r in runs)})"
        )


if __name__ == "__main__":
    main()
