"""Property-based bad input: malformed run configs, study files and storage URLs.

Each malformed input is either valid or rejected with the project's own error type whose message
names the field (or the URL) that is wrong; never a traceback from deep inside pydantic, torch,
SQLAlchemy or Optuna. (Prompt-weighting strings: tests/prompts/test_weighting.py.)
"""

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diffexp.algorithms.config import ConfigError, load_config, parse_overrides
from diffexp.algorithms.run_identity import flatten_config
from diffexp.harness.storage import StorageError, parse_storage_url
from diffexp.harness.study import study_from_dict
from diffexp.harness.study_file import StudyError

ROOT = Path(__file__).resolve().parents[1]
RUN_CONFIG = yaml.safe_load((ROOT / "diffexp" / "embedded" / "configs" / "ddpo.yaml").read_text())
TINY_GRID = yaml.safe_load((ROOT / "experiments" / "ablations" / "tiny_grid.yaml").read_text())
EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def leaves(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        out += leaves(value, path + ".") if isinstance(value, dict) and value else [path]
    return out


bad_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
config_keys = st.one_of(
    st.sampled_from(leaves(RUN_CONFIG) + ["algorithm", "train.truncation.k", "exploration.cfg.low", "run.devices"]),
    st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True),  # misspelt and unknown fields
)


def _names_a_field(message: str, keys) -> bool:
    return any(part in message for key in keys for part in key.split("."))


@EXAMPLES
@given(st.dictionaries(config_keys, bad_values, min_size=1, max_size=3))
def test_malformed_run_configs_name_the_field(mutations):
    data = yaml.safe_load(yaml.safe_dump(RUN_CONFIG))
    try:
        load_config(None, {**flatten_config(data), **mutations})
    except ConfigError as err:
        assert _names_a_field(str(err), mutations), (mutations, str(err))


@EXAMPLES
@given(st.text(max_size=200))
def test_arbitrary_config_files_are_rejected_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as err:
        assert str(path) in str(err) or "invalid config" in str(err), str(err)


study_keys = st.one_of(
    st.sampled_from(
        [
            "name",
            "grid",
            "search",
            "objective",
            "workers",
            "heartbeat_interval",
            "grace_period",
            "max_retry",
            "overrides",
            "storage",
            "base",
            "profiles",
            "grid.run.seed",
            "grid.exploration.strategy",
            "objective.direction",
            "objective.metric",
            "overrides.run.num_epochs",
            "base.sample.num_steps",
        ]
    ),
    st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
)


@EXAMPLES
@example({"base": ""})  # found by a fresh-clone CI run: the base resolved to a directory
@given(st.dictionaries(study_keys, bad_values, min_size=1, max_size=3))
def test_malformed_study_files_name_the_field(mutations):
    data = yaml.safe_load(yaml.safe_dump(TINY_GRID))
    for dotted, value in mutations.items():
        head, _, rest = dotted.partition(".")
        if rest and isinstance(data.get(head), dict):
            data[head][rest] = value  # grid axes and overrides are dotted keys themselves
        else:
            data[head] = value
    try:
        study = study_from_dict(data, ROOT / "experiments" / "ablations" / "tiny_grid.yaml")
        for trial in study.trials_for_validation():
            study.build_config(trial)
    except (StudyError, ConfigError) as err:
        message = str(err)
        assert _names_a_field(message, mutations) or "trial" in message, (mutations, message)


url_schemes = st.sampled_from(
    [
        "sqlite",
        "sqlite+pysqlite",
        "postgresql",
        "postgresql+psycopg2",
        "postgresql+asyncpg",
        "mysql+pymysql",
        "redis",
        "journal",
        "oracle",
        "nosuch",
        "http",
        "",
    ]
)


@EXAMPLES
@given(
    st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda s, sep, rest: f"{s}{sep}{rest}",
            url_schemes,
            st.sampled_from(["://", ":///", ":", ":////", "//"]),
            st.text(alphabet="abc/:@.?=%#~ 1", max_size=25),
        ),
    )
)
def test_malformed_storage_urls_name_the_url(tmp_path_factory, url):
    try:
        spec = parse_storage_url(url, tmp_path_factory.getbasetemp() / "run", create_dirs=False)
    except StorageError as err:
        assert "storage" in str(err)
        return
    assert spec.kind in ("rdb", "journal") and spec.url


def test_command_line_overrides_parse_as_yaml_and_name_a_malformed_item():
    assert parse_overrides(["train.timestep_window=[0, 0.25]", "run.name=a=b", "run.num_epochs=3"]) == {
        "train.timestep_window": [0, 0.25],
        "run.name": "a=b",
        "run.num_epochs": 3,
    }
    with pytest.raises(ValueError, match="'train.learning_rate' must look like section.field=value"):
        parse_overrides(["train.learning_rate"])
