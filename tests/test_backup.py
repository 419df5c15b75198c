import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from learning_pipelines.db import maintenance
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.simulate import simulate_platform

CLI = str(Path(sys.executable).parent / "learning-pipelines")


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("users", "review_logs", "user_interactions")}


def test_backup_drop_restore_verify(warehouse_url, warehouse_engine, tmp_path):
    load_platform(warehouse_engine, simulate_platform(n_learners=20, n_concepts=30, n_resources=10, days=90, seed=4))
    before = _counts(warehouse_engine)
    assert maintenance.verify(warehouse_engine) == []

    backup = tmp_path / "warehouse.backup"
    result = subprocess.run([CLI, "db", "backup", str(backup), "--database-url", warehouse_url],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and backup.stat().st_size > 0, result.stderr

    with warehouse_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE review_logs" + (" CASCADE" if warehouse_engine.dialect.name == "postgresql" else "")))
    broken = subprocess.run([CLI, "db", "verify", "--database-url", warehouse_url], capture_output=True, text=True)
    assert broken.returncode == 1 and "missing table(s): review_logs" in broken.stdout

    restored = subprocess.run([CLI, "db", "restore", str(backup), "--database-url", warehouse_url],
                              capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr
    warehouse_engine.dispose()
    verified = subprocess.run([CLI, "db", "verify", "--database-url", warehouse_url], capture_output=True, text=True)
    assert verified.returncode == 0 and verified.stdout.strip() == "ok", verified.stdout
    assert _counts(warehouse_engine) == before


def test_verify_finds_months_stuck_in_the_default_partition(empty_postgres_url):
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine

    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (user_id) VALUES (1)"))
        conn.execute(sa.text("INSERT INTO concepts (concept_id, name) VALUES (1, 'c')"))
        conn.execute(sa.text("INSERT INTO review_logs (id, reviewed_at, user_id, concept_id, rating, review_duration_ms) "
                             "VALUES (1, '2024-05-02T00:00:00Z', 1, 1, 3, 1000)"))  # lands in DEFAULT
    assert maintenance.verify(engine) == ["reviews of 2024-05 have no partition (they sit in review_logs_default)"]
