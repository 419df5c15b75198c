import collections
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import torch

from learning_pipelines.cli import main as cli_main
from learning_pipelines.db import bulk, tables
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.ncf import NcfTrainingConfig, ncf_model, ncf_retraining_sensor
from learning_pipelines.defs.recommendations import recommendations, recommendations_after_ncf_model
from learning_pipelines.defs.resources import LocalModelStore, Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.learner_shards import learners_in
from learning_pipelines.domain.metrics import hit_rate_gap
from learning_pipelines.domain.ncf_checkpoint import NcfCheckpoint
from learning_pipelines.domain.ncf_config import NcfConfig
from learning_pipelines.domain.ncf_fit import evaluate_neumf, fit_and_evaluate
from learning_pipelines.domain.ncf_model import NeuMF
from learning_pipelines.domain.ncf_protocol import leave_one_out, validation_split
from learning_pipelines.domain.ncf_search import choose_config
from learning_pipelines.domain.ncf_training import NeumfTraining
from learning_pipelines.domain.simulate import simulate_platform

FAST = dataclasses.replace(NcfConfig(), epochs=8)


def _interactions(platform) -> pd.DataFrame:
    return platform.user_interactions.rename(columns={"user_id": "user", "resource_id": "item", "occurred_at": "time"})


@pytest.mark.slow
def test_ncf_beats_popularity_on_simulated_learners():
    platform = simulate_platform(n_learners=400, n_concepts=60, n_resources=150, days=60, mean_cards_per_learner=5,
                                 seed=3)
    scores = evaluate_neumf(_interactions(platform), FAST)
    assert scores["hr_at_10"] > scores["popularity_hr_at_10"]
    assert scores["n_users"] == 400 and 0 < scores["ndcg_at_10"] <= scores["hr_at_10"]
    assert evaluate_neumf(_interactions(platform), FAST)["hr_at_10"] == scores["hr_at_10"], "deterministic per seed"


def test_leave_one_out_holds_out_the_latest_item_among_unseen_ones():
    interactions = pd.DataFrame({"user": [5, 5, 5, 9, 9], "item": [1, 2, 3, 2, 3], "time": [1, 3, 2, 1, 2]})
    split = leave_one_out(interactions, n_candidates=3, seed=1)
    # users 5, 9 -> codes 0, 1; items 1, 2, 3 -> codes 0, 1, 2
    assert split.test_item.tolist() == [1, 2]
    assert sorted(map(tuple, split.train[["user", "item"]].values.tolist())) == [(0, 0), (0, 2), (1, 1)]
    assert split.candidates[1, 0] == 2 and set(split.candidates[1, 1:]) <= {0}


def test_an_earlier_interaction_with_the_held_out_item_is_not_trained_on():
    interactions = pd.DataFrame({"user": [1, 1, 1], "item": [4, 5, 4], "time": [1, 2, 3]})
    split = leave_one_out(interactions, n_candidates=2)
    assert split.test_item.tolist() == [0] and split.train[["user", "item"]].values.tolist() == [[0, 1]]


def _timeline(n_users: int = 30, n_items: int = 40, per_user: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"user": user, "item": int(item), "time": int(when)} for user in range(n_users)
                         for item, when in zip(rng.choice(n_items, per_user, replace=False),
                                               rng.permutation(per_user))])


def test_the_gap_to_a_baseline_is_paired_over_the_same_held_out_items():
    # Held-out item in column 0: the model ranks it first for users 0-2, the baseline for users 1-2 (k=1).
    model = np.array([[3, 1, 2], [4, 1, 2], [5, 1, 1], [0, 3, 1]])
    baseline = np.array([[0, 1, 2], [4, 1, 2], [5, 1, 1], [0, 3, 1]])
    # Per-user differences 1, 0, 0, 0: mean 0.25, standard deviation 0.5, half-width 1.96 * 0.5 / sqrt(4).
    assert hit_rate_gap(model, baseline, k=1) == pytest.approx((0.25, 0.49))
    assert hit_rate_gap(model, model, k=1) == (0.0, 0.0)


