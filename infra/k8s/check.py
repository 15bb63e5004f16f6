"""Offline check of the Kubernetes manifests: render every overlay, validate, enforce our policies.

Why our own checker: CI has no cluster and no network, yet a manifest that would run two ingest
pods (Alpaca's 406), lose a probe, inline a password or open the namespace must fail before it
is merged. So, for each overlay:

1. **render** it with the real ``kustomize`` (pinned, installed by ``make venv`` through the Go
   module proxy; ``KUSTOMIZE`` overrides the binary);
2. **schemas**: every built-in object is validated with ``kubernetes-validate`` (the Kubernetes
   OpenAPI schemas it ships, strict mode: unknown fields fail) for :data:`K8S_VERSION`. No
   package ships the Knative or Strimzi CRD schemas, so those kinds are checked structurally
   here: the Knative pod template is validated as a core ``PodSpec`` once the Knative-only
   fields are set aside, plus Knative's own rules for the fields we use (one serving port,
   probes on it, ``containerConcurrency``); ``KafkaTopic`` is checked field by field against the
   ``kafka.strimzi.io/v1beta2`` CRD (``partitions``, ``replicas``, ``config``, ``topicName``).
   A kind with neither fails;
3. **policies** (each problem names its rule):

   * ``ingest-single`` / ``trading-single``: exactly one workload runs each flow, a Deployment
     with ``replicas: 1`` and ``strategy: Recreate``;
   * ``probes``: every long-running container has readiness and liveness probes, the Knative
     API a startup probe too (Job and init containers run to completion: exempt);
   * ``inline-secret``: no ``value:`` for an env name that holds a credential (a ``SecretStr``
     setting, a name with KEY/SECRET/PASSWORD/TOKEN, or a DSN/URL setting that carries a
     password), no such key in a ConfigMap, no ``user:password@`` in any value, no ``Secret``
     with ``data``/``stringData``;
   * ``default-deny``: every namespace with workloads has a NetworkPolicy selecting all pods with
     no rule for both Ingress and Egress; ``egress-internet``: a rule to ``0.0.0.0/0`` allows TCP
     443 only;
   * ``ta-cluster``: the Bytewax StatefulSet's ``-a`` list names exactly its pods, in ordinal
     order, through a headless Service that publishes unready pods; the process id comes from
     the pod name; pods start together and are never replaced one by one (``Parallel``,
     ``OnDelete``); ``-r`` is a per-pod volume; ``-s`` and ``-b`` are set;
   * ``settings``: ConfigMap keys and env names are settings of ``torghut/config.py`` (or
     ``BYTEWAX_*``/``TORGHUT_DATA_DIR``/``PYTHON*``), the values load (``load_settings`` in a
     child process whose environment is the ConfigMap) and pass the live gates of
     ``trading/live_gates.py``; the API's ``API_PORT`` is the Knative serving port;
   * ``references``: ConfigMaps, PVCs and Services that objects name exist in the render;
     commands run modules and files that exist in this repository.

Usage::

    python -m infra.k8s.check                      # every overlay under infra/k8s/overlays
    python -m infra.k8s.check infra/k8s/overlays/live
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from torghut import config

__all__ = [
    "K8S_VERSION",
    "OVERLAYS_DIR",
    "Problem",
    "check",
    "check_overlay",
    "known_settings",
    "main",
    "render",
]

REPO = Path(__file__).resolve().parents[2]
OVERLAYS_DIR = REPO / "infra" / "k8s" / "overlays"
K8S_VERSION = "1.32"
"""Kubernetes release whose schemas the objects must satisfy (the oldest we support)."""

Obj = dict[str, Any]

_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
_KNATIVE_ONLY = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)
"""Fields of a Knative RevisionSpec beyond the core PodSpec."""
_TOPIC_FIELDS = frozenset({"partitions", "replicas", "config", "topicName"})
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_NAME = re.compile(r"(^|_)(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIALS?)(_|$)")
"""Name words that mean a credential (``ALPACA_KEY_ID``, ``LLM_API_KEY``), whole words only:
``TA_DEDUP_MAX_KEYS`` is a count."""
_URL_CREDENTIALS = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
_CREDENTIAL_URLS = frozenset({"CH_DSN", "TRADING_DB_URL"})
"""Settings whose production value embeds a password (``https://user:pass@…``,
``postgresql+psycopg://user:pass@…``): they come from Secrets whatever their name says."""
_EXTRA_ENV = re.compile(r"^(BYTEWAX_[A-Z_]+|TORGHUT_DATA_DIR|PYTHON[A-Z_]*)$")
"""Environment names that are not settings but are read by Bytewax, the data dir or Python."""


@dataclass(frozen=True, order=True)
class Problem:
    """One violation: the rule, the object (``Kind/namespace/name``) and what is wrong."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


# --- rendering -------------------------------------------------------------------------------


def kustomize_binary() -> str:
    """The pinned kustomize: ``$KUSTOMIZE``, beside this Python (``make venv``), or on PATH."""
    candidates = [os.environ.get("KUSTOMIZE"), str(Path(sys.executable).parent / "kustomize")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("kustomize")
    if found:
        return found
    raise FileNotFoundError(
        "kustomize not found: run `make venv` (installs the pinned one into .venv/bin) "
        "or set KUSTOMIZE to a kustomize v5 binary"
    )


def render(directory: Path) -> list[Obj]:
    """``kustomize build directory``, parsed; a failed build raises with kustomize's message."""
    done = subprocess.run(
        [kustomize_binary(), "build", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed:\n{done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# --- the check -------------------------------------------------------------------------------


def check_overlay(directory: Path) -> list[Problem]:
    """Render ``directory`` and :func:`check` the result."""
    return check(render(directory))


def check(objects: Sequence[Obj]) -> list[Problem]:
    """Every problem of a rendered set of objects, sorted; empty = deployable."""
    problems: list[Problem] = []
    problems += _schemas(objects)
    problems += _single_replica(objects, "dataflows.ingest", "ingest-single")
    problems += _single_replica(objects, "dataflows.trading", "trading-single")
    problems += _probes(objects)
    problems += _inline_secrets(objects)
    problems += _network_policies(objects)
    problems += _ta_cluster(objects)
    problems += _settings(objects)
    problems += _references(objects)
    return sorted(set(problems))


def where(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name", "?")
    return (
        f"{obj.get('kind', '?')}/{namespace}/{name}" if namespace else f"{obj.get('kind')}/{name}"
    )


# --- schemas ---------------------------------------------------------------------------------


def _schemas(objects: Sequence[Obj]) -> Iterator[Problem]:
    for obj in objects:
        api = str(obj.get("apiVersion", ""))
        if api == "serving.knative.dev/v1" and obj.get("kind") == "Service":
            yield from _knative_service(obj)
        elif api == "kafka.strimzi.io/v1beta2" and obj.get("kind") == "KafkaTopic":
            yield from _kafka_topic(obj)
        else:
            yield from _validate(obj, where(obj))


def _validate(obj: Obj, at: str) -> Iterator[Problem]:
    for message in _schema_errors(json.dumps(obj, sort_keys=True)):
        yield Problem("schema", at, message)


@functools.lru_cache(maxsize=1024)
def _schema_errors(serialized: str) -> tuple[str, ...]:
    """Schema errors of one object (by its JSON: unchanged objects are validated once)."""
    obj = json.loads(serialized)
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:  # a jsonschema.ValidationError
        path = "/".join(str(p) for p in exc.absolute_path)
        return (f"{path or '(root)'}: {exc.message}",)
    except kubernetes_validate.SchemaNotFoundError:
        return (f"no schema for {obj.get('apiVersion')} {obj.get('kind')}: unvalidated",)
    return ()


def _knative_service(svc: Obj) -> Iterator[Problem]:
    at = where(svc)
    spec = svc.get("spec") or {}
    unknown = set(spec) - {"template", "traffic"}
    if unknown:
        yield Problem("schema", at, f"unknown spec fields {sorted(unknown)}")
    template = spec.get("template") or {}
    if set(template) - {"metadata", "spec"}:
        yield Problem("schema", at, "spec.template holds only metadata and spec")
    pod_spec = dict(template.get("spec") or {})
    concurrency = pod_spec.get("containerConcurrency")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        yield Problem("schema", at, "spec.template.spec.containerConcurrency must be an int >= 1")
    for field in _KNATIVE_ONLY:
        value = pod_spec.pop(field, None)
        if value is not None and (not isinstance(value, int) or value < 0):
            yield Problem("schema", at, f"spec.template.spec.{field} must be an int >= 0")
    metadata = {"name": (svc.get("metadata") or {}).get("name", "knative"), **_meta(template)}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
    yield from _validate(pod, f"{at} (pod template as a core PodSpec)")
    serving = [c for c in pod_spec.get("containers") or [] if c.get("ports")]
    if len(serving) != 1 or len(serving[0]["ports"]) != 1:
        yield Problem("schema", at, "Knative needs exactly one container with exactly one port")
        return
    port = serving[0]["ports"][0].get("containerPort")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = serving[0].get(kind) or {}
        for handler in ("httpGet", "tcpSocket", "grpc"):
            target = (probe.get(handler) or {}).get("port")
            if target is not None and target != port:
                yield Problem(
                    "schema", at, f"{kind} probes port {target}; Knative allows only {port}"
                )


def _meta(template: Obj) -> Obj:
    meta = template.get("metadata") or {}
    return {k: v for k, v in meta.items() if k in ("labels", "annotations")}


def _kafka_topic(topic: Obj) -> Iterator[Problem]:
    at = where(topic)
    meta = topic.get("metadata") or {}
    if not _DNS_SUBDOMAIN.match(str(meta.get("name", ""))):
        yield Problem("schema", at, "metadata.name is not a DNS-1123 subdomain")
    if not (meta.get("labels") or {}).get("strimzi.io/cluster"):
        yield Problem("schema", at, "label strimzi.io/cluster (the Kafka resource) is missing")
    spec = topic.get("spec")
    if not isinstance(spec, dict):
        yield Problem("schema", at, "spec is missing")
        return
    if set(spec) - _TOPIC_FIELDS:
        yield Problem("schema", at, f"unknown spec fields {sorted(set(spec) - _TOPIC_FIELDS)}")
    for field, high in (("partitions", 2**31 - 1), ("replicas", 32767)):
        value = spec.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            yield Problem("schema", at, f"spec.{field} must be an integer in [1, {high}]")
    cfg = spec.get("config", {})
    if not isinstance(cfg, dict) or any(
        not isinstance(v, str | int | float | bool) for v in cfg.values()
    ):
        yield Problem("schema", at, "spec.config must map config names to scalars")
    if "topicName" in spec and not isinstance(spec["topicName"], str):
        yield Problem("schema", at, "spec.topicName must be a string")


# --- workloads, containers -------------------------------------------------------------------


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload, Job, or Knative Service; None for other kinds."""
    kind = obj.get("kind")
    if kind in _WORKLOADS or kind == "Job" or _is_knative(obj):
        spec: Obj = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        return spec
    if kind == "CronJob":
        job = ((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        cron_spec: Obj = (job.get("template") or {}).get("spec") or {}
        return cron_spec
    if kind == "Pod":
        pod: Obj = obj.get("spec") or {}
        return pod
    return None


def containers(obj: Obj, *, init: bool = True) -> Iterator[Obj]:
    spec = pod_spec(obj)
    if spec is None:
        return
    yield from spec.get("containers") or []
    if init:
        yield from spec.get("initContainers") or []


def _is_knative(obj: Obj) -> bool:
    return obj.get("apiVersion") == "serving.knative.dev/v1" and obj.get("kind") == "Service"


def argv(container: Obj) -> list[str]:
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def _runs(container: Obj, module: str) -> bool:
    """Whether the container runs the Bytewax flow of ``module`` (``module:flow``)."""
    return any(a == module or a.startswith(module + ":") for a in argv(container))


def _single_replica(objects: Sequence[Obj], module: str, rule: str) -> Iterator[Problem]:
    running = [o for o in objects if any(_runs(c, module) for c in containers(o))]
    if len(running) != 1:
        yield Problem(
            rule,
            module,
            f"{len(running)} objects run {module}; exactly one Deployment must "
            f"({', '.join(where(o) for o in running) or 'none'})",
        )
    for obj in running:
        at = where(obj)
        spec = obj.get("spec") or {}
        if obj.get("kind") != "Deployment":
            yield Problem(rule, at, f"{module} must run as a Deployment, not {obj.get('kind')}")
            continue
        if spec.get("replicas") != 1:
            yield Problem(rule, at, f"replicas is {spec.get('replicas')!r}; must be exactly 1")
        if (spec.get("strategy") or {}).get("type") != "Recreate":
            yield Problem(rule, at, "strategy.type must be Recreate (never two pods at once)")


def _probes(objects: Sequence[Obj]) -> Iterator[Problem]:
    for obj in objects:
        if obj.get("kind") not in _WORKLOADS and not _is_knative(obj):
            continue
        wanted = ["readinessProbe", "livenessProbe"]
        if _is_knative(obj):
            wanted.append("startupProbe")
        for c in containers(obj, init=False):
            for probe in wanted:
                if not c.get(probe):
                    yield Problem("probes", where(obj), f"container {c.get('name')}: no {probe}")


# --- secrets ---------------------------------------------------------------------------------


def known_settings() -> dict[str, bool]:
    """Every environment name of ``torghut/config.py`` → whether it holds a secret.

    Read from the settings classes themselves, so a setting added there is known here at once.
    """
    names: dict[str, bool] = {"TORGHUT_DATA_DIR": False}
    for attr in config.__all__:
        section = getattr(config, attr)
        if not (isinstance(section, type) and issubclass(section, BaseSettings)):
            continue
        prefix = str(section.model_config.get("env_prefix", ""))
        for field, info in section.model_fields.items():
            annotation = info.annotation
            secret = annotation is SecretStr or SecretStr in typing.get_args(annotation)
            names[f"{prefix}{field}".upper()] = secret
    return names


def _secret_name(name: str, settings: Mapping[str, bool]) -> bool:
    return settings.get(name, False) or name in _CREDENTIAL_URLS or bool(_SECRET_NAME.search(name))


def _inline_secrets(objects: Sequence[Obj]) -> Iterator[Problem]:
    settings = known_settings()
    for obj in objects:
        at = where(obj)
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            yield Problem("inline-secret", at, "a Secret with data in the repository")
        if obj.get("kind") == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if _secret_name(key, settings):
                    yield Problem("inline-secret", at, f"{key} is a credential in a ConfigMap")
                elif _URL_CREDENTIALS.search(str(value)):
                    yield Problem("inline-secret", at, f"{key} holds user:password@")
        for c in containers(obj):
            for env in c.get("env") or []:
                name = str(env.get("name", ""))
                if "value" not in env:
                    continue
                if _secret_name(name, settings):
                    yield Problem(
                        "inline-secret",
                        at,
                        f"container {c.get('name')}: {name} has an inline value; "
                        "use valueFrom.secretKeyRef",
                    )
                elif _URL_CREDENTIALS.search(str(env["value"])):
                    yield Problem(
                        "inline-secret", at, f"container {c.get('name')}: {name} holds a password"
                    )


# --- network policies ------------------------------------------------------------------------


def _network_policies(objects: Sequence[Obj]) -> Iterator[Problem]:
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    workload_namespaces = {
        (o.get("metadata") or {}).get("namespace") for o in objects if pod_spec(o) is not None
    }
    for namespace in sorted(workload_namespaces, key=str):
        if not any(
            _is_default_deny(p) for p in policies if p["metadata"].get("namespace") == namespace
        ):
            yield Problem(
                "default-deny",
                f"namespace {namespace}",
                "no NetworkPolicy denies all ingress and egress (podSelector {}, no rules)",
            )
    for policy in policies:
        for rule in (policy.get("spec") or {}).get("egress") or []:
            # A rule without peers allows every destination, the internet included.
            internet = not rule.get("to") or any(
                _is_everywhere((peer.get("ipBlock") or {}).get("cidr")) for peer in rule["to"]
            )
            ports = rule.get("ports") or []
            https_only = bool(ports) and all(
                p.get("port") == 443 and p.get("protocol", "TCP") == "TCP" and not p.get("endPort")
                for p in ports
            )
            if internet and not https_only:
                yield Problem(
                    "egress-internet",
                    where(policy),
                    "egress to the internet on ports other than 443",
                )


def _is_default_deny(policy: Obj) -> bool:
    spec = policy.get("spec") or {}
    selector = spec.get("podSelector")
    selects_all = selector == {} or (
        isinstance(selector, dict)
        and not selector.get("matchLabels")
        and not selector.get("matchExpressions")
    )
    types = set(spec.get("policyTypes") or [])
    return (
        selects_all
        and {"Ingress", "Egress"} <= types
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def _is_everywhere(cidr: object) -> bool:
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


# --- the TA cluster --------------------------------------------------------------------------


def _ta_cluster(objects: Sequence[Obj]) -> Iterator[Problem]:
    services = {
        (o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o.get("kind") == "Service" and o.get("apiVersion") == "v1"
    }
    for sts in (o for o in objects if o.get("kind") == "StatefulSet"):
        for c in containers(sts, init=False):
            if "bytewax.run" in argv(c):
                yield from _bytewax_sts(sts, c, services)


def _bytewax_sts(
    sts: Obj, container: Obj, services: Mapping[tuple[Any, Any], Obj]
) -> Iterator[Problem]:
    at = where(sts)
    meta, spec = sts["metadata"], sts.get("spec") or {}
    name, replicas, service_name = meta["name"], spec.get("replicas", 1), spec.get("serviceName")
    flags = _flags(argv(container))
    env = {e.get("name"): e for e in container.get("env") or []}
    port = next(
        (
            p.get("containerPort")
            for p in container.get("ports") or []
            if p.get("name") == "cluster"
        ),
        None,
    )
    expected = ";".join(f"{name}-{i}.{service_name}:{port}" for i in range(replicas))
    if flags.get("-a") != expected:
        yield Problem(
            "ta-cluster",
            at,
            f"-a is {flags.get('-a')!r}; with {replicas} replicas it must be {expected!r}",
        )
    pod_name = ((env.get("BYTEWAX_POD_NAME") or {}).get("valueFrom") or {}).get("fieldRef") or {}
    sts_name = (env.get("BYTEWAX_STATEFULSET_NAME") or {}).get("value")
    if "-i" not in flags and (pod_name.get("fieldPath") != "metadata.name" or sts_name != name):
        yield Problem(
            "ta-cluster",
            at,
            "the process id must come from the ordinal: BYTEWAX_POD_NAME from metadata.name and "
            f"BYTEWAX_STATEFULSET_NAME={name!r} (got {sts_name!r})",
        )
    if spec.get("podManagementPolicy") != "Parallel":
        yield Problem("ta-cluster", at, "podManagementPolicy must be Parallel (start together)")
    if (spec.get("updateStrategy") or {}).get("type") != "OnDelete":
        yield Problem(
            "ta-cluster", at, "updateStrategy must be OnDelete (a cluster restarts as a whole)"
        )
    service = services.get((meta.get("namespace"), service_name))
    if service is None:
        yield Problem("ta-cluster", at, f"serviceName {service_name!r} is not in the render")
    else:
        svc_spec = service.get("spec") or {}
        if svc_spec.get("clusterIP") != "None" or not svc_spec.get("publishNotReadyAddresses"):
            yield Problem(
                "ta-cluster",
                where(service),
                "must be headless (clusterIP: None) and publishNotReadyAddresses: true",
            )
    for flag in ("-r", "-s", "-b"):
        if flag not in flags:
            yield Problem("ta-cluster", at, f"recovery flag {flag} is missing")
    claims = {(t.get("metadata") or {}).get("name") for t in spec.get("volumeClaimTemplates") or []}
    mounts = {m.get("mountPath"): m.get("name") for m in container.get("volumeMounts") or []}
    if flags.get("-r") and mounts.get(flags["-r"]) not in claims:
        yield Problem(
            "ta-cluster", at, f"-r {flags['-r']} is not a volumeClaimTemplates volume mount"
        )


def _flags(args: Sequence[str]) -> dict[str, str]:
    long = {
        "--addresses": "-a",
        "--process-id": "-i",
        "--workers-per-process": "-w",
        "--recovery-directory": "-r",
        "--snapshot-interval": "-s",
        "--backup-interval": "-b",
    }
    flags: dict[str, str] = {}
    for i, arg in enumerate(args[:-1]):
        key = long.get(arg, arg)
        if key in long.values():
            flags[key] = args[i + 1]
    return flags


# --- settings --------------------------------------------------------------------------------


def _settings(objects: Sequence[Obj]) -> Iterator[Problem]:
    settings = known_settings()
    maps = [o for o in objects if o.get("kind") == "ConfigMap" and _is_settings_map(o)]
    for cm in maps:
        data = {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
        for key in sorted(data):
            if key not in settings and not _EXTRA_ENV.match(key):
                yield Problem("settings", where(cm), f"{key} is not a setting of torghut/config.py")
        for message in settings_verdict(data):
            yield Problem("settings", where(cm), message)
    for obj in objects:
        for c in containers(obj):
            for env in c.get("env") or []:
                name = str(env.get("name", ""))
                if name not in settings and not _EXTRA_ENV.match(name):
                    yield Problem(
                        "settings",
                        where(obj),
                        f"container {c.get('name')}: {name} is not a setting of torghut/config.py",
                    )
        if _is_knative(obj):
            yield from _api_port(obj, maps)


def _is_settings_map(cm: Obj) -> bool:
    return str((cm.get("metadata") or {}).get("name", "")).startswith("torghut-settings")


def settings_verdict(environment: Mapping[str, str]) -> list[str]:
    """Problems a process started with ``environment`` would report (empty = it starts).

    Runs ``load_settings()`` and the live gates in a child process whose environment is exactly
    ``environment``: the very code every Torghut process runs at start, on nothing else. The
    answer depends only on the environment, so each distinct one is asked once per process.
    """
    return list(_verdict(tuple(sorted(environment.items()))))


@functools.lru_cache(maxsize=64)
def _verdict(environment: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    done = subprocess.run(
        [sys.executable, "-c", _VERDICT],
        env=dict(environment),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        return (f"the settings check itself failed: {done.stderr.strip()[-500:]}",)
    return tuple(json.loads(done.stdout))


_VERDICT = """
import json
from torghut.config import SettingsError, load_settings
from trading.core.live_gates import LiveGateError, trading_endpoint
problems = []
try:
    s = load_settings()
    trading_endpoint(s.trading, s.alpaca)
except (SettingsError, LiveGateError) as exc:
    problems.append(str(exc))
print(json.dumps(problems))
"""


def _api_port(svc: Obj, maps: Sequence[Obj]) -> Iterator[Problem]:
    for c in containers(svc, init=False):
        ports = [p.get("containerPort") for p in c.get("ports") or []]
        if not ports:
            continue
        values = _effective_env(c, maps)
        if values.get("API_PORT", "8080") != str(ports[0]):
            yield Problem(
                "settings",
                where(svc),
                f"API_PORT={values.get('API_PORT', '8080')} but Knative serves port {ports[0]}",
            )
        if values.get("API_HOST", "127.0.0.1") != "0.0.0.0":
            yield Problem("settings", where(svc), "API_HOST must be 0.0.0.0 to be reachable")


def _effective_env(container: Obj, maps: Sequence[Obj]) -> dict[str, str]:
    by_name = {m["metadata"]["name"]: m.get("data") or {} for m in maps}
    values: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        values.update(by_name.get((source.get("configMapRef") or {}).get("name"), {}))
    for env in container.get("env") or []:
        if "value" in env:
            values[str(env["name"])] = str(env["value"])
    return values


# --- references ------------------------------------------------------------------------------


def _references(objects: Sequence[Obj]) -> Iterator[Problem]:
    names: dict[str, set[tuple[Any, Any]]] = {}
    for o in objects:
        meta = o.get("metadata") or {}
        names.setdefault(str(o.get("kind")), set()).add((meta.get("namespace"), meta.get("name")))
    for obj in objects:
        namespace = (obj.get("metadata") or {}).get("namespace")
        spec = pod_spec(obj)
        if spec is None:
            continue
        wanted: list[tuple[str, Any]] = []
        for c in containers(obj):
            for source in c.get("envFrom") or []:
                if "configMapRef" in source and not source["configMapRef"].get("optional"):
                    wanted.append(("ConfigMap", source["configMapRef"].get("name")))
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and not ref.get("optional"):
                    wanted.append(("ConfigMap", ref.get("name")))
            yield from _command_exists(obj, c)
        for volume in spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                wanted.append(
                    ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
                )
            if "configMap" in volume and not volume["configMap"].get("optional"):
                wanted.append(("ConfigMap", volume["configMap"].get("name")))
        for kind, name in wanted:
            if (namespace, name) not in names.get(kind, set()):
                yield Problem("references", where(obj), f"{kind} {name!r} is not in the render")


def _command_exists(obj: Obj, container: Obj) -> Iterable[Problem]:
    """``python -m MODULE [IMPORT:attr]`` and ``alembic -c FILE`` name things of this repo."""
    args = argv(container)
    missing: list[str] = []
    if len(args) >= 3 and args[0] == "python" and args[1] == "-m":
        missing += [args[2]] if not _module_exists(args[2]) else []
        if args[2] == "bytewax.run" and len(args) >= 4:
            flow_module = args[3].split(":", 1)[0]
            missing += [flow_module] if not _module_exists(flow_module) else []
    if args[:1] == ["alembic"] and "-c" in args:
        ini = args[args.index("-c") + 1]
        missing += [ini] if not (REPO / ini).is_file() else []
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = ((container.get(probe) or {}).get("exec") or {}).get("command") or []
        if len(command) >= 3 and command[:2] == ["python", "-m"] and not _module_exists(command[2]):
            missing.append(command[2])
    return [
        Problem("references", where(obj), f"container {container.get('name')} runs {m}: not found")
        for m in missing
    ]


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --- command line ----------------------------------------------------------------------------


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())


def main(argv_: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.k8s.check", description=__doc__)
    parser.add_argument("overlays", nargs="*", type=Path, help="default: every overlay")
    args = parser.parse_args(argv_)
    failed = False
    for directory in args.overlays or overlays():
        objects = render(directory)
        problems = check(objects)
        failed |= bool(problems)
        status = "FAIL" if problems else "ok"
        print(f"{status} {directory} ({len(objects)} objects)")
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
