from learning_pipelines.db.engine import DATABASE_URL_ENV, get_engine


def test_no_url_means_the_warehouse_the_environment_names_now(tmp_path, monkeypatch):
    """A process that changes $LEARNING_PIPELINES_DATABASE_URL (a test, a worker) never keeps the old warehouse."""
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    monkeypatch.setenv(DATABASE_URL_ENV, first)
    assert get_engine().url.database == str(tmp_path / "a.db")
    monkeypatch.setenv(DATABASE_URL_ENV, second)
    assert get_engine().url.database == str(tmp_path / "b.db")
    assert get_engine() is get_engine(second)