def test_validation_holds_out_the_second_latest_item_and_never_the_evaluation_item():
    interactions = _timeline()
    split = leave_one_out(interactions)
    validation = validation_split(split)
    ordered = interactions.sort_values(["user", "time"])
    item_codes = np.sort(interactions["item"].unique())
    second_latest = np.searchsorted(item_codes, ordered.groupby("user")["item"].nth(-2).to_numpy())
    assert validation.users.tolist() == list(range(30)) and validation.test_item.tolist() == second_latest.tolist()
    assert (validation.test_item != split.test_item).all()
    train_keys = set(map(tuple, split.train[["user", "item"]].values.tolist()))
    fit_keys = set(map(tuple, validation.train[["user", "item"]].values.tolist()))
    assert fit_keys == train_keys - set(zip(validation.users.tolist(), validation.test_item.tolist()))
    for user, row in zip(validation.users, validation.candidates):
        assert not set(row[1:]) & {item for u, item in train_keys if u == user}, "negatives: never in training"
    # Built from the training data alone: other evaluation items would not change it.
    moved = dataclasses.replace(split, test_item=(split.test_item + 1) % split.n_items)
    again = validation_split(moved)
    assert (again.candidates == validation.candidates).all() and again.train.equals(validation.train)


def test_a_user_with_one_training_item_is_not_validated():
    interactions = pd.DataFrame({"user": [1, 1, 2, 2, 2], "item": [1, 2, 1, 2, 3], "time": [1, 2, 1, 2, 3]})
    validation = validation_split(leave_one_out(interactions, n_candidates=2), n_candidates=2)
    assert validation.users.tolist() == [1] and validation.test_item.tolist() == [1]


def test_a_round_is_the_next_positives_of_a_shuffled_pass():
    train = pd.DataFrame({"user": [0, 0, 1, 1, 2], "item": [0, 1, 2, 3, 4]})
    config = dataclasses.replace(NcfConfig(), round_positives=3, negatives_per_positive=2, batch_size=4)
    training = NeumfTraining(train, 3, 8, config)
    training.epoch()
    assert training.examples_seen == 3 * 3 and len(training.pass_order) == 2
    training.epoch()  # the pass's last 2 positives, then 1 of a fresh pass
    assert training.examples_seen == 18 and len(training.pass_order) == 4 and training.epochs_done == 2


def test_the_search_early_stops_its_winner_and_chooses_its_best_epoch():
    split = leave_one_out(_interactions(simulate_platform(n_learners=60, n_concepts=20, n_resources=40, days=30,
                                                           seed=4)))
    space = ({"gmf_factors": 8, "mlp_layers": (16, 8), "learning_rate": 0.01},
             {"gmf_factors": 4, "mlp_layers": (8, 4), "learning_rate": 0.003})
    choice = choose_config(split, space, patience=2, max_epochs=30)
    winner, loser = choice.trials
    assert winner.epochs_trained - winner.best_epoch == 2 and winner.epochs_trained < 30, "stopped by patience"
    assert choice.config.epochs == winner.best_epoch >= 1 and loser.epochs_trained == 2, "cut after the first rung"
    assert (choice.config.gmf_factors, choice.config.learning_rate) == (winner.config.gmf_factors,
                                                                         winner.config.learning_rate)
    assert choose_config(split, space, patience=2, max_epochs=30).trials == choice.trials, "deterministic per seed"


def test_choosing_the_configuration_costs_at_most_three_final_trainings():
    trained = fit_and_evaluate(_interactions(simulate_platform(n_learners=60, n_concepts=20, n_resources=40,
                                                               days=30, seed=4)))
    assert trained.choice is not None and len(trained.choice.trials) == 5
    assert 0 < trained.scores.search_cost <= 3.0
    assert trained.checkpoint.config == trained.choice.config


