"""The code location loads, validates, and its graph is pinned so a change to it shows in review."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from learning_pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[2]

# Update together with the graph: adding an asset, check, job, schedule or sensor changes this.
EXPECTED_GRAPH = {
    "assets": ["app_due_concepts", "app_recommendations", "app_review_writes", "app_revision_queue",
               "app_todays_revision_queue", "app_todays_target_concepts",
               "card_memory_states", "concept_complexity", "fsrs_global_parameters", "fsrs_parameters",
               "fsrs_shadow_evaluation", "ncf_model",
               "recommendations", "review_logs", "review_logs_partitioned", "revision_queues", "user_interactions"],
    "checks": ["concept_complexity:scores_in_unit_interval", "ncf_model:ncf_beats_popularity",
               "fsrs_global_parameters:weights_within_bounds",
               "fsrs_parameters:tuned_not_worse_than_global", "fsrs_parameters:weights_within_bounds",
               "review_logs:no_future_reviews", "review_logs:reject_rate_below_threshold",
               "review_logs_partitioned:month_matches_unpartitioned_table",
               "revision_queues:every_due_concept_accounted_for", "revision_queues:summary_totals_match_theme_rows"],
    "jobs": ["card_memory_states_job", "concept_complexity_job", "fsrs_global_job", "fsrs_optimization_job",
             "fsrs_shadow_evaluation_job", "ncf_job", "recommendations_job", "review_logs_job",
             "review_logs_partition_backfill", "revision_queues_job"],
    "schedules": ["fsrs_shadow_daily", "fsrs_weekly", "review_logs_nightly"],
    "sensors": ["fsrs_eligibility_sensor", "fsrs_shards_after_global", "learning_pipelines_automation",
                "ncf_retraining_sensor", "recommendations_after_ncf_model", "review_logs_arrivals_sensor",
                "review_logs_partition_backfill_sensor", "revision_queue_rollover_windows",
                "revision_queue_shards_after_states", "run_failure_reporter"],
    "resources": ["alert_webhook", "model_store", "warehouse"],
}


def _graph() -> dict[str, list[str]]:
    definitions = defs()
    repository = definitions.get_repository_def()
    return {
        "assets": sorted(k.to_user_string() for k in repository.asset_graph.get_all_asset_keys()),
        "checks": sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in repository.asset_graph.asset_check_keys),
        "jobs": sorted(j.name for j in repository.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repository.schedule_defs),
        "sensors": sorted(s.name for s in repository.sensor_defs),
        "resources": sorted(definitions.resources),
    }


def test_graph_snapshot():
    assert _graph() == {kind: sorted(names) for kind, names in EXPECTED_GRAPH.items()}


def test_every_partitioned_dependency_has_a_valid_mapping():
    """What `dagster definitions validate` checks, in-process: a shard-partitioned asset reading the
    month-partitioned review log needs an explicit mapping, or the UI refuses the location (in-process
    Dagster infers one, so only the explicit mapping survives into the code server's snapshot)."""
    graph = defs().get_repository_def().asset_graph
    unmapped = []
    for node in graph.asset_nodes:
        for parent in graph.get_parents(node):
            if (node.partitions_def and parent.partitions_def and parent.partitions_def != node.partitions_def
                    and parent.key not in node.partition_mappings):
                unmapped.append(f"{node.key.to_user_string()} <- {parent.key.to_user_string()}")
    assert unmapped == []


@pytest.mark.slow
def test_dg_lists_every_definition():
    """`dg list defs` (dagster-dg-cli) sees exactly the graph above."""
    result = subprocess.run([str(Path(sys.executable).parent / "dg"), "list", "defs", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert sorted(a["asset_key"] for a in listed["assets"]) == EXPECTED_GRAPH["assets"]
    assert sorted(f"{c['asset_key']}:{c['name']}" for c in listed["asset_checks"]) == sorted(EXPECTED_GRAPH["checks"])
    for kind in ("jobs", "schedules", "sensors", "resources"):
        assert sorted(d["name"] for d in listed[kind]) == sorted(EXPECTED_GRAPH[kind])


def test_every_job_schedule_and_sensor_says_what_it_does_and_starts_stopped_in_development():
    repository = defs().get_repository_def()
    undescribed = [d.name for d in [*repository.get_all_jobs(), *repository.schedule_defs, *repository.sensor_defs]
                   if not d.name.startswith("__") and not (d.description or "").strip()]
    assert undescribed == []
    # Development (no LEARNING_PIPELINES_AUTOMATION): nothing launches runs on its own. The failure
    # reporter only records failures, so it runs.
    running = [d.name for d in [*repository.schedule_defs, *repository.sensor_defs]
               if d.default_status.value == "RUNNING"]
    assert running == ["run_failure_reporter"]


@pytest.mark.slow
def test_dagster_definitions_validate():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location learning_pipelines" in result.stdout + result.stderr


def test_learner_shards_default_to_sixteen_and_refuse_a_bad_count():
    from learning_pipelines import settings
    assert settings.checked_shard_count(None) == 16 and settings.checked_shard_count("64") == 64
    for bad in ("0", "-3", "many", "5000"):
        with pytest.raises(ValueError, match="LEARNING_PIPELINES_LEARNER_SHARDS"):
            settings.checked_shard_count(bad)


def test_a_window_run_builds_every_shard_unless_told_fewer():
    from learning_pipelines import settings
    assert settings.checked_window_run_shards(None) == settings.LEARNER_SHARDS
    assert settings.checked_window_run_shards("4") == 4
    assert settings.checked_window_run_shards("5000") == settings.LEARNER_SHARDS
    for bad in ("0", "-1", "all"):
        with pytest.raises(ValueError, match="LEARNING_PIPELINES_WINDOW_RUN_SHARDS"):
            settings.checked_window_run_shards(bad)
