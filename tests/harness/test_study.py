"""Study files: parsing, validation errors that name the field, trial expansion, dry runs."""

import io
from pathlib import Path

import optuna
import pytest
import yaml

from diffexp.algorithms.run_identity import cell_key, config_hash, describe
from diffexp.harness.cli import add_sweep_command, dry_run
from diffexp.harness.study import load_study, study_from_dict
from diffexp.harness.study_file import StudyError

ROOT = Path(__file__).resolve().parents[2]
TINY_GRID = ROOT / "experiments" / "ablations" / "tiny_grid.yaml"


def tiny(**changes) -> dict:
    data = yaml.safe_load(TINY_GRID.read_text())
    data.update(changes)
    return data


def test_tiny_grid_cells():
    study = load_study(TINY_GRID)
    assert study.kind == "grid"
    cells = study.cells()
    assert [c.params for c in cells] == [
        {"exploration.strategy": s, "run.seed": n} for s in ("baseline", "cfg") for n in (0, 1)
    ]
    assert len({c.key for c in cells}) == 4 and all(
        c.key.startswith(f"{c.params['exploration.strategy']}_") for c in cells
    )
    assert cells[0].key == cell_key(cells[0].params)  # stable: derived from the values only
    configs = [study.build_config(c) for c in cells]
    assert [(c.exploration.strategy, c.run.seed) for c in configs] == [
        ("baseline", 0),
        ("baseline", 1),
        ("cfg", 0),
        ("cfg", 1),
    ]
    assert all(c.model.pretrained == "tiny-sd15" and c.sample.num_steps == 2 for c in configs)
    assert len({config_hash(c) for c in configs}) == 4
    tags = describe(configs[2])
    assert tags["algorithm"] == "ddpo" and tags["strategy"] == "cfg" and tags["seed"] == "0"
    assert tags["reward"] == "brightness" and tags["prompt_set"] == "list(2)"


def test_config_hash_ignores_where_a_run_goes():
    study = load_study(TINY_GRID)
    cell = study.cells()[0]
    a = study.build_config(cell, {"run.output_dir": "/x", "run.name": "a", "run.mlflow_run_id": "123"})
    b = study.build_config(cell, {"run.output_dir": "/y", "run.name": "b"})
    assert config_hash(a) == config_hash(b)


def test_named_axis_with_bases_and_section_merging(tmp_path):
    (tmp_path / "ddpo.yaml").write_text(
        yaml.safe_dump(
            {
                "algorithm": "ddpo",
                "model": {"pretrained": "tiny-sd15"},
                "prompts": {"set": "list", "prompts": ["a cat"]},
                "reward": {"name": "brightness"},
                "train": {"learning_rate": 1e-4, "batch_size": 2},
            }
        )
    )
    data = tiny(
        grid={
            "algorithm": {
                "ddpo": {"base": "ddpo.yaml", "overrides": {"train": {"gradient_accumulation_steps": 1}}},
                "alignprop": {"algorithm": "alignprop", "train.truncation": {"mode": "fixed", "k": 1}},
            },
            "run.seed": [3],
        }
    )
    data["base"] = {
        "model": {"pretrained": "tiny-sd15"},
        "sample": {"num_steps": 2, "batch_size": 2, "num_batches_per_epoch": 1},
        "prompts": {"set": "list", "prompts": ["a cat"], "eval_options": {}},
        "reward": {"name": "brightness"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    study = load_study(path)
    ddpo, alignprop = study.cells()
    c1 = study.build_config(ddpo)
    assert (
        c1.algorithm == "ddpo" and c1.train.learning_rate == 1e-4 and c1.train.batch_size == 2
    )  # merged, from the variant's base
    assert c1.train.gradient_accumulation_steps == 1 and c1.run.seed == 3
    c2 = study.build_config(alignprop)
    assert c2.algorithm == "alignprop" and c2.model.pretrained == "tiny-sd15" and c2.train.truncation.k == 1
    assert alignprop.key.startswith("alignprop_3-")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "bad name!"}, "name"),
        (
            {"search": {"n_trials": 2, "space": {"run.seed": {"type": "int", "low": 0, "high": 3}}}},
            "exactly one of `grid`",
        ),
        ({"grid": {}}, "at least one axis"),
        ({"grid": {"run.seed": []}}, "grid.run.seed: give at least one value"),
        ({"grid": {"prompts.prompts": [["a"], ["b"]]}}, "grid.prompts.prompts: value .* is not a scalar"),
        ({"grid": {"run.output_dir": ["a", "b"]}}, "grid.run.output_dir: run.output_dir is set by the harness"),
        ({"overrides": {"run": {"name": "x"}}}, "overrides.run.name: run.name is set by the harness"),
        ({"grace_period": 1}, "grace_period .* must exceed heartbeat_interval"),
        ({"base": "missing.yaml"}, "base: run config .*missing.yaml does not exist"),
        ({"objective": {"direction": "up"}}, "objective.direction"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        (
            {"grid": {"algorithm": {"ddpo": {"base": "a.yaml", "extra": 1, "overrides": {}}}}},
            "grid.algorithm.ddpo.extra: Extra inputs",
        ),
    ],
)
def test_study_errors_name_the_field(change, message):
    with pytest.raises(StudyError, match=message):
        study_from_dict(tiny(**change), TINY_GRID)


