"""deploy/helm/values.yaml, the values for the official Dagster Helm chart: structure, agreement with
deploy/dagster.yaml, no plaintext secrets. No cluster and no helm binary: the chart is not rendered
here. Key names are checked against a snapshot of the chart's own (dagster-io/dagster
helm/dagster/values.yaml and its schema models), and the instance sections the chart would render are
rebuilt below by following its templates (templates/configmap-instance.yaml,
templates/helpers/instance/_run-coordinator.tpl, _concurrency.tpl, _postgresql.tpl), then checked by
Dagster's own instance-config validation. `helm template` stays the real check (see the file's header).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VALUES_PATH = ROOT / "deploy" / "helm" / "values.yaml"
INSTANCE_PATH = ROOT / "deploy" / "dagster.yaml"

# Snapshot of the key names the chart defines (helm/dagster/values.yaml at dagster-io/dagster
# 437f92d953812a3efdf5a464ba196eb3fcd9a777; user-deployment and daemon fields also from
# helm/dagster/schema/schema/charts/.../user_deployments.py and daemon.py).
CHART_TOP_LEVEL_KEYS = {
    "global", "nameOverride", "fullnameOverride", "rbacEnabled", "imagePullSecrets",
    "dagsterWebserver", "computeLogManager", "pythonLogs", "dagster-user-deployments", "scheduler",
    "runLauncher", "postgresql", "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret",
    "rabbitmq", "redis", "flower", "ingress", "dagsterDaemon", "busybox", "extraManifests", "migrate",
    "telemetry", "serviceAccount", "retention", "concurrency", "additionalInstanceConfig", "pipelineRun",
}  # fmt: skip
GLOBAL_KEYS = {
    "postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
    "dagsterInstanceConfigMap",
}  # fmt: skip
USER_DEPLOYMENTS_KEYS = {"enabled", "enableSubchart", "imagePullSecrets", "deployments"}
USER_DEPLOYMENT_KEYS = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "port", "includeConfigInLaunchedRuns",
    "env", "envConfigMaps", "envSecrets", "labels", "volumes", "volumeMounts", "initContainers",
    "sidecarContainers", "annotations", "nodeSelector", "affinity", "tolerations",
    "podSecurityContext", "securityContext", "resources", "schedulerName", "readinessProbe",
    "livenessProbe", "startupProbe", "deploymentStrategy", "service",
}  # fmt: skip
WEBSERVER_KEYS = {
    "replicaCount", "image", "nameOverride", "pathPrefix", "service", "workspace", "enableReadOnly",
    "logFormat", "dbStatementTimeout", "dbPoolRecycle", "dbPoolMaxOverflow", "logLevel", "env",
    "envConfigMaps", "envSecrets", "deploymentLabels", "labels", "volumes", "volumeMounts",
    "extraContainers", "extraPrependedInitContainers", "annotations", "nodeSelector", "affinity",
    "tolerations", "podSecurityContext", "securityContext", "resources", "initContainerResources",
    "checkDbReadyInitContainer", "schedulerName", "readinessProbe", "livenessProbe", "startupProbe",
}  # fmt: skip
DAEMON_KEYS = {
    "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
    "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "checkDbReadyInitContainer", "livenessProbe", "readinessProbe",
    "startupProbe", "annotations", "runMonitoring", "runRetries", "sensors", "schedules", "backfills",
    "schedulerName", "logFormat", "volumeMounts", "volumes", "initContainerResources",
    "extraContainers", "extraPrependedInitContainers",
}  # fmt: skip
QUEUED_RUN_COORDINATOR_KEYS = {
    "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
    "dequeueUseThreads", "blockOpConcurrencyLimitedRuns",
}  # fmt: skip
RUN_MONITORING_KEYS = {
    "enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "maxRuntimeSeconds",
    "pollIntervalSeconds", "maxResumeRunAttempts", "freeSlotsAfterRunEndSeconds",
}  # fmt: skip
RUN_RETRIES_KEYS = {"enabled", "maxRetries", "retryOnAssetOrOpFailure"}
CONCURRENCY_KEYS = {"enabled", "pools", "runs"}
CONCURRENCY_POOLS_KEYS = {"defaultLimit", "granularity", "opGranularityRunBuffer"}
CONCURRENCY_RUNS_KEYS = {"maxConcurrentRuns", "tagConcurrencyLimits"}
POSTGRESQL_KEYS = {
    "enabled", "image", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
    "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service",
}  # fmt: skip
RUN_LAUNCHER_TYPES = {"K8sRunLauncher", "CeleryK8sRunLauncher", "CustomRunLauncher"}
K8S_RUN_LAUNCHER_KEYS = {
    "imagePullPolicy", "image", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumes", "volumeMounts", "labels", "resources",
    "schedulerName", "failPodOnRunFailure", "securityContext", "runK8sConfig",
}  # fmt: skip
RUN_K8S_CONFIG_KEYS = {
    "containerConfig", "podTemplateSpecMetadata", "podSpecConfig", "jobSpecConfig", "jobMetadata",
}  # fmt: skip

# The chart defaults the instance sections below depend on (same values.yaml): Helm merges them
# under ours.
CHART_DEFAULTS: dict[str, Any] = {
    "dagsterDaemon": {
        "enabled": True,
        "runCoordinator": {
            "enabled": True,
            "type": "QueuedRunCoordinator",
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": None,
                    "tagConcurrencyLimits": [],
                    "dequeueIntervalSeconds": None,
                    "dequeueUseThreads": True,
                    "dequeueNumWorkers": 4,
                }
            },
        },
        "runMonitoring": {
            "enabled": True,
            "startTimeoutSeconds": 300,
            "pollIntervalSeconds": 120,
            "maxResumeRunAttempts": 0,
            "freeSlotsAfterRunEndSeconds": 0,
        },
        "runRetries": {"enabled": True, "maxRetries": 0},
    },
    "postgresql": {
        "enabled": True,
        "postgresqlHost": "",
        "postgresqlUsername": "test",
        "postgresqlPassword": "test",
        "postgresqlDatabase": "test",
        "postgresqlParams": {},
        "postgresqlScheme": "",
        "service": {"port": 5432},
    },
    "telemetry": {"enabled": True},
    "concurrency": {
        "enabled": False,
        "pools": {"defaultLimit": None, "granularity": None, "opGranularityRunBuffer": None},
        "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": []},
    },
}


def helm_merge(defaults: Any, override: Any) -> Any:
    """Helm's values coalescing: maps merge key by key, anything else replaces, null deletes."""
    if not isinstance(defaults, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(defaults)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_conflicts(values: dict[str, Any]) -> list[str]:
    """The `fail` checks of _concurrency.tpl (only evaluated when concurrency.enabled)."""
    concurrency = values["concurrency"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    if not concurrency["enabled"] or not (coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"):
        return []
    queued = coordinator["config"]["queuedRunCoordinator"]
    runs, found = concurrency["runs"], []
    if runs.get("maxConcurrentRuns") is not None and queued.get("maxConcurrentRuns") is not None:
        found.append("maxConcurrentRuns")
    if runs["tagConcurrencyLimits"] and queued["tagConcurrencyLimits"]:
        found.append("tagConcurrencyLimits")
    return found


def rendered_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The dagster.yaml sections the chart renders from merged values (the templates named above)."""
    pg = values["postgresql"]
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
    }
    if pg.get("postgresqlScheme"):
        postgres_db["scheme"] = pg["postgresqlScheme"]
    storage = {"config": {"postgres_db": postgres_db}}
    daemon = values["dagsterDaemon"]
    concurrency_enabled = values["concurrency"]["enabled"]
    instance: dict[str, Any] = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", **storage},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage", **storage},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage", **storage
        },
        "run_launcher": {"module": "dagster_k8s", "class": values["runLauncher"]["type"], "config": {}},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }  # fmt: skip

    coordinator = daemon["runCoordinator"]
    if daemon["enabled"] and coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator":
        queued = coordinator["config"]["queuedRunCoordinator"]
        block: dict[str, Any] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
        if any(v not in (None, "", [], {}, False, 0) for v in queued.values()):
            config: dict[str, Any] = {}
            if not concurrency_enabled or queued.get("maxConcurrentRuns") is not None:
                max_runs = queued.get("maxConcurrentRuns")
                config["max_concurrent_runs"] = -1 if max_runs is None else max_runs
            if queued.get("tagConcurrencyLimits"):
                config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
            for key, name in (
                ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
                ("dequeueUseThreads", "dequeue_use_threads"),
                ("dequeueNumWorkers", "dequeue_num_workers"),
            ):
                if queued.get(key):
                    config[name] = queued[key]
            block["config"] = config
        instance["run_coordinator"] = block

    monitoring = daemon["runMonitoring"]
    if daemon["enabled"] and monitoring["enabled"]:
        run_monitoring = {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        }
        for key, name in (
            ("cancelTimeoutSeconds", "cancel_timeout_seconds"),
            ("maxRuntimeSeconds", "max_runtime_seconds"),
            ("maxResumeRunAttempts", "max_resume_run_attempts"),
        ):
            if monitoring.get(key) is not None:
                run_monitoring[name] = monitoring[key]
        run_monitoring["poll_interval_seconds"] = monitoring["pollIntervalSeconds"]
        run_monitoring["free_slots_after_run_end_seconds"] = monitoring["freeSlotsAfterRunEndSeconds"]
        instance["run_monitoring"] = run_monitoring

    retries = daemon["runRetries"]
    if daemon["enabled"] and retries["enabled"]:
        run_retries: dict[str, Any] = {"enabled": retries["enabled"]}
        if retries.get("maxRetries"):
            run_retries["max_retries"] = retries["maxRetries"]
        if "retryOnAssetOrOpFailure" in retries:
            run_retries["retry_on_asset_or_op_failure"] = retries["retryOnAssetOrOpFailure"]
        instance["run_retries"] = run_retries

    if concurrency_enabled:
        pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
        block = {}
        pool_block = {
            name: pools[key]
            for key, name in (
                ("defaultLimit", "default_limit"),
                ("granularity", "granularity"),
                ("opGranularityRunBuffer", "op_granularity_run_buffer"),
            )
            if pools.get(key) is not None
        }
        if pool_block:
            block["pools"] = pool_block
        run_block: dict[str, Any] = {}
        if runs.get("maxConcurrentRuns") is not None:
            run_block["max_concurrent_runs"] = runs["maxConcurrentRuns"]
        if runs["tagConcurrencyLimits"]:
            run_block["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
        if run_block:
            block["runs"] = run_block
        instance["concurrency"] = block
    return instance


def validate_with_dagster(instance: dict[str, Any], tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
    dagster_instance_config(str(tmp_path))


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES_PATH.read_text())


@pytest.fixture(scope="module")
def instance() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE_PATH.read_text())


@pytest.fixture(scope="module")
def merged(values) -> dict[str, Any]:
    return helm_merge(CHART_DEFAULTS, values)


def test_only_the_charts_own_keys(values):
    assert set(values) <= CHART_TOP_LEVEL_KEYS
    assert set(values["global"]) <= GLOBAL_KEYS
    assert set(values["dagsterWebserver"]) <= WEBSERVER_KEYS
    user_deployments = values["dagster-user-deployments"]
    assert set(user_deployments) <= USER_DEPLOYMENTS_KEYS
    for deployment in user_deployments["deployments"]:
        assert set(deployment) <= USER_DEPLOYMENT_KEYS
    daemon = values["dagsterDaemon"]
    assert set(daemon) <= DAEMON_KEYS
    assert set(daemon["runCoordinator"]["config"]["queuedRunCoordinator"]) <= QUEUED_RUN_COORDINATOR_KEYS
    assert set(daemon["runMonitoring"]) <= RUN_MONITORING_KEYS
    assert set(daemon["runRetries"]) <= RUN_RETRIES_KEYS
    assert set(values["concurrency"]) <= CONCURRENCY_KEYS
    assert set(values["concurrency"]["pools"]) <= CONCURRENCY_POOLS_KEYS
    assert set(values["concurrency"]["runs"]) <= CONCURRENCY_RUNS_KEYS
    assert set(values["postgresql"]) <= POSTGRESQL_KEYS
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(launcher) <= K8S_RUN_LAUNCHER_KEYS
    assert set(launcher.get("runK8sConfig", {})) <= RUN_K8S_CONFIG_KEYS


def test_user_deployment_serves_the_code_location(values):
    user_deployments = values["dagster-user-deployments"]
    assert user_deployments["enabled"] is True and user_deployments["enableSubchart"] is True
    (deployment,) = user_deployments["deployments"]
    assert deployment["name"] == "learning-pipelines"
    assert deployment["port"] == 3030
    args = deployment.get("codeServerArgs") or deployment.get("dagsterApiGrpcArgs")
    assert args == ["-m", "learning_pipelines.definitions", "--location-name", "learning_pipelines"]
    image = deployment["image"]
    assert image["repository"] and isinstance(image["tag"], str)
    assert image["tag"] not in ("", "latest")
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    resources = deployment["resources"]
    assert set(resources) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


def test_settings_env_and_the_warehouse_from_a_secret(values):
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    # Strings, as Kubernetes requires (a bare `on` would have parsed as True).
    assert env == {
        "LEARNING_PIPELINES_LEARNER_SHARDS": "16",
        "LEARNING_PIPELINES_AUTOMATION": "on",
        "LEARNING_PIPELINES_LOG_FORMAT": "json",
    }
    assert {"name": "learning-pipelines-warehouse"} in deployment["envSecrets"]
    assert "LEARNING_PIPELINES_DATABASE_URL" not in env


def test_dagster_storage_on_external_postgres(values, instance):
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert pg["postgresqlHost"]
    assert pg["postgresqlDatabase"] == "dagster"
    assert pg["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_run_launcher_and_queue(values):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["runLauncher"]["type"] in RUN_LAUNCHER_TYPES
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == 4
    assert values["telemetry"]["enabled"] is False


def test_daemon_settings_match_deploy_dagster_yaml(values, instance):
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert values["concurrency"]["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is instance["run_monitoring"]["enabled"] is True
    assert monitoring["startTimeoutSeconds"] == instance["run_monitoring"]["start_timeout_seconds"]
    assert monitoring["cancelTimeoutSeconds"] == instance["run_monitoring"]["cancel_timeout_seconds"]
    assert monitoring["pollIntervalSeconds"] == instance["run_monitoring"]["poll_interval_seconds"]
    assert monitoring["maxResumeRunAttempts"] == instance["run_monitoring"]["max_resume_run_attempts"]
    retries = values["dagsterDaemon"]["runRetries"]
    assert retries["enabled"] is instance["run_retries"]["enabled"] is True
    assert retries["maxRetries"] == instance["run_retries"]["max_retries"]
    assert retries["retryOnAssetOrOpFailure"] is instance["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert values["telemetry"]["enabled"] is instance["telemetry"]["enabled"]


def test_rendered_instance_sections_equal_deploy_dagster_yaml(merged, instance):
    assert chart_conflicts(merged) == []
    rendered = rendered_instance(merged)
    assert rendered["concurrency"] == instance["concurrency"]
    assert "max_concurrent_runs" not in rendered["run_coordinator"].get("config", {})
    assert rendered["run_coordinator"]["class"] == instance["run_coordinator"]["class"]
    for key in ("enabled", "start_timeout_seconds", "cancel_timeout_seconds", "max_resume_run_attempts",
                "poll_interval_seconds"):  # fmt: skip
        assert rendered["run_monitoring"][key] == instance["run_monitoring"][key], key
    assert rendered["run_retries"] == instance["run_retries"]
    assert rendered["telemetry"] == instance["telemetry"]
    postgres_db = rendered["run_storage"]["config"]["postgres_db"]
    assert postgres_db["db_name"] == "dagster"
    assert postgres_db["scheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert postgres_db["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_rendered_instance_passes_dagster_validation(merged, tmp_path):
    validate_with_dagster(rendered_instance(merged), tmp_path)


def test_run_queue_limit_in_both_places_is_refused(values, tmp_path):
    """Why the limit lives in `concurrency` only: the chart fails, and Dagster rejects the instance."""
    from dagster._core.errors import DagsterInvalidConfigError

    both = copy.deepcopy(values)
    both["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] = 4
    merged_both = helm_merge(CHART_DEFAULTS, both)
    assert chart_conflicts(merged_both) == ["maxConcurrentRuns"]
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        validate_with_dagster(rendered_instance(merged_both), tmp_path)


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
            yield f"{path}.{key}", key, value
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def test_no_plaintext_password(values):
    password_keys = [(path, value) for path, key, value in _walk(values) if "password" in str(key).lower()]
    assert password_keys  # postgresql.postgresqlPassword is set, to the empty string
    for path, value in password_keys:
        # Flags such as generatePostgresqlPasswordSecret are booleans; a literal is a string or a number.
        literal = isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != ""
        assert not literal, f"{path} holds a literal password"
    # No credentials in a URL either, in the values or in the comments: only $VARIABLE placeholders.
    for match in re.finditer(r"://[^\s:/@]+:([^\s@]+)@", VALUES_PATH.read_text()):
        assert match.group(1).startswith("$"), f"credentials in a URL: {match.group(0)}"
