from learning_pipelines.db.engine import DATABASE_URL_ENV, get_engine


def test_no_url_means_the_warehouse_the_environment_names_now(tmp_path, monkeypatch):
    """A process that changes $LEARNING_PIPELINES_DATABASE_URL (a test, a worker) never keeps the old warehouse."""
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    monkeypatch.setenv(DATABASE_URL_ENV, first)
    assert get_engine().url.database == str(tmp_path / "a.db")
    monkeypatch.setenv(DATABASE_URL_ENV, second)
    assert get_engine().url.database == str(tmp_path / "b.db")
    assert get_engine() is get_engine(second)


def test_a_failed_statement_never_prints_its_parameters(warehouse_url):
    import pytest
    import sqlalchemy as sa

    from learning_pipelines.db import tables

    with pytest.raises(sa.exc.IntegrityError) as failure:
        with get_engine(warehouse_url).begin() as conn:
            conn.execute(tables.users.insert(), [{"user_id": 424242, "external_ref": "alice@example.org"}] * 2)
    # (PostgreSQL's own DETAIL line may still name the conflicting key.)
    assert "alice@example.org" not in str(failure.value) and "hide_parameters" in str(failure.value)