@pytest.mark.parametrize(
    "grid, message",
    [
        (
            {"exploration.strategy": ["baseline", "greedy"]},
            r"(?s)trial greedy-\w+ \(exploration.strategy=greedy\).*exploration.strategy: .*unknown exploration "
            r"strategy",
        ),
        ({"sample.num_stepz": [2]}, "sample.num_stepz: Extra inputs are not permitted"),
        ({"train.batch_size": [3]}, "multiple of train.batch_size"),
        ({"reward.name": ["brightness", "shininess"]}, "reward.name: unknown reward 'shininess'"),
        ({"prompts.set": ["nope"]}, "prompts.set: unknown prompt set 'nope'"),
    ],
)
def test_trial_config_errors_name_trial_and_field(grid, message):
    study = study_from_dict(tiny(grid=grid), TINY_GRID)
    with pytest.raises(StudyError, match=message):
        for cell in study.cells():
            study.build_config(cell)


def test_file_errors(tmp_path):
    with pytest.raises(StudyError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(bad)
    bad.write_text("- a list")
    with pytest.raises(StudyError, match="mapping at the top level"):
        load_study(bad)


SEARCH = {
    "sampler": "tpe",
    "n_trials": 4,
    "seed": 0,
    "n_startup_trials": 1,
    "space": {
        "exploration.cfg.kind": {"type": "categorical", "choices": ["low_then_base", "linear"]},
        "exploration.cfg.low": {
            "type": "float_range",
            "low": 0.5,
            "high": 4.0,
            "when": {"exploration.cfg.kind": "low_then_base"},
        },
        "exploration.cfg.start": {"type": "float", "low": 0.0, "high": 3.0, "when": {"exploration.cfg.kind": "linear"}},
        "exploration.phrase.num_phrases": {"type": "int", "low": 1, "high": 3},
    },
}


def search_study(**space_changes):
    search = {**SEARCH, "space": {**SEARCH["space"], **space_changes}}
    data = tiny(search=search)
    del data["grid"]
    return study_from_dict(data, TINY_GRID)


def test_search_suggestions_build_valid_configs():
    study = search_study()
    assert study.kind == "search"
    opt = optuna.create_study(sampler=study.spec.search.build_sampler(), direction="maximize")
    kinds = set()
    for _ in range(8):
        trial = opt.ask()
        params = study.suggest(trial)
        config = study.build_config(study.resolve(params, key=f"t{trial.number:04d}"))
        kinds.add(config.exploration.cfg.kind)
        if config.exploration.cfg.kind == "low_then_base":
            assert "exploration.cfg.start" not in params
            lo, hi = config.exploration.cfg.low
            assert 0.5 <= lo <= hi <= 4.0
        else:
            assert "exploration.cfg.low[lo]" not in params and 0.0 <= config.exploration.cfg.start <= 3.0
        assert 1 <= config.exploration.phrase.num_phrases <= 3
        opt.tell(trial, 0.0)
    assert kinds == {"low_then_base", "linear"}
    examples = study.search_examples()
    assert {p["exploration.cfg.kind"] for p in examples} == {"low_then_base", "linear"}
    for i, p in enumerate(examples):
        study.build_config(study.resolve(p, key=f"example-{i}"))


@pytest.mark.parametrize(
    "space, message",
    [
        (
            {"exploration.cfg.start": {"type": "float", "low": 3.0, "high": 1.0}},
            r"search.space.exploration.cfg.start: .*low \(3.0\) must be < high",
        ),
        (
            {"exploration.cfg.kind": {"type": "categorical", "choices": []}},
            "search.space.exploration.cfg.kind: .*non-empty",
        ),
        ({"exploration.cfg.start": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
        (
            {"exploration.cfg.start": {"type": "float", "low": 0.0, "high": 1.0, "when": {"later.key": 1}}},
            "must be a param listed before",
        ),
        (
            {"run.name": {"type": "categorical", "choices": ["a"]}},
            "search.space.run.name: run.name is set by the harness",
        ),
        (
            {"exploration.cfg.start": {"type": "gaussian", "low": 0.0, "high": 1.0}},
            "search.space.exploration.cfg.start.type",
        ),
    ],
)
def test_search_errors_name_the_field(space, message):
    with pytest.raises(StudyError, match=message):
        search_study(**space)


def test_search_value_error_names_trial_and_field():
    study = search_study(**{"exploration.cfg.fraction": {"type": "float", "low": 0.5, "high": 1.5}})
    with pytest.raises(StudyError, match=r"(?s)trial example-\d+ .*exploration.cfg.fraction"):
        for t in study.trials_for_validation():
            study.build_config(t)


def test_dry_run_prints_every_trial(tmp_path):
    out = io.StringIO()
    assert dry_run(TINY_GRID, run_dir=tmp_path / "rd", out=out) == 0
    text = out.getvalue()
    assert "study tiny_grid: grid, 4 trials" in text and "ok: 4 trial config(s) valid" in text
    for cell in load_study(TINY_GRID).cells():
        assert cell.key in text
    assert f"sqlite:///{(tmp_path / 'rd').resolve()}/optuna.db" in text
    assert not (tmp_path / "rd").exists()  # a dry run creates nothing


def test_dry_run_shipped_studies():
    """The embedded ablation (4 cells x 4 strategies x 3 seeds) and the TPE search validate."""
    out = io.StringIO()
    dry_run(
        ROOT / "diffexp" / "embedded" / "configs" / "embedded_ablation.yaml", run_dir="/tmp/unused-dry-run", out=out
    )
    text = out.getvalue()
    assert "grid, 48 trials" in text and "ok: 48 trial config(s) valid" in text
    for cell in ("ddpo_aesthetic", "ddpo_alignment", "alignprop_aesthetic", "alignprop_alignment"):
        for strategy in ("baseline", "cfg", "phrase", "diffexp"):
            assert sum(line.startswith(f"{cell}_{strategy}_") for line in text.splitlines()) == 3
    out = io.StringIO()
    dry_run(ROOT / "experiments" / "searches" / "embedded_cfg_tpe.yaml", run_dir="/tmp/unused-dry-run", out=out)
    text = out.getvalue()
    assert "search: tpe sampler" in text and "pruner median" in text and "trial config(s) valid" in text
    for kind in ("low_then_base", "linear", "random"):
        assert f"exploration.cfg.kind={kind}" in text


def test_sweep_command_parses():
    import argparse

    parser = argparse.ArgumentParser(prog="diffexp")
    add_sweep_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sweep",
            "s.yaml",
            "--dry-run",
            "--workers",
            "3",
            "--storage",
            "journal:x",
            "--tracking-uri",
            "http://h:5000",
            "--run-dir",
            "d",
        ]
    )
    assert args.dry_run and args.workers == 3 and args.storage == "journal:x" and args.tracking_uri == "http://h:5000"
    assert str(args.run_dir) == "d" and callable(args.func)


def test_cli_errors_name_the_field(tmp_path, capsys):
    from diffexp.harness.cli import sweep_main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny(grid={"exploration.strategy": ["greedy"]})))
    assert sweep_main([str(bad), "--dry-run"]) == 2
    assert "diffexp sweep: error: trial greedy-" in capsys.readouterr().err
    assert sweep_main([str(TINY_GRID), "--dry-run", "--storage", "foo://x"]) == 2
    assert "unknown database scheme 'foo'" in capsys.readouterr().err


