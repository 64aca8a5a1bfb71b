"""A synthetic MLflow study (no training): a SQLite store in a temporary folder with

* ``study``: three of the four cells of the main job (DDPO x aesthetic, DDPO x alignment,
  AlignProp x aesthetic: a subset, so a figure drawn per algorithm x task would show an empty
  panel) x 4 strategies x 3 seeds, with known curves: held-out evaluations at 0 queries (the same
  base-model value for every run of a cell) and five more budgets, harness-style tags, flattened
  params, a config.yaml artifact and, for seed 0, the evaluation files of every evaluation (grid,
  sample strip, prompts), one prompt being ``<script>alert(1)</script>``; DDPO x alignment's
  baseline does not learn; plus one FAILED run that the report must leave out;
* ``hand``: 2 strategies x 2 seeds x 3 points whose table numbers are computed by hand in
  ``test_tables.py`` (seed given as a param, no ``seed``/``reward`` tags);
* ``bare``: 2 runs without any tags or params (fallbacks).

Built once per session (creating the SQLite schema is the slow part, ~5 s).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

XSS = "<script>alert(1)</script>"
#: (algorithm, reward, prompt set) of each synthetic cell
CELLS = [
    ("ddpo", "embedded_aesthetic", "embedded_objects"),
    ("ddpo", "embedded_alignment", "embedded_relations"),
    ("alignprop", "embedded_aesthetic", "embedded_objects"),
]
ALGORITHMS = ["ddpo", "alignprop"]
STRATEGIES = ["baseline", "cfg", "phrase", "diffexp"]
SEEDS = [0, 1, 2]
STEPS = [32 * k for k in range(1, 11)]
EVAL_STEPS = [0, 64, 128, 192, 256, 320]
GAIN = {"baseline": 0.30, "cfg": 0.40, "phrase": 0.45, "diffexp": 0.60}
PROMPTS = ["a red circle above a blue square", XSS]
EVAL_PROMPTS = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]]
TILE = 32

# the hand-computed set: steps 100/200/300
HAND_STEPS = [100, 200, 300]
HAND_CURVES = {
    ("baseline", 0): [0.1, 0.3, 0.5],
    ("baseline", 1): [0.3, 0.5, 0.7],
    ("diffexp", 0): [0.2, 0.6, 0.8],
    ("diffexp", 1): [0.4, 0.8, 0.6],
}


def _gain(cell, strategy: str) -> float:
    """The baseline of DDPO x alignment does not learn (nor does anything else there)."""
    return 0.0 if cell[:2] == ("ddpo", "embedded_alignment") else GAIN[strategy]


def reward_curve(cell, strategy: str, seed: int, steps=STEPS) -> np.ndarray:
    """Saturating learning curve from 0.2; exploration strategies learn more; small seeded noise
    (none at 0 queries: every run of a cell starts from the same base model and noise)."""
    rng = np.random.default_rng(1000 * CELLS.index(cell) + 10 * STRATEGIES.index(strategy) + seed)
    scale = 120.0 if cell[0] == "ddpo" else 80.0
    s = np.asarray(steps, dtype=float)
    return 0.2 + _gain(cell, strategy) * (1 - np.exp(-s / scale)) + np.where(s > 0, rng.normal(0, 0.02, s.size), 0.0)


def _metrics(cell, strategy: str, seed: int) -> dict[str, list[tuple[int, float]]]:
    algorithm, reward, _ = cell
    train = reward_curve(cell, strategy, seed)
    s = np.asarray(STEPS, dtype=float)
    keep = 400.0 if strategy != "baseline" else 150.0
    out = {
        "reward_mean": train,
        "reward_std": 0.1 + 0.0 * s,
        "reward_max": train + 0.2,
        "diversity": 0.1 + 0.4 * np.exp(-s / keep) + 0.01 * seed,
        "loss": 0.5 * np.exp(-s / 200),
        "cfg_scale_mean": 5.0 + (1.0 if strategy in ("cfg", "diffexp") else 0.0) + 0.0 * s,
        "reward_queries": s,
    }
    if algorithm == "ddpo":
        out["approx_kl"] = 1e-4 + 0.0 * s
        out["clipfrac"] = 0.1 + 0.0 * s
    series = {k: [(int(t), float(v)) for t, v in zip(STEPS, vals)] for k, vals in out.items()}
    held = reward_curve(cell, strategy, seed + 50, EVAL_STEPS) + 0.05
    e = np.asarray(EVAL_STEPS, dtype=float)
    hacking = strategy == "baseline"
    other = "embedded_alignment" if reward == "embedded_aesthetic" else "embedded_aesthetic"
    series["eval_reward_mean"] = list(zip(EVAL_STEPS, held.tolist()))
    series["eval_gt_accuracy"] = list(
        zip(EVAL_STEPS, (0.3 + (0.25 * np.sin(np.pi * e / e[-1]) if hacking else 0.35 * e / e[-1])).tolist())
    )
    series["eval_gt_aesthetic"] = list(zip(EVAL_STEPS, (6.0 + 2 * (held - held[0])).tolist()))
    series[f"eval_score_{other}"] = list(zip(EVAL_STEPS, (20.0 - 3 * (held - held[0])).tolist()))
    series[f"eval_score_{reward}"] = series[
        "eval_reward_mean"
    ]  # as a run with both in run.eval_rewards would not log: must be ignored
    series["eval_diversity"] = [(int(t), 0.3 - 0.1 * t / e[-1]) for t in e]
    series["eval_vendi"] = [(int(t), 1.5 - 0.2 * t / e[-1]) for t in e]
    return series


def _eval_files(folder, strategy: str, step: int) -> list:
    """The files an evaluation writes (``diffexp.evaluation.artifacts``): captioned grid, sample strip, prompts."""
    from PIL import Image

    from diffexp.evaluation.artifacts import PROMPTS_NAME, grid_name, samples_name
    from diffexp.visualize import captioned_grid

    rng = np.random.default_rng(step)
    colour = {"baseline": (120, 120, 120), "cfg": (31, 119, 180), "phrase": (255, 127, 14), "diffexp": (214, 39, 40)}[
        strategy
    ]
    colour = (90, 160, 90) if step == 0 else colour  # the base model's samples look alike in every run
    images = [
        Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 25, (TILE, TILE, 3)), 0, 255).astype(np.uint8))
        for _ in EVAL_PROMPTS
    ]
    captions = [f"{p} | r={0.1 * i:.2f}" for i, p in enumerate(EVAL_PROMPTS)]
    folder.mkdir(parents=True, exist_ok=True)
    captioned_grid(images, captions, ncols=4, cell=96).save(folder / grid_name(step))
    strip = Image.new("RGB", (TILE * len(images), TILE))
    for i, image in enumerate(images):
        strip.paste(image, (i * TILE, 0))
    strip.save(folder / samples_name(step))
    (folder / PROMPTS_NAME).write_text(json.dumps(EVAL_PROMPTS))
    return [folder / grid_name(step), folder / samples_name(step), folder / PROMPTS_NAME]


def _log(client, run_id: str, series: dict, params: dict | None = None, tags: dict | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric(k, v, 1_700_000_000_000 + step, step) for k, pts in series.items() for step, v in pts]
    for i in range(0, len(metrics), 900):  # log_batch accepts at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[i : i + 900])
    client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


@pytest.fixture(scope="session")
def mlflow_study(tmp_path_factory):
    """{'root': study folder holding mlflow.db, 'uri': its tracking URI}."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("study")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    work = root / "work"
    work.mkdir()

    exp = client.create_experiment("study", artifact_location=(root / "artifacts").as_uri())
    for cell in CELLS:
        algorithm, reward, prompt_set = cell
        for strategy in STRATEGIES:
            for seed in SEEDS:
                name = f"{algorithm}-{reward}-{strategy}-s{seed}" + (
                    f" {XSS}" if (cell, strategy, seed) == (CELLS[0], "baseline", 0) else ""
                )
                run = client.create_run(exp, run_name=name)
                run_id = run.info.run_id
                config = {
                    "algorithm": algorithm,
                    "exploration": {"strategy": strategy},
                    "run": {"seed": seed, "name": name, "output_dir": str(work / "trials")},
                    "prompts": {"set": "list", "prompts": PROMPTS},
                    "reward": {"name": reward},
                }
                _log(
                    client,
                    run_id,
                    _metrics(cell, strategy, seed),
                    params={
                        "algorithm": algorithm,
                        "exploration.strategy": strategy,
                        "run.seed": seed,
                        "prompts.prompts": PROMPTS,
                        "train.learning_rate": 3e-4,
                    },
                    tags={
                        "algorithm": algorithm,
                        "strategy": strategy,
                        "seed": seed,
                        "reward": reward,
                        "prompt_set": prompt_set,
                        "config_hash": f"{abs(hash(name)) % 10**8:08d}",
                        "checkpoint_dir": str(work / name / "checkpoints"),
                        "mlflow.source.git.commit": "0123456789abcdef",
                    },
                )
                (work / run_id).mkdir()
                (work / run_id / "config.yaml").write_text(yaml.safe_dump(config))
                client.log_artifact(run_id, str(work / run_id / "config.yaml"))
                if seed == 0:
                    for step in EVAL_STEPS:
                        for path in _eval_files(work / run_id / "eval", strategy, step):
                            client.log_artifact(run_id, str(path), artifact_path="eval_images")
                client.set_terminated(run_id)
    failed = client.create_run(exp, run_name="ddpo-diffexp-crashed")
    _log(
        client,
        failed.info.run_id,
        {"reward_mean": [(32, 0.9)]},
        tags={"algorithm": "ddpo", "strategy": "diffexp", "seed": 9},
    )
    client.set_terminated(failed.info.run_id, status="FAILED")

    hand = client.create_experiment("hand", artifact_location=(root / "artifacts-hand").as_uri())
    for (strategy, seed), values in HAND_CURVES.items():
        run = client.create_run(hand, run_name=f"hand-{strategy}-{seed}")
        _log(
            client,
            run.info.run_id,
            {"reward_mean": list(zip(HAND_STEPS, values))},
            params={"run.seed": seed},
            tags={"algorithm": "ddpo", "strategy": strategy},
        )
        client.set_terminated(run.info.run_id)

    bare = client.create_experiment("bare", artifact_location=(root / "artifacts-bare").as_uri())
    for k in range(2):
        run = client.create_run(bare, run_name=f"bare-{k}")
        _log(client, run.info.run_id, {"reward_mean": [(10, 0.1 * k), (20, 0.2 + 0.1 * k), (30, 0.3)]})
        client.set_terminated(run.info.run_id)
    return {"root": root, "uri": uri}


@pytest.fixture(scope="session")
def hand_curves():
    """({(strategy, seed): values}, steps) of the hand-computed set."""
    return HAND_CURVES, HAND_STEPS


@pytest.fixture(scope="session")
def study_report(mlflow_study, tmp_path_factory):
    """The report of the ``study`` experiment, built once (fewer bootstrap resamples: speed)."""
    from diffexp.reporting.report import build_report

    out = tmp_path_factory.mktemp("report") / "study"
    return build_report(mlflow_study["root"], out=out, experiments=["study"], reps=500, seed=0)
