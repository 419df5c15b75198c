"""Telling the Dagster instance about reviews that reached the warehouse outside its runs.

An import reports the `review_logs` month partitions it wrote to, as runless materializations:
the importer validated those rows by the same rules as the asset. Automation conditions then see
the months as updated and bring `card_memory_states` up to date. Writes that bypass the importer
are reported by the `review_logs_arrivals_sensor` instead.
"""

from __future__ import annotations

import dagster as dg

REVIEW_LOGS = dg.AssetKey("review_logs")


def report_review_months(instance: dg.DagsterInstance, loaded_by_month: dict[str, int], source: str) -> list[str]:
    """One runless materialization of review_logs per month partition that got reviews; returns the months."""
    for month, n_loaded in sorted(loaded_by_month.items()):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=REVIEW_LOGS, partition=month,
            description=f"{n_loaded} review(s) imported from {source}",
            metadata={"source": source, "reviews_loaded": n_loaded}))
    return sorted(loaded_by_month)