def test_diffexp_cli_has_sweep(capsys):
    from diffexp import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if getattr(a, "choices", None) and "train" in a.choices).choices
    if "sweep" not in commands:
        pytest.skip("diffexp sweep is not wired into diffexp/cli.py yet (add_sweep_command)")
    assert cli.main(["sweep", str(TINY_GRID), "--dry-run", "--run-dir", "/tmp/unused-dry-run"]) == 0
    assert "ok: 4 trial config(s) valid" in capsys.readouterr().out


def test_sections_merge_and_plain_fields_replace():
    data = tiny(grid={"run.seed": [0]}, overrides={"reward": {"options": {"a": 1}}})
    data["base"] = {
        **data["base"],
        "reward": {"name": "brightness", "options": {"b": 2}},
        "train": {**data["base"]["train"], "learning_rate": 1e-4},
    }
    data["grid"]["algo"] = {"x": {"train": {"max_grad_norm": 0.5}}}
    study = study_from_dict(data, TINY_GRID)
    cell = study.cells()[0]
    assert cell.overrides["reward.options"] == {"a": 1}  # a dict-valued field is replaced
    assert cell.overrides["train.max_grad_norm"] == 0.5 and "train" not in cell.overrides  # a section merges
    config = study.build_config(cell)
    assert (
        config.reward.options == {"a": 1} and config.train.learning_rate == 1e-4 and config.train.max_grad_norm == 0.5
    )


