"""The lineage starts at what the app writes and ends at the views it reads: external assets (dg.AssetSpec), never
materialized by a job, so the graph shows its sources and consumers."""

import dagster as dg

from learning_pipelines.db.learner_queue import APP_VIEWS
from learning_pipelines.definitions import defs


def _graph():
    return defs().get_repository_def().asset_graph


def _names(keys) -> set[str]:
    return {key.to_user_string() for key in keys}


def test_the_apps_writes_are_external_sources_of_the_assets_that_read_them():
    graph = _graph()
    for source, reader in (("app_review_writes", "review_logs"), ("user_interactions", "ncf_model")):
        node = graph.get(dg.AssetKey(source))
        assert not node.is_materializable and node.group_name == "app"
        assert node.parent_keys == set()
        assert source in _names(graph.get(dg.AssetKey(reader)).parent_keys)


def test_every_view_the_app_reads_is_an_external_consumer_of_the_assets_writing_its_tables():
    graph = _graph()
    consumers = {key.to_user_string() for key in graph.get_all_asset_keys()
                 if key.to_user_string().startswith("app_") and key.to_user_string() != "app_review_writes"}
    assert consumers == set(APP_VIEWS)
    reads = {"app_revision_queue": {"revision_queues"}, "app_todays_revision_queue": {"revision_queues"},
             "app_todays_target_concepts": {"revision_queues"}, "app_due_concepts": {"card_memory_states"},
             "app_recommendations": {"recommendations"}}
    for view in APP_VIEWS:
        node = graph.get(dg.AssetKey(view))
        assert not node.is_materializable and node.group_name == "app"
        assert _names(node.parent_keys) == reads[view] and node.child_keys == set()


def test_no_job_tries_to_materialize_the_external_assets():
    repository = defs().get_repository_def()
    external = {dg.AssetKey(name) for name in ("app_review_writes", "user_interactions", *APP_VIEWS)}
    for job in repository.get_all_jobs():
        assert not external & set(job.asset_layer.executable_asset_keys), job.name
