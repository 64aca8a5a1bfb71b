"""Storage URLs: defaults, validation messages (what to pip install), opening each kind."""

import importlib.util
import os

import pytest

from diffexp.harness.storage import StorageError, open_storage, parse_storage_url, redact

POSTGRES_URL = os.environ.get("DIFFEXP_TEST_POSTGRES_URL")


def test_default_is_sqlite_inside_the_run_dir(tmp_path):
    spec = parse_storage_url(None, tmp_path / "run")
    assert spec.kind == "rdb" and spec.url == f"sqlite:///{(tmp_path / 'run').resolve()}/optuna.db"
    assert (tmp_path / "run").is_dir()


def test_sqlite_and_journal_urls(tmp_path):
    spec = parse_storage_url(f"sqlite:///{tmp_path}/a/b/optuna.db", tmp_path)  # inside the run dir: made
    assert spec.kind == "rdb" and (tmp_path / "a" / "b").is_dir()
    for url in [f"sqlite:///{tmp_path}/elsewhere/x/optuna.db", f"journal:{tmp_path}/elsewhere/j/optuna.journal"]:
        with pytest.raises(StorageError, match=r"folder .*elsewhere.* does not exist; create it first"):
            parse_storage_url(url, tmp_path / "run")
    assert not (tmp_path / "elsewhere").exists()
    spec = parse_storage_url(f"journal:{tmp_path}/j/optuna.journal", tmp_path)
    assert spec.kind == "journal" and spec.path == (tmp_path / "j" / "optuna.journal").resolve()
    assert parse_storage_url(f"journal://{tmp_path}/x.journal", tmp_path).path == (tmp_path / "x.journal").resolve()


@pytest.mark.parametrize(
    "url, message",
    [
        ("foo://host/db", "unknown database scheme 'foo'"),
        ("optuna.db", "is not a URL; use sqlite:///<file>"),
        ("sqlite:///:memory:", "in-memory SQLite database cannot be shared"),
        ("sqlite://", "in-memory SQLite database cannot be shared"),
        ("journal:", r"journal:<file> needs a file path"),
        ("postgresql+asyncpg://u:p@localhost/db", "async driver 'asyncpg' cannot be used"),
        ("redis://localhost:6379", "Redis journal storage is not supported"),
        ("postgresql://u:p@:::bad", "not a valid SQLAlchemy URL|unknown database scheme"),
    ],
)
def test_bad_urls(tmp_path, url, message):
    with pytest.raises(StorageError, match=message):
        parse_storage_url(url, tmp_path)


@pytest.mark.parametrize(
    "url, module, package",
    [
        ("mysql+pymysql://u:secret@localhost/db", "pymysql", "PyMySQL"),
        ("postgresql+pg8000://u:secret@localhost/db", "pg8000", "pg8000"),
        ("mysql://u:secret@localhost/db", "MySQLdb", "mysqlclient"),
    ],
)
def test_missing_driver_says_what_to_install(tmp_path, url, module, package):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(StorageError, match=f"not installed .*pip install {package}") as info:
        parse_storage_url(url, tmp_path)
    assert "secret" not in str(info.value)  # passwords never appear in messages


def test_redact():
    assert redact("postgresql+psycopg2://me:secret@host:5432/db") == "postgresql+psycopg2://me:***@host:5432/db"
    assert redact("journal:/x/y") == "journal:/x/y"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_open_sqlite_with_heartbeats(tmp_path):
    import optuna

    spec = parse_storage_url(None, tmp_path)
    storage = open_storage(spec, heartbeat_interval=2, grace_period=7)
    assert isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() == 2
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 1})
    trial = study.ask()
    assert trial.suggest_int("x", 0, 3) == 1


def test_open_journal(tmp_path):
    import optuna

    spec = parse_storage_url(f"journal:{tmp_path}/o.journal", tmp_path)
    study = optuna.create_study(storage=open_storage(spec, 2, 7), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=open_storage(spec, 2, 7)).trials) == 2


def test_unreachable_database_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("psycopg2 is not installed")
    spec = parse_storage_url("postgresql+psycopg2://u:secret@127.0.0.1:9/db", tmp_path)  # port 9: nothing listens
    with pytest.raises(StorageError, match=r"cannot open: OperationalError") as info:
        open_storage(spec, 2, 7)
    assert "secret" not in str(info.value)


@pytest.mark.skipif(
    not POSTGRES_URL,
    reason='DIFFEXP_TEST_POSTGRES_URL is not set (start a server: eval "$(bash benchmark/ci/postgres.sh)")',
)
def test_open_postgres(tmp_path):
    import uuid

    import optuna

    spec = parse_storage_url(POSTGRES_URL, tmp_path)
    study = optuna.create_study(storage=open_storage(spec, 2, 7), study_name=f"storage-test-{uuid.uuid4().hex[:8]}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2