def test_status_of_a_study_never_run(tmp_path, capsys):
    from diffexp.harness.cli import sweep_main

    assert sweep_main([str(TINY_GRID), "--status", "--run-dir", str(tmp_path / "rd")]) == 2
    assert "no study 'tiny_grid'" in capsys.readouterr().err and not (tmp_path / "rd").exists()


EMBEDDED = ROOT / "diffexp" / "embedded" / "configs" / "embedded_ablation.yaml"


def test_profiles_change_budget_and_seeds_and_keep_their_own_study():
    default, quick, full = (load_study(EMBEDDED, p) for p in (None, "quick", "full"))
    assert (
        default.name == "embedded_ablation"
        and quick.name == "embedded_ablation-quick"
        and full.name == "embedded_ablation-full"
    )
    assert (len(default.cells()), len(quick.cells()), len(full.cells())) == (48, 8, 80)
    assert load_study(EMBEDDED, "default").name == default.name

    def budgets(study):
        out = {}
        for cell in study.cells():
            c = study.build_config(cell)
            out[(c.algorithm, c.reward.name)] = (c.sample.num_steps, c.sample.num_batches_per_epoch, c.run.num_epochs)
        return out

    ddpo_aes, ddpo_ali, ap_aes, ap_ali = (
        ("ddpo", "embedded_aesthetic"),
        ("ddpo", "embedded_alignment"),
        ("alignprop", "embedded_aesthetic"),
        ("alignprop", "embedded_alignment"),
    )
    assert budgets(default) == {ddpo_aes: (10, 2, 10), ddpo_ali: (8, 1, 5), ap_aes: (8, 2, 5), ap_ali: (8, 2, 5)}
    assert budgets(quick) == {
        k: (v[0], v[1], 1) for k, v in budgets(default).items()
    }  # variant overrides merge, the rest stays
    twice = {k: (v[0], v[1], 2 * v[2]) for k, v in budgets(default).items()}
    assert budgets(full) == {**twice, ddpo_ali: (8, 1, 20)}  # DDPO x alignment at four times the default
    assert {s.params["exploration.strategy"] for s in quick.cells()} == {"baseline", "diffexp"}
    assert quick.profile == "quick" and default.profile is None


@pytest.mark.parametrize(
    "profiles, pick, message",
    [
        ({"q": {"grid": {"run.seed": [0]}}}, "nope", "no profile 'nope' (known: default, q)"),
        ({"q": {"grid": {"no.such": [0]}}}, "q", "not axes of the grid"),
        ({"q": {"grid": {"run.seed": {"a": {}}}}}, "q", "a plain axis takes a list"),
        ({"q": {"overrides": {"run.output_dir": "x"}}}, "q", "set by the harness"),
        ({"q": {"workers": 0}}, "q", "profiles.q.workers"),
    ],
)
def test_profile_errors_name_the_field(profiles, pick, message):
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        study_from_dict(tiny(profiles=profiles), TINY_GRID, pick)


def test_search_profile_replaces_budget_and_merges_the_pruner():
    study = load_study(ROOT / "experiments" / "searches" / "embedded_cfg_tpe.yaml", "quick")
    search = study.spec.search
    assert study.name == "embedded_cfg_tpe-quick" and search.n_trials == 10 and search.n_startup_trials == 4
    assert search.pruner.kind == "median" and search.pruner.n_warmup_steps == 32 and search.pruner.n_startup_trials == 3
    assert set(search.space) == set(
        load_study(ROOT / "experiments" / "searches" / "embedded_cfg_tpe.yaml").spec.search.space
    )
    with pytest.raises(StudyError, match="the study is a grid"):
        study_from_dict(tiny(profiles={"q": {"search": {"n_trials": 2}}}), TINY_GRID, "q")


def test_a_cells_config_is_built_once_and_each_caller_gets_its_own_copy(monkeypatch):
    import diffexp.harness.study as study_module
    from diffexp.algorithms.run_identity import config_hash

    built = []
    real = study_module.load_config
    monkeypatch.setattr(study_module, "load_config", lambda *a, **k: built.append(a) or real(*a, **k))
    study = load_study(TINY_GRID)
    cell = study.cells()[0]
    validation = study.build_config(cell, {"run.name": "validation"})
    trial = study.build_config(cell, {"run.output_dir": "/somewhere/trials", "run.name": cell.key})
    assert len(built) == 1  # where a run goes is set on a copy; what it does was validated once
    assert (validation.run.name, trial.run.name) == ("validation", cell.key) and validation is not trial
    before = list(validation.run.loggers)
    trial.run.loggers = ["mlflow"]  # a caller's change stays in its copy
    assert study.build_config(cell).run.loggers == before
    assert config_hash(validation) == config_hash(trial)
    study.build_config(cell, {"run.num_epochs": 1})  # not a location: a run of its own, validated
    assert len(built) == 2