def test_ncf_evaluate_chooses_the_configuration_as_the_asset_does(tmp_path, capsys):
    interactions = _interactions(simulate_platform(n_learners=60, n_concepts=20, n_resources=40, days=30, seed=4))
    path = tmp_path / "interactions.csv"
    interactions[["user", "item", "time"]].to_csv(path, index=False)
    assert cli_main(["ncf", "evaluate", str(path), "--format", "csv", "--seed", "3"]) == 0
    shown = capsys.readouterr()
    printed = json.loads(shown.out)
    assert "ncf: search: candidate 1 of 5" in shown.err, "the search shows its progress on stderr"
    chosen = fit_and_evaluate(interactions, seed=3).checkpoint.config
    assert printed["search_cost"] > 0 and printed["config"] == json.loads(json.dumps(dataclasses.asdict(chosen)))
    assert cli_main(["ncf", "evaluate", str(path), "--format", "csv", "--epochs", "2"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["search_cost"] == 0 and fixed["config"]["epochs"] == 2, "--epochs trains the default configuration"


def test_launchpad_config_defaults_are_the_models_and_reach_it():
    assert NcfTrainingConfig().to_ncf_config() == NcfConfig()
    tuned = NcfTrainingConfig(mlp_layers=[32, 8], epochs=3, learning_rate=0.01).to_ncf_config()
    assert tuned == dataclasses.replace(NcfConfig(), mlp_layers=(32, 8), epochs=3, learning_rate=0.01)


def test_recommendations_depend_on_the_model_complexity_and_memory_states():
    assert {key.to_user_string() for key in recommendations.dependency_keys} == {
        "ncf_model", "concept_complexity", "card_memory_states"}


def test_checkpoint_round_trips_through_weights_only_bytes():
    interactions = pd.DataFrame({"user": [30, 30, 10, 10, 20, 20], "item": [7, 5, 5, 9, 7, 9],
                                 "time": [1, 2, 1, 2, 1, 2]})
    checkpoint = fit_and_evaluate(interactions, dataclasses.replace(NcfConfig(), epochs=1)).checkpoint
    payload = checkpoint.to_bytes()
    saved = torch.load(io.BytesIO(payload), weights_only=True)
    assert saved["user_ids"] == [10, 20, 30] and saved["resource_ids"] == [5, 7, 9]
    loaded = NcfCheckpoint.from_bytes(payload)
    assert loaded.config == checkpoint.config
    scores = loaded.score(np.array([20, 99]), np.array([9, 5, 404]))
    assert np.allclose(scores[0, :2], checkpoint.score(np.array([20]), np.array([9, 5]))[0])
    assert 0 < scores[0, 0] < 1 and scores[0, 2] == 0.0, "a resource the model never saw scores 0"
    assert np.isnan(scores[1]).all() and loaded.knows(np.array([20, 99])).tolist() == [True, False]
    embeddings = loaded.embeddings()
    assert embeddings.user_vectors.shape == (3, 16 + 32) and embeddings.resource_ids.tolist() == [5, 7, 9]


@pytest.fixture
def ncf_resources(warehouse_url, tmp_path):
    return {"warehouse": Warehouse(database_url=warehouse_url), "model_store": LocalModelStore(base_dir=str(tmp_path))}


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_too_few_positives_skip_training_with_a_reason(warehouse_engine, ncf_resources):
    platform = simulate_platform(n_learners=3, n_concepts=20, n_resources=10, days=30, seed=1)
    load_platform(warehouse_engine, dataclasses.replace(platform, user_interactions=platform.user_interactions.head(6)))
    result = dg.materialize([ncf_model], resources=ncf_resources)
    metadata = result.asset_materializations_for_node("ncf_model")[0].metadata
    assert metadata["trained"].value is False
    assert "only 6 positive interaction(s); NCF needs at least 10" in metadata["reason"].value
    assert _count(warehouse_engine, tables.ncf_models) == 0 and _count(warehouse_engine, tables.ncf_user_embeddings) == 0
    _recommend_every_shard(ncf_resources)
    with warehouse_engine.connect() as conn:
        strategies = set(conn.execute(sa.select(tables.user_recommendations.c.strategy)).scalars())
    assert strategies <= {"content_graph"}


def test_warm_learners_get_hybrid_and_cold_ones_the_fallback(warehouse_url, warehouse_engine, ncf_resources,
                                                            capsys):
    platform = simulate_platform(n_learners=150, n_concepts=40, n_resources=60, days=60, mean_cards_per_learner=5,
                                 seed=5)
    load_platform(warehouse_engine, platform)
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [999]}))  # a newcomer, no interactions
        covered = int(platform.resource_concepts["concept_id"].iloc[0])
        bulk.bulk_insert(conn, tables.card_memory_states, pd.DataFrame({
            "user_id": [999], "concept_id": [covered], "stability_days": [1.0], "difficulty": [8.0], "n_reviews": [2],
            "last_review_at": [pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=20)],
            "due_at": [pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=19)], "weights_source": ["global"],
            "decay": [0.1542]}))
    result = dg.materialize([ncf_model], resources=ncf_resources)
    assert result.success
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "ncf_beats_popularity" and "hr_at_10" in check.metadata
    served = _recommend_every_shard(ncf_resources)
    with warehouse_engine.connect() as conn:
        recs = bulk.read_frame(conn, sa.select(tables.user_recommendations))
        n_embeddings = conn.execute(sa.select(sa.func.count()).select_from(tables.ncf_item_embeddings)).scalar_one()
        model = conn.execute(sa.select(tables.ncf_models)).one()
    n_user_embeddings = _count(warehouse_engine, tables.ncf_user_embeddings)
    assert n_embeddings == platform.user_interactions["resource_id"].nunique()
    assert n_user_embeddings == platform.user_interactions["user_id"].nunique() == model.n_users
    chosen = result.asset_materializations_for_node("ncf_model")[0].metadata["config"].value
    assert model.epochs == chosen["epochs"] and model.hr_at_10 > model.popularity_hr_at_10
    assert (recs["model_id"] == model.model_id).all()
    assert served["model_id"] == model.model_id and served["row_count"] == len(recs)
    assert served["learners_by_strategy"] == {"hybrid": recs["user_id"].nunique() - 1, "content_graph": 1}
    # The checkpoint the asset wrote holds tensors, lists and numbers only: no pickled code runs on load.
    saved = torch.load(model.checkpoint_uri.removeprefix("file://"), weights_only=True)
    assert saved["user_ids"] == sorted(platform.user_interactions["user_id"].unique().tolist())
    assert saved["config"] == chosen
    assert all(isinstance(tensor, torch.Tensor) for tensor in saved["state"].values())
    assert cli_main(["recommend", "999", "--database-url", warehouse_url]) == 0
    printed = capsys.readouterr().out
    assert "strategy: content_graph" in printed and printed.count("content_graph") == 11
    newcomer = recs.loc[recs["user_id"] == 999]
    assert len(newcomer) == 10 and (newcomer["strategy"] == "content_graph").all()
    assert newcomer["ncf_score"].isna().all() and newcomer["content_score"].max() > 0
    covering = set(platform.resource_concepts.loc[platform.resource_concepts["concept_id"] == covered, "resource_id"])
    assert int(newcomer.iloc[0]["resource_id"]) in covering, "the weak concept's resource comes first"
    warm = recs.loc[recs["user_id"] != 999]
    assert (warm["strategy"] == "hybrid").all() and warm["ncf_score"].notna().all()
    seen = set(map(tuple, platform.user_interactions[["user_id", "resource_id"]].values.tolist()))
    assert not any((u, r) in seen for u, r in warm[["user_id", "resource_id"]].values.tolist())
    assert (warm.groupby("user_id")["rank"].apply(list) == [list(range(1, 11))] * warm["user_id"].nunique()).all()


