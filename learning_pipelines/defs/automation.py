"""What tells Dagster that reviews arrived, and the sensor that acts on the assets' automation conditions."""


import dagster as dg

from learning_pipelines import settings
from learning_pipelines.db.memory_state_progress import months_beyond_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.domain.fingerprints import fingerprint

automation = dg.AutomationConditionSensorDefinition(
    "learning_pipelines_automation",
    target=dg.AssetSelection.all(),
    default_status=settings.DEFAULT_SENSOR_STATUS,
    minimum_interval_seconds=30,
    description="Evaluates every asset's automation condition: card_memory_states as soon as reviews or "
                "weights change (eager), concept_complexity once a day at 02:00 (the schedule time zone). Off in "
                "development; "
                f"{settings.AUTOMATION_ENV}=on starts it with the other schedules and sensors.",
)


@dg.sensor(minimum_interval_seconds=60, default_status=settings.DEFAULT_SENSOR_STATUS,
           description=("Notices reviews written to the warehouse without an import telling Dagster (the app's own "
                        "writes): the months holding reviews that card_memory_states does not include yet are reported "
                        "as updated review_logs partitions, with the highest review number as their data version, so "
                        "automation brings the states up to date. The same months with the same reviews are reported "
                        "once; imported reviews the states have not taken in yet may be reported a second time, which "
                        "costs at most one run with nothing new."))
def review_logs_arrivals_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    with warehouse.begin() as conn:
        months = months_beyond_states(conn)
    if months.empty:
        return dg.SensorResult(skip_reason="card_memory_states includes every stored review", cursor=context.cursor)
    # A review committed late with a lower number changes the counts, so it is reported too.
    reported = fingerprint(months)
    if reported == context.cursor:
        return dg.SensorResult(skip_reason=f"{int(months['n_reviews'].sum())} review(s) not in card_memory_states, "
                                           "already reported", cursor=context.cursor)
    return dg.SensorResult(
        asset_events=[dg.AssetMaterialization(
            asset_key=review_logs.key, partition=row.month,
            description=f"{row.n_reviews} review(s) not yet in card_memory_states",
            metadata={"reviews_not_in_memory_states": int(row.n_reviews), "highest_review_number": int(row.highest_seq)},
            tags={"dagster/data_version": str(int(row.highest_seq))})
            for row in months.itertuples()],
        cursor=reported)
