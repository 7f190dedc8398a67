"""deploy/k8s: the Kubernetes objects against the Kubernetes API schemas (kubernetes-validate,
strict: unknown fields are errors), the KEDA objects structurally, and every name, command,
port, probe path, Secret key and queue they mention against the code and each other."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from deploy_support import (
    DEFINITIONS,
    K8S,
    REDIS_ACL,
    REPO,
    assert_cli_accepts,
    assert_known_env,
    assert_task_module,
    load_yaml_documents,
    served,
    service_of,
)

from sasfleet.shared.amqp.topology import Names
from sasfleet.shared.config import Settings

# The oldest Kubernetes release still maintained upstream when this was written, and the
# newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# The fields of KEDA's ScaledObject spec and of a trigger (keda.sh/v1alpha1): no CRD schema
# is vendored here, so unknown (misspelt) fields are caught by name.
SCALED_OBJECT_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "initialCooldownPeriod",
    "cooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
KEDA_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}


def kustomization() -> dict[str, Any]:
    (doc,) = load_yaml_documents(K8S / "kustomization.yaml")
    return doc


def all_objects() -> list[dict[str, Any]]:
    return [doc for f in kustomization()["resources"] for doc in load_yaml_documents(K8S / f)]


OBJECTS = all_objects()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in OBJECTS if o["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"no single {kind} {name!r}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config() -> dict[str, str]:
    data: dict[str, str] = named("ConfigMap", "sasfleet-config")["data"]
    return data


DEPLOYMENTS = of_kind("Deployment")


def ids(objects: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


def test_kustomization_lists_every_manifest_and_only_existing_ones():
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    (namespace,) = of_kind("Namespace")
    assert namespace["metadata"]["name"] == kustomization()["namespace"]
    # The image every Deployment names is the one kustomize pins (the project's version).
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (image,) = kustomization()["images"]
    assert image["newTag"] == version
    assert {container(d)["image"] for d in DEPLOYMENTS} == {image["name"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "obj",
    [o for o in OBJECTS if (o["apiVersion"], o["kind"]) not in KEDA_KINDS],
    ids=ids([o for o in OBJECTS if (o["apiVersion"], o["kind"]) not in KEDA_KINDS]),
)
def test_objects_match_the_kubernetes_schemas(obj, version):
    kubernetes_validate.validate(obj, version, strict=True)


def test_three_services_with_real_commands():
    by_service: dict[str, list[str]] = {}
    for deployment in DEPLOYMENTS:
        argv = container(deployment)["args"]
        name = deployment["metadata"]["name"]
        ctx = assert_cli_accepts(argv, name)
        service = service_of(argv)
        assert service, f"{name} runs no service"
        by_service.setdefault(service, []).append(name)
        assert (
            deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            == service
        )
        if service == "agent":
            assert_task_module(ctx.params["module"], name)
    assert set(by_service) == {"scheduler", "supervisor", "agent"}


def test_probes_hit_the_served_paths_on_the_metrics_port():
    port = int(config()["SASFLEET_METRICS_PORT"])
    assert "metrics_port" in Settings.model_fields
    for deployment in DEPLOYMENTS:
        c = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"metrics": port}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = c[probe]["httpGet"]
            assert http["path"] == path and http["port"] in ("metrics", port)
            assert served(path), f"the services serve no {path}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert served(annotations["prometheus.io/path"])


def test_environment_names_settings_and_files_that_are_mounted():
    assert_known_env(config(), "ConfigMap sasfleet-config")
    assert config()["SASFLEET_PREFIX"] == Settings.model_fields["prefix"].default
    secret = named("Secret", "sasfleet-urls")
    for deployment in DEPLOYMENTS:
        name = deployment["metadata"]["name"]
        c = container(deployment)
        spec = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e["value"] for e in c["env"]}
        assert_known_env(env, name)
        assert [r["configMapRef"]["name"] for r in c["envFrom"]] == ["sasfleet-config"]
        # The URLs are files from the Secret, holding this service's own keys only.
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        secret_volume = volumes["urls"]["secret"]
        assert secret_volume["secretName"] == secret["metadata"]["name"]
        files = {f"{mounts['urls']}/{i['path']}": i["key"] for i in secret_volume["items"]}
        service = service_of(c["args"])
        assert files == {
            env["SASFLEET_AMQP_URL_FILE"]: f"{service}-amqp-url",
            env["SASFLEET_REDIS_URL_FILE"]: f"{service}-redis-url",
        }
        assert set(files.values()) <= set(secret["stringData"])


def test_secret_urls_name_the_users_of_the_definitions_and_the_acl():
    definitions = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    amqp_users = {u["name"] for u in definitions["users"]}
    redis_users = set(re.findall(r"^user (\S+)", REDIS_ACL.read_text(), flags=re.MULTILINE))
    for key, value in named("Secret", "sasfleet-urls")["stringData"].items():
        user, _, kind = key.partition("-")
        url = urlsplit(value)
        assert url.username == user, key
        assert user in (amqp_users if kind == "amqp-url" else redis_users), key
        assert url.password == "CHANGE-ME", f"{key}: the committed Secret holds no password"


def test_pods_are_locked_down_and_sized():
    for deployment in DEPLOYMENTS:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        c = container(deployment)
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
        assert "memory" in c["resources"]["limits"], name


def test_agents_drain_within_the_termination_grace_period():
    agents = [d for d in DEPLOYMENTS if service_of(container(d)["args"]) == "agent"]
    assert agents
    for deployment in agents:
        ctx = assert_cli_accepts(container(deployment)["args"], deployment["metadata"]["name"])
        period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period >= ctx.params["grace"] + 10, "room to hand unfinished steps back"
        assert "replicas" not in deployment["spec"], "KEDA owns the agents' replica count"
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_deployment_has_a_disruption_budget_and_selectors_match():
    for deployment in DEPLOYMENTS:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, deployment), "the selector matches its own pods"
        budgets = [
            b
            for b in of_kind("PodDisruptionBudget")
            if selects(b["spec"]["selector"]["matchLabels"], deployment)
        ]
        assert len(budgets) == 1, deployment["metadata"]["name"]
    for budget in of_kind("PodDisruptionBudget"):
        assert any(selects(budget["spec"]["selector"]["matchLabels"], d) for d in DEPLOYMENTS)


def test_keda_scales_each_agent_pool_on_its_queues():
    prefix = config()["SASFLEET_PREFIX"]
    names = Names(prefix)
    auths = {a["metadata"]["name"]: a for a in of_kind("TriggerAuthentication")}
    secret = named("Secret", "sasfleet-urls")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind("ScaledObject")}
    agents = [d for d in DEPLOYMENTS if service_of(container(d)["args"]) == "agent"]
    assert set(scaled) == {d["metadata"]["name"] for d in agents}, "one per agent pool"
    for deployment in agents:
        obj = scaled[deployment["metadata"]["name"]]
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert set(spec) <= SCALED_OBJECT_FIELDS, set(spec) - SCALED_OBJECT_FIELDS
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        ctx = assert_cli_accepts(container(deployment)["args"], deployment["metadata"]["name"])
        pool = ctx.params["pool"]
        queues = set()
        for trigger in spec["triggers"]:
            assert set(trigger) <= TRIGGER_FIELDS, set(trigger) - TRIGGER_FIELDS
            assert trigger["type"] == "rabbitmq"
            meta = trigger["metadata"]
            assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata is strings"
            assert meta["protocol"] == "amqp" and meta["mode"] == "QueueLength"
            assert int(meta["value"]) > 0
            assert "host" not in meta, "the broker URL comes from the TriggerAuthentication"
            queues.add(meta["queueName"])
            auth = auths[trigger["authenticationRef"]["name"]]
            (ref,) = auth["spec"]["secretTargetRef"]
            assert set(ref) == {"parameter", "name", "key"}
            assert ref["parameter"] == "host"
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
            assert urlsplit(secret["stringData"][ref["key"]]).username == "keda"
        assert queues == {names.pool(pool), names.pool(pool, "high")}