def _recommend_every_shard(resources) -> dict:
    """recommendations for every learner shard, as recommendations_after_ncf_model launches them; the shards'
    metadata summed (the model every shard served, rows written, learners by strategy)."""
    row_count, strategies, model_ids = 0, collections.Counter(), set()
    for shard in learner_shards.get_partition_keys():
        result = dg.materialize([recommendations], resources=resources, partition_key=shard)
        metadata = result.asset_materializations_for_node("recommendations")[0].metadata
        row_count += metadata["dagster/row_count"].value
        strategies.update(metadata["learners_by_strategy"].value)
        model_ids.add(metadata["model_id"].value)
    [model_id] = model_ids
    return {"model_id": model_id, "row_count": row_count, "learners_by_strategy": dict(strategies)}


def test_a_shard_replaces_its_own_learners_recommendations_and_no_one_elses(warehouse_engine, ncf_resources):
    platform = simulate_platform(n_learners=40, n_concepts=40, n_resources=60, days=60, mean_cards_per_learner=5,
                                 seed=5)
    load_platform(warehouse_engine, platform)
    _recommend_every_shard(ncf_resources)
    with warehouse_engine.connect() as conn:
        before = bulk.read_frame(conn, sa.select(tables.user_recommendations))
    shard = learner_shards.get_partition_keys()[1]
    dg.materialize([recommendations], resources=ncf_resources, partition_key=shard)
    with warehouse_engine.connect() as conn:
        after = bulk.read_frame(conn, sa.select(tables.user_recommendations))
    in_shard = learners_in(platform.users["user_id"], shard)
    assert len(in_shard) and len(after) == len(before) == 40 * 10
    moved = after.loc[after["generated_at"] > before["generated_at"].max(), "user_id"]
    assert set(moved) == set(in_shard.tolist())
    assert (after.groupby("user_id").size() == 10).all()


