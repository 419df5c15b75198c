"""Where the graph meets the learning app: what it writes that the pipelines read (sources), and the views of its read
contract that it reads (consumers), as external assets (`dg.AssetSpec`). Dagster never materializes them; they put
the graph's two ends in the lineage. Later work that reads or serves something of the app declares it here the
same way."""

import dagster as dg

from learning_pipelines.db.learner_queue import APP_VIEWS

APP_GROUP = "app"
APP_OWNERS = ["team:learning-app"]

# What the app writes that the pipelines read, and the assets that read it.
app_review_writes = dg.AssetSpec(
    "app_review_writes", group_name=APP_GROUP, kinds={"app"}, owners=APP_OWNERS,
    description="Reviews the app writes into the warehouse's review_logs as learners answer (imports of review files "
                "are the other way in: `learning-pipelines import FILE`). review_logs_arrivals_sensor reports them.")
user_interactions = dg.AssetSpec(
    "user_interactions", group_name=APP_GROUP, kinds={"app", "sql"}, owners=APP_OWNERS,
    description="Learners' interactions with resources (table user_interactions), written by the app: what the NCF "
                "model trains on.")
SOURCES_READ_BY = {"review_logs": app_review_writes.key, "ncf_model": user_interactions.key}

# The views of the app's read contract (db/learner_queue.py APP_VIEWS; README "Reading from the app") and the assets
# whose tables each one reads.
VIEW_READS = {
    "app_revision_queue": ["revision_queues"],
    "app_todays_revision_queue": ["revision_queues"],
    "app_todays_target_concepts": ["revision_queues"],
    "app_due_concepts": ["card_memory_states"],
    "app_recommendations": ["recommendations"],
}
app_views = [
    dg.AssetSpec(name, group_name=APP_GROUP, kinds={"app", "sql"}, owners=APP_OWNERS, deps=VIEW_READS[name],
                 description=f"View {name} the app reads (columns: {', '.join(columns)}).")
    for name, columns in APP_VIEWS.items()
]


def with_app_sources(defs: dg.Definitions) -> dg.Definitions:
    """`defs` with each asset that reads what the app writes depending on that source, so the lineage starts there."""
    from dagster._record import replace  # Dagster's own copy-with-changes, as its map_asset_specs does

    def reading_the_app(spec: dg.AssetSpec) -> dg.AssetSpec:
        source = SOURCES_READ_BY.get(spec.key.to_user_string())
        return spec.replace_attributes(deps=[*spec.deps, source]) if source else spec

    # A module that imports an asset lists it again; the same object is one asset, its mapped copies would be two.
    unique = list({id(a): a for a in defs.assets or []}.values())
    mappable = [a for a in unique if isinstance(a, (dg.AssetsDefinition, dg.AssetSpec))]
    others = [a for a in unique if not isinstance(a, (dg.AssetsDefinition, dg.AssetSpec))]
    return replace(defs, assets=[*dg.map_asset_specs(reading_the_app, mappable), *others])


@dg.definitions
def app_boundary() -> dg.Definitions:
    return dg.Definitions(assets=[app_review_writes, user_interactions, *app_views])
