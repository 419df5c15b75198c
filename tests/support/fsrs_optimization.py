"""The weekly FSRS optimization in-process, as production runs it: the global fit once, then every learner shard."""

import dagster as dg

from learning_pipelines.defs.fsrs import fsrs_global_parameters, fsrs_parameters
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse


def optimize_fsrs(url: str, instance: dg.DagsterInstance | None = None, **kwargs) -> list[dg.ExecuteInProcessResult]:
    """The global fit, then each shard of fsrs_parameters (its checks inside it): one result per run."""
    resources = {"warehouse": Warehouse(database_url=url)}
    results = [dg.materialize([fsrs_global_parameters], resources=resources, instance=instance, **kwargs)]
    for shard in learner_shards.get_partition_keys():
        results.append(dg.materialize([fsrs_parameters], resources=resources,
                                      partition_key=shard, instance=instance, **kwargs))
    return results