def _every_learner_has_recommendations(engine, recs: pd.DataFrame) -> None:
    with engine.connect() as conn:
        learners = set(conn.execute(sa.select(tables.users.c.user_id)).scalars())
    assert set(recs["user_id"]) == learners
    assert (recs.groupby("user_id").size() == 10).all()


def test_a_model_that_loses_to_popularity_is_recorded_but_recommendations_fall_back(warehouse_engine, ncf_resources):
    # 60 learners x 60 resources, barely trained: NCF does not beat popularity.
    platform = simulate_platform(n_learners=60, n_concepts=40, n_resources=60, days=60, mean_cards_per_learner=5,
                                 seed=5)
    load_platform(warehouse_engine, platform)
    fixed = dg.RunConfig({"ncf_model": NcfTrainingConfig(choose_by_validation=False, epochs=1, learning_rate=1e-7)})
    result = dg.materialize([ncf_model], resources=ncf_resources, raise_on_error=False, run_config=fixed)
    assert result.success, "a failed ncf_beats_popularity does not stop the run"
    served = _recommend_every_shard(ncf_resources)
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR, "still red in the UI"
    assert check.metadata["hr_at_10"].value <= check.metadata["popularity_hr_at_10"].value
    assert check.metadata["serving_model_id"].value == -1
    with warehouse_engine.connect() as conn:
        loser = conn.execute(sa.select(tables.ncf_models)).one()
        recs = bulk.read_frame(conn, sa.select(tables.user_recommendations))
    assert loser.hr_at_10 <= loser.popularity_hr_at_10, "recorded with the scores that refuse it"
    assert _count(warehouse_engine, tables.ncf_user_embeddings) == 0, "its embeddings are not the serving ones"
    assert served["model_id"] == -1 and served["learners_by_strategy"] == {"content_graph": 60}
    _every_learner_has_recommendations(warehouse_engine, recs)
    assert (recs["strategy"] == "content_graph").all() and recs["model_id"].isna().all()


def test_a_model_that_loses_to_popularity_leaves_the_previous_one_serving(warehouse_engine, ncf_resources):
    platform = simulate_platform(n_learners=150, n_concepts=40, n_resources=60, days=60, mean_cards_per_learner=5,
                                 seed=5)
    load_platform(warehouse_engine, platform)
    assert dg.materialize([ncf_model], resources=ncf_resources).get_asset_check_evaluations()[0].passed
    # The same data, barely trained: it loses to popularity.
    untrained = dg.RunConfig({"ncf_model": NcfTrainingConfig(choose_by_validation=False, epochs=1,
                                                                      learning_rate=1e-7)})
    result = dg.materialize([ncf_model], resources=ncf_resources, run_config=untrained, raise_on_error=False)
    assert result.success
    served = _recommend_every_shard(ncf_resources)
    check = result.get_asset_check_evaluations()[0]
    with warehouse_engine.connect() as conn:
        passing, losing = conn.execute(sa.select(tables.ncf_models).order_by(tables.ncf_models.c.model_id)).all()
        embedded_by = set(conn.execute(sa.select(tables.ncf_user_embeddings.c.model_id)).scalars())
        recs = bulk.read_frame(conn, sa.select(tables.user_recommendations))
    assert not check.passed and losing.hr_at_10 <= losing.popularity_hr_at_10 < passing.hr_at_10
    assert check.metadata["serving_model_id"].value == passing.model_id
    assert embedded_by == {passing.model_id}
    assert served["model_id"] == passing.model_id
    _every_learner_has_recommendations(warehouse_engine, recs)
    assert (recs["model_id"] == passing.model_id).all() and (recs["strategy"] == "hybrid").all()


