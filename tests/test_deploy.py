"""deploy/kubernetes: the manifests validate against the Kubernetes schemas and agree with the code they deploy.

The schemas come inside the kubernetes-validate wheel (Kubernetes 1.25 to 1.37, strict variants), so nothing is
downloaded here. Beyond the schemas: the routing header is the Client's, the Service selects the pods, the
readiness probe asks for the model loaded last, and the container's arguments parse with `d4rt serve`'s own parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from d4rt.serve.client import ROUTE_HEADER  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"
NGINX_VARIABLE = "$http_" + ROUTE_HEADER.replace("-", "_")  # how nginx / ingress-nginx name the header


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def test_manifests_validate_against_the_kubernetes_schemas():
    docs = documents("d4rt-serve.yaml")
    assert sorted(d["kind"] for d in docs) == ["Ingress", "Service", "Service", "StatefulSet"]
    for d in docs:
        kubernetes_validate.validate(d, KUBERNETES, strict=True)  # raises ValidationError with the path


def test_the_validator_refuses_a_broken_manifest():
    """The check above can fail: a misspelt field and a wrong type are refused (strict schemas)."""
    sts = by_kind(documents("d4rt-serve.yaml"))["StatefulSet"][0]
    sts["spec"]["replica"] = sts["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES, strict=True)
    sts["spec"]["replicas"] = "two"
    del sts["spec"]["replica"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES, strict=True)


def test_manifests_agree_with_the_code():
    kinds = by_kind(documents("d4rt-serve.yaml"))
    sts, ingress = kinds["StatefulSet"][0], kinds["Ingress"][0]
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"] == labels
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    for s in services.values():
        assert s["spec"]["selector"].items() <= labels.items()
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"  # headless, for the StatefulSet
    # the ingress hashes the Client's header onto the Service that selects the pods
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == NGINX_VARIABLE
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 300  # the Client's timeout_s
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] in services
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/query/ready"  # the last model loaded
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # the container's command line is one `d4rt serve` accepts, on the ports the pod declares
    from d4rt.cli import serve

    assert container["args"][:2] == ["d4rt", "serve"]
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(container["args"][2:])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (args.port, args.grpc_port, args.metrics_port) == (ports["http"], ports["grpc"], ports["metrics"])
    assert args.host == "0.0.0.0" and args.replicas is None  # one server per pod: Kubernetes is the balancer
    mount = container["volumeMounts"][0]
    assert args.export == mount["mountPath"]


def test_istio_route_hashes_the_same_header():
    (rule,) = documents("istio-destinationrule.yaml")
    assert rule["apiVersion"].startswith("networking.istio.io/") and rule["kind"] == "DestinationRule"
    assert rule["spec"]["host"] == "d4rt-serve"
    assert rule["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"]["httpHeaderName"] == ROUTE_HEADER
