"""diffexp against the last maintained peer, TRL 0.23.1 (issue #10), in one command:

    python benchmark/peer_comparison.py                 # both pipelines, prints the table
    python benchmark/peer_comparison.py --quick         # fewer repeats, a smoke test

It creates the peer environment on first use (`benchmark/peer/env.py`: TRL 0.23.1 with the
diffusers/transformers it works with, on this project's torch), saves two pipelines to disk in
fp32 (the embedded world model and the SD 1.5 twin), and runs each workload once per
implementation in a fresh process (`peer/diffexp_peer.py`, `peer/trl_peer.py`) with the same steps,
batch sizes, eta, guidance, LoRA rank (4, on to_q/k/v/out) and timestep fraction. Every timed
figure is a median over epochs/steps after the first (warm-up); memory is the peak resident-set
increase of one AlignProp step (`peer/memory.py`), median over steps. The reward is mean
brightness on both sides, so reward cost does not blur the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peer"))
from env import ensure_peer_env  # noqa: E402 (in peer/, importable once sys.path has that folder)

PROMPTS = [
    "a red circle",
    "a blue square above a green star",
    "an orange triangle",
    "a purple cross left of a yellow star",
]
#: The workloads: the embedded defaults' sampling (20 DDIM steps, eta 1, CFG 5) and batch layout.
DDPO = {
    "algorithm": "ddpo",
    "steps": 20,
    "eta": 1.0,
    "guidance": 5.0,
    "sample_batch": 16,
    "sample_batches": 2,
    "train_batch": 8,
    "grad_accum": 2,
    "timestep_fraction": 0.5,
    "lr": 3e-4,
    "seed": 0,
}
ALIGNPROP = {
    "algorithm": "alignprop",
    "steps": 20,
    "eta": 1.0,
    "guidance": 5.0,
    "batch": 8,
    "k": 1,
    "lr": 1e-3,
    "seed": 0,
}
SAMPLER = {"algorithm": "sampler", "steps": 20, "eta": 1.0, "guidance": 5.0, "sample_batch": 16}
TARGETS = {  # issue #10: ratio diffexp / reference, lower is better (the UNet share: higher is better)
    "sampler": 1.10,
    "ddpo_epoch": 0.67,
    "alignprop_step": 0.77,
    "alignprop_memory": 0.80,
    "unet_share": 0.85,
}


def save_pipelines(out: Path) -> dict[str, Path]:
    """The embedded model and the SD 1.5 twin as fp32 diffusers folders both libraries load."""
    from diffexp.embedded.pipeline import load_world_pipeline
    from diffexp.models import get_pipeline

    paths = {"embedded": out / "embedded", "sd15-twin": out / "sd15-twin"}
    load_world_pipeline().save_pretrained(paths["embedded"])
    get_pipeline("tiny-sd15").save_pretrained(paths["sd15-twin"])
    for path in paths.values():
        # transformers 5 saves only tokenizer.json; transformers 4.57's slow CLIPTokenizer needs
        # vocab/merges files, its fast one reads tokenizer.json (same ids: one tokenizers model).
        index = json.loads((path / "model_index.json").read_text())
        index["tokenizer"] = ["transformers", "CLIPTokenizerFast"]
        (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return paths


def run_side(python: Path, script: str, settings: dict, log) -> dict:
    start = time.time()
    proc = subprocess.run(
        [str(python), str(HERE / "peer" / script), json.dumps(settings)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {settings['algorithm']} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(
        f"  {script.split('_')[0]:8s} {settings['algorithm']:9s} {Path(settings['pipeline']).name:10s} done in "
        f"{time.time() - start:.0f}s"
    )
    return result


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def unet_floor(ours: dict, peer: dict, key: str) -> dict:
    """Both sides' UNet shares, and the ratio diffexp would reach with no time outside the UNet
    (its UNet seconds over the peer's whole time): where that floor is above a target, the
    target needs less UNet work than the peer does, not less overhead."""
    ours_s, peer_s = median_after_warmup(ours[key]), median_after_warmup(peer[key])
    ours_share, peer_share = median_after_warmup(ours["unet_share"]), median_after_warmup(peer["unet_share"])
    return {
        "diffexp_unet_share": ours_share,
        "trl_unet_share": peer_share,
        "unet_bound_floor": ours_share * ours_s / peer_s,
    }


def compare(pipelines: dict[str, Path], peer: Path, epochs: int, repeats: int, threads: int, log) -> list[dict]:
    ours = Path(sys.executable)
    rows = []
    for name, path in pipelines.items():
        common = {"pipeline": str(path), "prompts": PROMPTS, "threads": threads}
        sampler = run_side(ours, "diffexp_peer.py", {**SAMPLER, **common, "repeats": repeats}, log)
        rows.append(
            {
                "measure": "trajectory sampling with log-probs / plain diffusers pipeline call",
                "pipeline": name,
                "diffexp": statistics.median(sampler["trajectory_sampler_s"]),
                "reference": statistics.median(sampler["plain_pipeline_s"]),
                "unit": "s",
                "target": TARGETS["sampler"],
                "note": f"max image difference {sampler['max_abs_image_difference']:.1e}",
            }
        )
        d_ours = run_side(ours, "diffexp_peer.py", {**DDPO, **common, "epochs": epochs}, log)
        d_trl = run_side(peer, "trl_peer.py", {**DDPO, **common, "epochs": epochs}, log)
        rows.append(
            {
                "measure": "one DDPO epoch (sample + reward + train) / TRL DDPOTrainer",
                "pipeline": name,
                "diffexp": median_after_warmup(d_ours["epoch_s"]),
                "reference": median_after_warmup(d_trl["epoch_s"]),
                "unit": "s",
                "target": TARGETS["ddpo_epoch"],
                **unet_floor(d_ours, d_trl, "epoch_s"),
                "note": "32 samples, 20 steps, half the timesteps trained",
            }
        )
        a_ours = run_side(ours, "diffexp_peer.py", {**ALIGNPROP, **common, "epochs": epochs}, log)
        a_trl = run_side(peer, "trl_peer.py", {**ALIGNPROP, **common, "epochs": epochs}, log)
        rows.append(
            {
                "measure": "one AlignProp step / TRL AlignPropTrainer",
                "pipeline": name,
                "diffexp": median_after_warmup(a_ours["step_s"]),
                "reference": median_after_warmup(a_trl["step_s"]),
                "unit": "s",
                "target": TARGETS["alignprop_step"],
                **unet_floor(a_ours, a_trl, "step_s"),
                "note": "batch 8, K = 1, gradient checkpointing",
            }
        )
        rows.append(
            {
                "measure": "AlignProp peak memory / TRL",
                "pipeline": name,
                "diffexp": median_after_warmup(a_ours["peak_rss_increase_bytes"]) / 2**20,
                "reference": median_after_warmup(a_trl["peak_rss_increase_bytes"]) / 2**20,
                "unit": "MiB",
                "target": TARGETS["alignprop_memory"],
                "note": "peak RSS increase during a step",
            }
        )
        rows.append(
            {
                "measure": "share of a DDPO epoch inside UNet forward/backward",
                "pipeline": name,
                "diffexp": median_after_warmup(d_ours["unet_share"]),
                "reference": None,
                "unit": "",
                "target": TARGETS["unet_share"],
                "note": "higher is better",
            }
        )
    for row in rows:
        if row["reference"] is None:
            row["ratio"], row["met"] = row["diffexp"], row["diffexp"] >= row["target"]
        else:
            row["ratio"] = row["diffexp"] / row["reference"]
            row["met"] = row["ratio"] <= row["target"]
    return rows


def shares(row: dict) -> str:
    if "unet_bound_floor" not in row:
        return ""
    return f"{row['diffexp_unet_share']:.2f} / {row['trl_unet_share']:.2f}; {row['unet_bound_floor']:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| measure | pipeline | diffexp | TRL 0.23.1 / reference | ratio | target | met | UNet share diffexp / TRL; "
        "floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        ref = f"{r['reference']:.3g}{unit}" if r["reference"] is not None else "-"
        sign = "≥" if r["reference"] is None else "≤"
        lines.append(
            f"| {r['measure']} | {r['pipeline']} | {r['diffexp']:.3g}{unit} | {ref} | {r['ratio']:.2f} | {sign} "
            f"{r['target']} | "
            f"{'yes' if r['met'] else 'no'} | {shares(r)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="2 epochs/steps and 2 sampler repeats (a smoke test, not a measurement)"
    )
    parser.add_argument(
        "--epochs", type=int, default=4, help="epochs (DDPO) / steps (AlignProp) per run; the first is warm-up"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved sampler repeats")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads on both sides")
    parser.add_argument("--out", type=Path, help="write the rows and the machine as JSON")
    args = parser.parse_args()
    epochs, repeats = (2, 2) if args.quick else (args.epochs, args.repeats)
    peer = ensure_peer_env()
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = save_pipelines(Path(tmp))
        rows = compare(pipelines, peer, epochs, repeats, args.threads, log=lambda m: print(m, flush=True))
    print(table(rows))
    if args.out:
        machine = {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
        }
        args.out.write_text(
            json.dumps({"machine": machine, "epochs": epochs, "repeats": repeats, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