def test_retraining_sensor_fires_once_per_growth_step(warehouse_url, warehouse_engine, ncf_resources):
    platform = simulate_platform(n_learners=30, n_concepts=20, n_resources=30, days=30, seed=8)
    first_batch = platform.user_interactions.iloc[:400]
    load_platform(warehouse_engine, dataclasses.replace(platform, user_interactions=first_batch))

    def tick(cursor):
        with dg.instance_for_test() as instance:
            return ncf_retraining_sensor(dg.build_sensor_context(instance=instance, cursor=cursor,
                                                                 resources={"warehouse": ncf_resources["warehouse"]}))

    first = tick(None)
    assert [r.run_key for r in first.run_requests] == ["ncf_retrain:after_model_0"]
    assert not tick(first.cursor).run_requests, "same data, same step: no second launch"
    # A model is recorded even when it loses to popularity (it then does not serve); either way it saw
    # this data, so the sensor waits for the next growth step.
    dg.materialize([ncf_model], resources=ncf_resources, raise_on_error=False,
                   run_config=dg.RunConfig({"ncf_model": NcfTrainingConfig(choose_by_validation=False, epochs=2)}))
    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(tables.ncf_models.c.epochs)).scalars().all() == [2], "launchpad config used"
    assert not tick(first.cursor).run_requests, "the new model saw all the data"
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.user_interactions, platform.user_interactions.iloc[400:450])  # +12.5 %
    assert not tick(first.cursor).run_requests
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.user_interactions, platform.user_interactions.iloc[450:520])  # +30 % in all
    grown = tick(first.cursor)
    assert [r.run_key for r in grown.run_requests] == ["ncf_retrain:after_model_1"]
    assert not tick(grown.cursor).run_requests


def test_every_learner_shard_is_scored_once_after_each_training(warehouse_engine, ncf_resources):
    platform = simulate_platform(n_learners=30, n_concepts=20, n_resources=30, days=30, seed=8)
    load_platform(warehouse_engine, platform)
    with dg.instance_for_test() as instance:
        dg.materialize([ncf_model], resources=ncf_resources, instance=instance, raise_on_error=False,
                       run_config=dg.RunConfig({"ncf_model": NcfTrainingConfig(choose_by_validation=False,
                                                                                        epochs=1)}))
        requests = list(recommendations_after_ncf_model(dg.build_sensor_context(instance=instance)) or [])
    assert sorted(r.partition_key for r in requests) == learner_shards.get_partition_keys()
    assert len({r.run_key for r in requests}) == len(requests)


