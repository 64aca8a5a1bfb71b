"""diffexp against the last maintained peer, TRL 0.23.1 (issues #10, #34), in one command:

    python benchmark/peer_comparison.py --out benchmark/results/peer_comparison_cpu.json
    python benchmark/peer_comparison.py --quick         # 2 pairs, fewer epochs: a smoke test

It creates the peer environment on first use (`benchmark/peer/env.py`: TRL 0.23.1 with the
diffusers/transformers it works with, on this project's torch), saves two pipelines to disk in
fp32 (the embedded world model and the SD 1.5 twin), and runs each workload in pairs, each side
in a fresh process (`peer/diffexp_peer.py`, `peer/trl_peer.py`), the order alternating between
pairs (`peer/interleave.py`), with the same steps, batch sizes, eta, guidance, LoRA rank (4, on
to_q/k/v/out) and timestep fraction. Within a process every timed figure is a median over
epochs/steps after the first (warm-up); memory is the peak resident-set increase of one
AlignProp step (`peer/instruments.py`), median over steps. Each pair gives a ratio; a row reports
the median ratio, its range (a distribution-free interval, level given) and a bootstrap
interval, and the load average seen before each process. The sampler row's pairs are processes
that time both calls, interleaved. The reward is mean brightness on both sides, so reward cost
does not blur the comparison. ``--out`` appends the run to the file's ``runs``, so two runs on
one machine can be compared (``--compare FILE`` prints how far their medians are apart).
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
from interleave import load_average, run_pairs, summarise  # noqa: E402

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
TARGETS = {  # issue #34: the median ratio diffexp / reference, lower is better (the UNet share: higher is better)
    "sampler": 1.02,
    "ddpo_epoch": 1.00,
    "alignprop_step": 1.00,
    "alignprop_memory": 0.80,
    "unet_share": 0.85,
}


#: the pipelines compared: the embedded world model and the SD 1.5 twin (SD 1.5's layout, random weights)
PIPELINES = ("embedded", "sd15-twin")


def save_pipelines(out: Path) -> dict[str, Path]:
    """The embedded model and the SD 1.5 twin as fp32 diffusers folders both libraries load."""
    from diffexp.embedded.pipeline import load_world_pipeline
    from diffexp.models import get_pipeline

    paths = {name: out / name for name in PIPELINES}
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


def unet_floor(ours: list[dict], peer: list[dict], key: str) -> dict:
    """Both sides' UNet shares (medians over runs), and the ratio diffexp would reach with no time
    outside the UNet (its UNet seconds over the peer's whole time): where that floor is above a
    target, the target needs less UNet work than the peer does, not less overhead."""
    ours_s = statistics.median(median_after_warmup(r[key]) for r in ours)
    peer_s = statistics.median(median_after_warmup(r[key]) for r in peer)
    ours_share = statistics.median(median_after_warmup(r["unet_share"]) for r in ours)
    peer_share = statistics.median(median_after_warmup(r["unet_share"]) for r in peer)
    return {
        "diffexp_unet_share": ours_share,
        "trl_unet_share": peer_share,
        "unet_bound_floor": ours_share * ours_s / peer_s,
    }


def paired_row(measure: str, pipeline: str, ours: list[float], reference: list[float], unit: str, target: float,
               loads: list[float], **extra) -> dict:  # fmt: skip
    """A row from per-pair values of both sides: the median ratio and its intervals."""
    summary = summarise([a / b for a, b in zip(ours, reference)])
    return {
        "measure": measure,
        "pipeline": pipeline,
        "diffexp": statistics.median(ours),
        "reference": statistics.median(reference),
        "unit": unit,
        "target": target,
        "ratio": summary["median"],
        **{f"ratio_{k}": v for k, v in summary.items() if k != "median"},
        "per_pair_ratios": [a / b for a, b in zip(ours, reference)],
        "load_max": max(loads),
        "load_median": statistics.median(loads),
        **extra,
    }


def compare(
    pipelines: dict[str, Path], peer: Path, epochs: int, repeats: int, pairs: int, threads: int, log
) -> list[dict]:
    ours = Path(sys.executable)
    rows = []
    for name, path in pipelines.items():
        common = {"pipeline": str(path), "prompts": PROMPTS, "threads": threads}
        sampler_loads, sampler_runs = [], []
        for _ in range(pairs):  # each process times both calls, interleaved
            sampler_loads.append(load_average())
            sampler_runs.append(run_side(ours, "diffexp_peer.py", {**SAMPLER, **common, "repeats": repeats}, log))
        rows.append(
            paired_row(
                "trajectory sampling with log-probs / plain diffusers pipeline call",
                name,
                [statistics.median(r["trajectory_sampler_s"]) for r in sampler_runs],
                [statistics.median(r["plain_pipeline_s"]) for r in sampler_runs],
                "s",
                TARGETS["sampler"],
                sampler_loads,
                note=f"max image difference {max(r['max_abs_image_difference'] for r in sampler_runs):.1e}",
            )
        )
        workloads = ((DDPO, "epoch_s", "ddpo"), (ALIGNPROP, "step_s", "alignprop"))
        for workload, key, label in workloads:
            settings = {**workload, **common, "epochs": epochs}
            log(f"  {label} on {name}: {pairs} pairs")
            done = run_pairs(
                pairs,
                lambda settings=settings: run_side(ours, "diffexp_peer.py", settings, log),
                lambda settings=settings: run_side(peer, "trl_peer.py", settings, log),
                log,
            )
            a_runs, b_runs = [p["a"] for p in done], [p["b"] for p in done]
            loads = [p[f"load_before_{side}"] for p in done for side in ("a", "b")]
            if label == "ddpo":
                rows.append(
                    paired_row(
                        "one DDPO epoch (sample + reward + train) / TRL DDPOTrainer",
                        name,
                        [median_after_warmup(r[key]) for r in a_runs],
                        [median_after_warmup(r[key]) for r in b_runs],
                        "s",
                        TARGETS["ddpo_epoch"],
                        loads,
                        **unet_floor(a_runs, b_runs, key),
                        note="32 samples, 20 steps, half the timesteps trained",
                    )
                )
                share = statistics.median(median_after_warmup(r["unet_share"]) for r in a_runs)
                rows.append(
                    {
                        "measure": "share of a DDPO epoch inside UNet forward/backward",
                        "pipeline": name,
                        "diffexp": share,
                        "reference": None,
                        "unit": "",
                        "target": TARGETS["unet_share"],
                        "ratio": share,
                        "load_max": max(loads),
                        "load_median": statistics.median(loads),
                        "note": "higher is better",
                    }
                )
                continue
            rows.append(
                paired_row(
                    "one AlignProp step / TRL AlignPropTrainer",
                    name,
                    [median_after_warmup(r[key]) for r in a_runs],
                    [median_after_warmup(r[key]) for r in b_runs],
                    "s",
                    TARGETS["alignprop_step"],
                    loads,
                    **unet_floor(a_runs, b_runs, key),
                    note="batch 8, K = 1, gradient checkpointing",
                )
            )
            rows.append(
                paired_row(
                    "AlignProp peak memory / TRL",
                    name,
                    [median_after_warmup(r["peak_rss_increase_bytes"]) / 2**20 for r in a_runs],
                    [median_after_warmup(r["peak_rss_increase_bytes"]) / 2**20 for r in b_runs],
                    "MiB",
                    TARGETS["alignprop_memory"],
                    loads,
                    note="peak RSS increase during a step",
                )
            )
    for row in rows:
        row["met"] = row["ratio"] >= row["target"] if row["reference"] is None else row["ratio"] <= row["target"]
    return rows


def unet_calls(pipelines: dict[str, Path], peer: Path, pairs: int, threads: int, log) -> list[dict]:
    """One UNet call, forward (CFG batch, no grad) and forward + backward (LoRA), in both
    environments (`peer/unet_call.py`): the same network on the same inputs, so a ratio away
    from 1 is the libraries' code (diffusers, peft, transformers versions) around it."""
    ours, rows = Path(sys.executable), []
    for name, path in pipelines.items():
        settings = {"pipeline": str(path), "batch": DDPO["train_batch"] * 2, "repeats": 5, "threads": threads}
        done = run_pairs(
            pairs,
            lambda settings=settings: run_side(ours, "unet_call.py", {**settings, "algorithm": "unet"}, log),
            lambda settings=settings: run_side(peer, "unet_call.py", {**settings, "algorithm": "unet"}, log),
            log,
        )
        loads = [p[f"load_before_{side}"] for p in done for side in ("a", "b")]
        for key, measure in (
            ("forward_cfg_no_grad_s", "UNet forward, CFG batch of 32, no grad / the peer environment's"),
            ("forward_backward_s", "UNet forward + backward through LoRA, batch 16 / the peer environment's"),
        ):
            rows.append(
                paired_row(
                    measure,
                    name,
                    [p["a"][key] for p in done],
                    [p["b"][key] for p in done],
                    "s",
                    1.00,
                    loads,
                    versions={"diffexp": done[0]["a"]["versions"], "peer": done[0]["b"]["versions"]},
                    operator_calls={"diffexp": done[0]["a"]["operator_calls"], "peer": done[0]["b"]["operator_calls"]},
                    top_operators={"diffexp": done[0]["a"]["top_operators"], "peer": done[0]["b"]["top_operators"]},
                )
            )
    for row in rows:
        row["met"] = row["ratio"] <= row["target"]
    return rows


def shares(row: dict) -> str:
    if "unet_bound_floor" not in row:
        return ""
    return f"{row['diffexp_unet_share']:.2f} / {row['trl_unet_share']:.2f}; {row['unet_bound_floor']:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| measure | pipeline | diffexp | TRL 0.23.1 / reference | median ratio [range, its level] | bootstrap "
        "95% | target | met | UNet share diffexp / TRL; floor | load avg max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        ref = f"{r['reference']:.3g}{unit}" if r["reference"] is not None else "-"
        sign = "≥" if r["reference"] is None else "≤"
        if "ratio_min" in r:
            ratio = f"{r['ratio']:.3f} [{r['ratio_min']:.3f}, {r['ratio_max']:.3f}; {r['ratio_range_level']:.1%}]"
            boot = f"[{r['ratio_bootstrap_lo']:.3f}, {r['ratio_bootstrap_hi']:.3f}]"
        else:
            ratio, boot = f"{r['ratio']:.3f}", "-"
        lines.append(
            f"| {r['measure']} | {r['pipeline']} | {r['diffexp']:.3g}{unit} | {ref} | {ratio} | {boot} | {sign} "
            f"{r['target']} | {'yes' if r['met'] else 'no'} | {shares(r)} | {r['load_max']:.2f} |"
        )
    return "\n".join(lines)


def agreement(runs: list[dict]) -> str:
    """How far each row's median ratio moved between the first two runs (issue #34: within 3%)."""
    first, second = runs[0]["rows"], runs[1]["rows"]
    lines = ["| measure | pipeline | run 1 | run 2 | relative difference |", "|---|---|---|---|---|"]
    for a, b in zip(first, second):
        diff = abs(b["ratio"] - a["ratio"]) / a["ratio"]
        lines.append(f"| {a['measure']} | {a['pipeline']} | {a['ratio']:.3f} | {b['ratio']:.3f} | {diff:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 pairs of 2 epochs/steps (a smoke test)")
    parser.add_argument(
        "--epochs", type=int, default=4, help="epochs (DDPO) / steps (AlignProp) per process; the first is warm-up"
    )
    parser.add_argument("--pairs", type=int, default=6, help="pairs per workload (even: both orders equally often)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved sampler repeats per process")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads on both sides")
    parser.add_argument(
        "--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES), help="which saved pipelines to compare"
    )
    parser.add_argument("--out", type=Path, help="append this run (rows, pairs, machine) to this JSON file")
    parser.add_argument("--compare", type=Path, help="print how the first two runs in this JSON file agree, and exit")
    parser.add_argument(
        "--unet-calls", action="store_true", help="time one UNet call in both environments instead of the workloads"
    )
    args = parser.parse_args()
    if args.compare:
        runs = json.loads(args.compare.read_text())["runs"]
        print(agreement([r for r in runs if r.get("kind", "workloads") == "workloads"]))
        return
    if args.pairs < 1 or args.epochs < 2 or args.repeats < 1:
        parser.error("--pairs and --repeats must be at least 1, --epochs at least 2 (the first is warm-up)")
    epochs, repeats, pairs = (2, 2, 2) if args.quick else (args.epochs, args.repeats, args.pairs)
    peer = ensure_peer_env()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = {k: v for k, v in save_pipelines(Path(tmp)).items() if k in args.pipelines}
        log = lambda m: print(m, flush=True)  # noqa: E731
        if args.unet_calls:
            rows = unet_calls(pipelines, peer, pairs, args.threads, log)
        else:
            rows = compare(pipelines, peer, epochs, repeats, pairs, args.threads, log)
    print(table(rows))
    if args.out:
        machine = {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
        }
        run = {
            "kind": "unet_calls" if args.unet_calls else "workloads",
            "started": started,
            "pipelines": args.pipelines,
            "minutes": round((time.perf_counter() - clock) / 60, 1),
            "machine": machine,
            "epochs": epochs,
            "repeats": repeats,
            "pairs": pairs,
            "rows": rows,
        }
        previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
        runs = previous.get("runs", []) + [run]
        args.out.write_text(json.dumps({"runs": runs}, indent=1))
        same = [r for r in runs if r.get("kind", "workloads") == run["kind"]]
        if len(same) >= 2:
            print(agreement(same[-2:]))


if __name__ == "__main__":
    main()
