"""A synthetic MLflow study (no training): a SQLite store in a temporary folder with

* ``study``: 2 algorithms x 4 strategies x 3 seeds with known curves, harness-style tags, flattened
  params, a config.yaml artifact and eval image grids (seed 0), one prompt being
  ``<script>alert(1)</script>``, plus one FAILED run that the report must leave out;
* ``hand``: 2 strategies x 2 seeds x 3 points whose table numbers are computed by hand in
  ``test_reporting_tables.py`` (seed given as a param, no ``seed``/``reward`` tags);
* ``bare``: 2 runs without any tags or params (fallbacks).

Built once per session (creating the SQLite schema is the slow part, ~5 s).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

XSS = "<script>alert(1)</script>"
ALGORITHMS = ["ddpo", "alignprop"]
STRATEGIES = ["baseline", "cfg", "phrase", "diffexp"]
SEEDS = [0, 1, 2]
STEPS = [32 * k for k in range(1, 11)]
GAIN = {"baseline": 0.30, "cfg": 0.40, "phrase": 0.45, "diffexp": 0.60}
PROMPTS = ["a red circle above a blue square", XSS]

# the hand-computed set: steps 100/200/300
HAND_STEPS = [100, 200, 300]
HAND_CURVES = {
    ("baseline", 0): [0.1, 0.3, 0.5],
    ("baseline", 1): [0.3, 0.5, 0.7],
    ("diffexp", 0): [0.2, 0.6, 0.8],
    ("diffexp", 1): [0.4, 0.8, 0.6],
}


def reward_curve(algorithm: str, strategy: str, seed: int, steps=STEPS) -> np.ndarray:
    """Saturating learning curve; exploration strategies learn more; small seeded noise."""
    rng = np.random.default_rng(1000 * ALGORITHMS.index(algorithm) + 10 * STRATEGIES.index(strategy) + seed)
    scale = 120.0 if algorithm == "ddpo" else 80.0
    s = np.asarray(steps, dtype=float)
    return 0.2 + GAIN[strategy] * (1 - np.exp(-s / scale)) + rng.normal(0, 0.02, s.size)


def _metrics(algorithm: str, strategy: str, seed: int) -> dict[str, list[tuple[int, float]]]:
    reward = reward_curve(algorithm, strategy, seed)
    s = np.asarray(STEPS, dtype=float)
    keep = 400.0 if strategy != "baseline" else 150.0
    out = {
        "reward_mean": reward,
        "reward_std": 0.1 + 0.0 * s,
        "reward_max": reward + 0.2,
        "diversity": 0.1 + 0.4 * np.exp(-s / keep) + 0.01 * seed,
        "loss": 0.5 * np.exp(-s / 200),
        "cfg_scale_mean": 5.0 + (1.0 if strategy in ("cfg", "diffexp") else 0.0) + 0.0 * s,
        "reward_queries": s,
    }
    if algorithm == "ddpo":
        out["approx_kl"] = 1e-4 + 0.0 * s
        out["clipfrac"] = 0.1 + 0.0 * s
    series = {k: [(int(t), float(v)) for t, v in zip(STEPS, vals)] for k, vals in out.items()}
    eval_steps = STEPS[1::2]
    eval_reward = reward_curve(algorithm, strategy, seed + 50, eval_steps) + 0.05
    hacking = strategy == "baseline"
    gt = [0.3 + (0.25 * math.sin(math.pi * t / STEPS[-1]) if hacking else 0.35 * t / STEPS[-1]) for t in eval_steps]
    series["eval_reward_mean"] = list(zip(eval_steps, eval_reward.tolist()))
    series["eval_diversity"] = [(t, 0.3 - 0.1 * t / STEPS[-1]) for t in eval_steps]
    series["eval_gt_accuracy"] = list(zip(eval_steps, gt))
    return series


def _grid_png(path, strategy: str, step: int) -> None:
    """A small captioned eval grid like the runner's (2 prompts x 2 samples, 48 px cells)."""
    from PIL import Image

    from diffexp.visualize import captioned_grid

    rng = np.random.default_rng(step)
    colour = {"baseline": (120, 120, 120), "cfg": (31, 119, 180), "phrase": (255, 127, 14), "diffexp": (214, 39, 40)}[strategy]
    images = [Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)) for _ in range(4)]
    captions = [f"{p} | r={0.1 * i:.2f}" for i, p in enumerate([PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]])]
    captioned_grid(images, captions, ncols=4, cell=96).save(path)


def _log(client, run_id: str, series: dict, params: dict | None = None, tags: dict | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric(k, v, 1_700_000_000_000 + step, step) for k, pts in series.items() for step, v in pts]
    for i in range(0, len(metrics), 900):  # log_batch accepts at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[i : i + 900])
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


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
    for algorithm in ALGORITHMS:
        for strategy in STRATEGIES:
            for seed in SEEDS:
                name = f"{algorithm}-{strategy}-s{seed}" + (f" {XSS}" if (algorithm, strategy, seed) == ("ddpo", "baseline", 0) else "")
                run = client.create_run(exp, run_name=name)
                run_id = run.info.run_id
                config = {"algorithm": algorithm, "exploration": {"strategy": strategy}, "run": {"seed": seed, "name": name},
                          "prompts": {"set": "list", "prompts": PROMPTS}, "reward": {"name": "embedded_alignment"}}
                _log(client, run_id, _metrics(algorithm, strategy, seed),
                     params={"algorithm": algorithm, "exploration.strategy": strategy, "run.seed": seed,
                             "prompts.prompts": PROMPTS, "train.learning_rate": 3e-4},
                     tags={"algorithm": algorithm, "strategy": strategy, "seed": seed, "reward": "embedded_alignment",
                           "prompt_set": "embedded_relations", "config_hash": f"{abs(hash(name)) % 10**8:08d}",
                           "checkpoint_dir": str(work / name / "checkpoints"), "mlflow.source.git.commit": "0123456789abcdef"})
                (work / run_id).mkdir()
                (work / run_id / "config.yaml").write_text(yaml.safe_dump(config))
                client.log_artifact(run_id, str(work / run_id / "config.yaml"))
                if seed == 0:
                    for step in (STEPS[0], STEPS[3], STEPS[6], STEPS[-1]):
                        png = work / f"queries_{step:08d}.png"
                        _grid_png(png, strategy, step)
                        client.log_artifact(run_id, str(png), artifact_path="eval_images")
                client.set_terminated(run_id)
    failed = client.create_run(exp, run_name="ddpo-diffexp-crashed")
    _log(client, failed.info.run_id, {"reward_mean": [(32, 0.9)]}, tags={"algorithm": "ddpo", "strategy": "diffexp", "seed": 9})
    client.set_terminated(failed.info.run_id, status="FAILED")

    hand = client.create_experiment("hand", artifact_location=(root / "artifacts-hand").as_uri())
    for (strategy, seed), values in HAND_CURVES.items():
        run = client.create_run(hand, run_name=f"hand-{strategy}-{seed}")
        _log(client, run.info.run_id, {"reward_mean": list(zip(HAND_STEPS, values))},
             params={"run.seed": seed}, tags={"algorithm": "ddpo", "strategy": strategy})
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
    from benchmark.reporting.report import build_report

    out = tmp_path_factory.mktemp("report") / "study"
    return build_report(mlflow_study["root"], out=out, experiments=["study"], reps=500, seed=0)