@pytest.mark.slow
def test_ncf_evaluate_cli_on_a_csv(tmp_path):
    platform = simulate_platform(n_learners=80, n_concepts=20, n_resources=40, days=30, seed=2)
    path = tmp_path / "interactions.csv"
    _interactions(platform)[["user", "item", "time"]].to_csv(path, index=False)
    cli = str(Path(sys.executable).parent / "learning-pipelines")
    result = subprocess.run([cli, "ncf", "evaluate", str(path), "--format", "csv", "--epochs", "2", "--seed", "3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ncf: training the chosen configuration on all but each user's latest item: epoch 2 of 2" in result.stderr
    scores = json.loads(result.stdout)
    assert set(scores) >= {"hr_at_10", "ndcg_at_10", "popularity_hr_at_10", "train_seconds", "n_users", "n_items"}
    assert scores["n_users"] == 80
    bad = tmp_path / "bad.csv"
    bad.write_text("learner,thing\n1,2\n")
    refused = subprocess.run([cli, "ncf", "evaluate", str(bad), "--format", "csv"], capture_output=True, text=True)
    assert refused.returncode == 2 and "missing column(s) item, user" in refused.stderr


def test_a_row_of_items_scores_as_neumfs_formula_does():
    """score_rows splits the MLP's first layer and the output layer by input; the function must stay NeuMF's."""
    torch.manual_seed(0)
    model = NeuMF(5, 7, dataclasses.replace(NcfConfig(), gmf_factors=4, mlp_layers=(8, 6, 3)))
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter)
    users, items = torch.tensor([0, 3]), torch.tensor([[1, 2, 6], [0, 0, 5]])
    pairs_users, pairs_items = users.repeat_interleave(3), items.reshape(-1)
    gmf = model.gmf_user(pairs_users) * model.gmf_item(pairs_items)
    mlp = model.mlp(torch.cat([model.mlp_user(pairs_users), model.mlp_item(pairs_items)], dim=1))
    expected = model.output(torch.cat([gmf, mlp], dim=1)).reshape(2, 3)
    assert torch.allclose(model.score_rows(users, items), expected, atol=1e-5)
    assert torch.allclose(model(pairs_users, pairs_items), expected.reshape(-1), atol=1e-5)
    # With a history: the users' vectors move, the formula around them stays.
    model = NeuMF(5, 7, dataclasses.replace(NcfConfig(), gmf_factors=4, mlp_layers=(8, 6, 3), history_length=2))
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter)
    history = torch.tensor([[7, 4], [2, 6]])  # 7 pads: user 0 has one item before
    gmf_user, mlp_user = model.user_vectors(users, history)
    gmf = gmf_user.repeat_interleave(3, dim=0) * model.gmf_item(pairs_items)
    mlp = model.mlp(torch.cat([mlp_user.repeat_interleave(3, dim=0), model.mlp_item(pairs_items)], dim=1))
    expected = model.output(torch.cat([gmf, mlp], dim=1)).reshape(2, 3)
    assert torch.allclose(model.score_rows(users, items, history), expected, atol=1e-5)
    assert torch.allclose(model(pairs_users, pairs_items, history.repeat_interleave(3, dim=0)), expected.reshape(-1),
                          atol=1e-5)
    only = model.history.weight[4] * model.recency[1]
    assert torch.allclose(gmf_user[0], model.gmf_user.weight[0] + only[:4]), "one item: its weighted embedding"


def test_validation_can_score_a_sample_of_users_the_others_keep_their_items():
    split = leave_one_out(_timeline())
    sampled = validation_split(split, max_users=10)
    assert len(sampled.users) == 10 and set(sampled.users) <= set(validation_split(split).users)
    assert len(sampled.train) == len(split.train) - 10, "only the sampled users' latest training item is held out"
    assert np.array_equal(validation_split(split, max_users=10).users, sampled.users), "the same sample per seed"


def test_a_history_model_serves_after_what_a_learner_used_since_training(warehouse_engine, ncf_resources):
    platform = simulate_platform(n_learners=150, n_concepts=40, n_resources=60, days=60, mean_cards_per_learner=5,
                                 seed=5)
    load_platform(warehouse_engine, platform)
    history = dg.RunConfig({"ncf_model": NcfTrainingConfig(choose_by_validation=False, history_length=3, epochs=10,
                                                           learning_rate=0.01, batch_size=256)})
    trained = dg.materialize([ncf_model], resources=ncf_resources, run_config=history)
    assert trained.get_asset_check_evaluations()[0].passed, "the model serves"
    shard = learner_shards.get_partition_keys()[0]
    learner, other = learners_in(platform.users["user_id"], shard)[:2]

    def served() -> pd.DataFrame:
        assert dg.materialize([recommendations], resources=ncf_resources, partition_key=shard).success
        with warehouse_engine.connect() as conn:
            rows = bulk.read_frame(conn, sa.select(tables.user_recommendations))
        return rows.loc[rows["strategy"] == "hybrid"].set_index(["user_id", "resource_id"])["ncf_score"]

    before = served()
    used = set(platform.user_interactions.loc[platform.user_interactions["user_id"] == learner, "resource_id"])
    new = [resource for resource in platform.resources["resource_id"] if resource not in used][:3]
    now = pd.Timestamp.now(tz="UTC")
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.user_interactions, pd.DataFrame({
            "user_id": learner, "resource_id": new, "interaction_type": "complete",
            "occurred_at": [now - pd.Timedelta(minutes=3 - i) for i in range(3)]}))
    after = served()
    assert not set(after.loc[learner].index) & set(new), "what they just used is not recommended again"
    common = after.loc[learner].index.intersection(before.loc[learner].index)
    assert not np.allclose(after.loc[learner].loc[common], before.loc[learner].loc[common]), "scored after it"
    assert np.allclose(after.loc[other], before.loc[other].loc[after.loc[other].index]), "others: unchanged"
