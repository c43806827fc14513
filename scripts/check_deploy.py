#!/usr/bin/env python3
"""Consistency checks of the shipping kit, run by scripts/check-deploy.sh.

Usage: check_deploy.py RENDER_DIR OUT_DIR

RENDER_DIR holds `base.yaml`, `ha.yaml` and `knobs.yaml` (kustomize output of
deploy/base, deploy/overlays/ha and deploy/tests/knobs). The script
checks what schema validation cannot: that the manifests agree with each other
and with the broker (ports, probes, preStop and grace period, metric names,
config copies), that the hardening is all there, that no Deployment an
autoscaler owns sets its replica count, that alerts and dashboard use only
metrics the broker exports, that every alert has an absolute runbook URL whose
anchor is a section of docs/operations.md, and that every repository file the
docs name exists. It
writes OUT_DIR/rules.yaml (the PrometheusRule's groups, for `promtool check
rules`) and OUT_DIR/rules-for-tests.yaml (the same without annotations, for
`promtool test rules`), and OUT_DIR/{base,ha}.env (the pod's BROKER_*
variables, for `check-config`). Exit status 1 and one line per problem on failure.
"""

import fnmatch
import json
import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBLEMS: list[str] = []

# The metric contract plus the extra gauges/counters the broker exports.
REQUIRED_DASHBOARD_METRICS = {
    "ci_creds_issued_total",
    "ci_opa_policy_denials_total",
    "ci_token_rejections_total",
    "ci_sts_latency_seconds",
    "ci_sts_errors_total",
    "ci_jwks_last_success_age_seconds",
    "ci_http_request_duration_seconds",
    "ci_creds_active",
    "ci_ready",
    "ci_http_requests_total",
    "ci_rate_limited_total",
    "ci_github_api_requests_total",
    "ci_github_api_latency_seconds",
    "ci_github_rate_limit_remaining",
    "ci_github_tokens_revoked_total",
    "ci_context_checks_total",
}
REQUIRED_ALERTS = {
    "AttestationBrokerIssuanceDrop": "ci_creds_issued_total",
    "AttestationBrokerPolicyDenialsHigh": "ci_opa_policy_denials_total",
    "AttestationBrokerStsLatencyHigh": "ci_sts_latency_seconds",
    "AttestationBrokerJwksStale": "ci_jwks_last_success_timestamp_seconds",
    "AttestationBrokerJwksStaleCritical": "ci_jwks_last_success_timestamp_seconds",
    "AttestationBrokerJwksRefreshErrors": "ci_jwks_refresh_total",
    "AttestationBrokerReplayStoreErrors": "ci_replay_store_errors_total",
    "AttestationBrokerPolicyReloadFailed": "ci_policy_reloads_total",
    "AttestationBrokerReplicaNotReady": "ci_ready",
    "AttestationBrokerNoReadyReplica": "ci_ready",
    "AttestationBrokerIssueErrorRatioHigh": "ci_http_requests_total",
    "AttestationBrokerRateLimited": "ci_rate_limited_total",
    "AttestationBrokerTlsReloadFailed": "ci_tls_reloads_total",
    "AttestationBrokerReplayStoreFull": "ci_replay_store_full_total",
    "AttestationBrokerGithubApiErrors": "ci_github_api_requests_total",
    "AttestationBrokerGithubRateLimitLow": "ci_github_rate_limit_remaining",
    "AttestationBrokerGithubRevocationErrors": "ci_github_tokens_revoked_total",
    "AttestationBrokerContextChecksUnavailable": "ci_context_checks_total",
}
#: Seconds the preStop sleep must at least last (endpoint removal propagates
#: to kube-proxy, ingress controllers and meshes asynchronously).
MIN_PRESTOP_SECONDS = 5
#: Seconds the process needs to exit after the drain grace.
EXIT_MARGIN_SECONDS = 5
CONFIG_DIR = "/etc/attestation-broker"
ENTRYPOINT = '["/usr/local/bin/attestation-broker", "serve", "--config", "/etc/attestation-broker/broker.toml"]'


def problem(text: str) -> None:
    PROBLEMS.append(text)


def check(condition: bool, text: str) -> bool:
    if not condition:
        problem(text)
    return condition


def exported_metrics() -> set[str]:
    """Metric names registered in src/metrics.rs (the source of truth)."""
    text = (ROOT / "src" / "metrics.rs").read_text()
    names = set(re.findall(r'"(ci_[a-z0-9_]+)"', text))
    check(len(names) >= 10, f"src/metrics.rs: found only {sorted(names)}")
    return names


def metrics_in(expr: str, known: set[str], where: str) -> set[str]:
    used = set()
    for name in re.findall(r"\bci_[a-z0-9_]+\b", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in known:
            used.add(name)
        elif base in known:
            used.add(base)
        else:
            problem(f"{where}: metric {name} is not exported by the broker (src/metrics.rs)")
    return used


def load_render(path: pathlib.Path) -> dict[tuple[str, str], dict]:
    objects = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def one(objects: dict, kind: str, where: str) -> dict:
    found = [obj for (k, _), obj in objects.items() if k == kind]
    if len(found) != 1:
        problem(f"{where}: expected exactly one {kind}, found {len(found)}")
        return {}
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_render(name: str, objects: dict, broker_config: dict) -> None:
    where = f"{name} render"
    deployment = one(objects, "Deployment", where)
    service = one(objects, "Service", where)
    account = one(objects, "ServiceAccount", where)
    configmap = one(objects, "ConfigMap", where)
    netpols = [obj for (kind, _), obj in objects.items() if kind == "NetworkPolicy"]
    check(bool(netpols), f"{where}: no NetworkPolicy")
    monitor = one(objects, "ServiceMonitor", where)
    pdb = one(objects, "PodDisruptionBudget", where)
    one(objects, "PrometheusRule", where)
    if not (deployment and service and account and configmap and netpols and monitor and pdb):
        return
    namespaces = {obj["metadata"].get("namespace") for (kind, _), obj in objects.items() if kind != "Namespace"}
    check(namespaces == {"attestation-broker"}, f"{where}: objects outside namespace attestation-broker: {namespaces}")

    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    pod_labels = pod["metadata"]["labels"]
    check(selects(deployment["spec"]["selector"]["matchLabels"], pod_labels), f"{where}: Deployment selector misses its pods")
    check(spec.get("serviceAccountName") == account["metadata"]["name"], f"{where}: pod does not use the ServiceAccount")
    role_arn = account["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
    check(role_arn.startswith("arn:aws:iam::"), f"{where}: ServiceAccount lacks the IRSA annotation eks.amazonaws.com/role-arn")

    grace = broker_config.get("server", {}).get("shutdown_grace_seconds", 20)
    pre_stop = spec["containers"][0].get("lifecycle", {}).get("preStop", {})
    sleep = pre_stop.get("sleep", {}).get("seconds", 0)
    check(sleep >= MIN_PRESTOP_SECONDS and set(pre_stop) == {"sleep"},
          f"{where}: the container needs a preStop `sleep` action of at least {MIN_PRESTOP_SECONDS} s (no shell in the image)")
    needed = sleep + grace + EXIT_MARGIN_SECONDS
    check(spec.get("terminationGracePeriodSeconds", 30) >= needed,
          f"{where}: terminationGracePeriodSeconds must cover preStop ({sleep} s) + "
          f"server.shutdown_grace_seconds ({grace} s) + {EXIT_MARGIN_SECONDS} s = {needed} s")
    pod_sc = spec.get("securityContext", {})
    check(pod_sc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot must be true")
    check(pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccompProfile must be RuntimeDefault")
    zones = [c.get("topologyKey") for c in spec.get("topologySpreadConstraints", [])]
    check("topology.kubernetes.io/zone" in zones, f"{where}: no topologySpreadConstraint across zones")
    for constraint in spec.get("topologySpreadConstraints", []):
        check(selects(constraint["labelSelector"]["matchLabels"], pod_labels), f"{where}: a topology spread selector misses the pods")

    containers = spec["containers"]
    check(len(containers) == 1, f"{where}: expected one container")
    container = containers[0]
    image = container.get("image", "")
    check("/" in image and not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image,
          f"{where}: image {image!r} must be a full reference with a tag or digest (kustomization images:)")
    sc = container.get("securityContext", {})
    check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
    check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
    check(sc.get("runAsNonRoot") is True, f"{where}: container runAsNonRoot must be true")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities must drop ALL")
    check(not sc.get("capabilities", {}).get("add"), f"{where}: no capability may be added")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            check(resource in resources.get(kind, {}), f"{where}: resources.{kind}.{resource} not set")

    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    listen_port = int(broker_config["server"]["listen"].rsplit(":", 1)[1])
    admin_port = int(broker_config["server"]["admin_listen"].rsplit(":", 1)[1])
    check(ports == {"http": listen_port, "admin": admin_port},
          f"{where}: container ports {ports} must be http={listen_port}, admin={admin_port} (config/broker.toml)")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") in ("admin", admin_port),
              f"{where}: {probe} must GET {path} on the admin port")

    env = {e["name"]: e for e in container.get("env", [])}
    for forbidden in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        check(forbidden not in env, f"{where}: {forbidden} in the pod: the broker's identity must come from IRSA / Pod Identity")
    check(env.get("BROKER_POLICY__FILE", {}).get("value") == f"{CONFIG_DIR}/policy.toml",
          f"{where}: BROKER_POLICY__FILE must point at {CONFIG_DIR}/policy.toml")
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config_mount = next((m for m in mounts.values() if m["mountPath"] == CONFIG_DIR), None)
    if check(config_mount is not None, f"{where}: nothing mounted at {CONFIG_DIR}"):
        volume = volumes.get(config_mount["name"], {})
        check(volume.get("configMap", {}).get("name") == configmap["metadata"]["name"],
              f"{where}: {CONFIG_DIR} is not the generated ConfigMap")
    for key in ("broker.toml", "policy.toml"):
        check(configmap.get("data", {}).get(key) == (ROOT / "config" / key).read_text(),
              f"{where}: ConfigMap {key} differs from config/{key}")

    check(selects(service["spec"]["selector"], pod_labels), f"{where}: Service selector misses the pods")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port_name in ("http", "admin"):
        check(service_ports.get(port_name, {}).get("targetPort") in (port_name, ports.get(port_name)),
              f"{where}: Service port {port_name} does not reach the container port")
    check(selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]),
          f"{where}: ServiceMonitor selector misses the Service")
    for endpoint in monitor["spec"]["endpoints"]:
        check(endpoint.get("port") == "admin" and endpoint.get("path", "/metrics") == "/metrics",
              f"{where}: ServiceMonitor must scrape /metrics on the admin port")
    check(selects(pdb["spec"]["selector"]["matchLabels"], pod_labels), f"{where}: PodDisruptionBudget selector misses the pods")

    policy_types = set()
    ingress_rules, egress_rules = [], []
    for netpol in netpols:
        name_ = netpol["metadata"]["name"]
        check(selects(netpol["spec"]["podSelector"]["matchLabels"], pod_labels), f"{where}: NetworkPolicy {name_} misses the pods")
        check(bool(netpol["spec"].get("policyTypes")), f"{where}: NetworkPolicy {name_} must list its policyTypes")
        policy_types |= set(netpol["spec"].get("policyTypes", []))
        ingress_rules += netpol["spec"].get("ingress", [])
        egress_rules += netpol["spec"].get("egress", [])
    check(policy_types == {"Ingress", "Egress"}, f"{where}: the NetworkPolicies must cover Ingress and Egress")
    ingress_ports = {p["port"] for rule in ingress_rules for p in rule["ports"]}
    check(ingress_ports == {listen_port, admin_port}, f"{where}: NetworkPolicy ingress ports {ingress_ports}")
    for rule in ingress_rules:
        check(bool(rule.get("from")), f"{where}: an ingress rule admits every source")
        for peer in rule.get("from", []):
            names = peer.get("namespaceSelector", {}).get("matchLabels", {})
            if {p["port"] for p in rule["ports"]} == {admin_port}:
                check("kubernetes.io/metadata.name" in names,
                      f"{where}: the admin port must admit a namespace by its kubernetes.io/metadata.name label")
    egress_ports = {p["port"] for rule in egress_rules for p in rule["ports"]}
    https_cidrs = {peer["ipBlock"]["cidr"] for rule in egress_rules if {p["port"] for p in rule["ports"]} == {443}
                   for peer in rule.get("to", []) if "ipBlock" in peer}
    check(https_cidrs == {"0.0.0.0/0", "::/0"}, f"{where}: egress 443 must allow IPv4 and IPv6 (got {sorted(https_cidrs)})")
    dns_peers = [peer for rule in egress_rules if {p["port"] for p in rule["ports"]} == {53}
                 for peer in rule.get("to", [])]
    check({"TCP", "UDP"} == {p.get("protocol", "TCP") for rule in egress_rules for p in rule["ports"] if p["port"] == 53},
          f"{where}: DNS egress must allow port 53 over UDP and TCP")
    check(any(peer.get("ipBlock", {}).get("cidr") == "169.254.20.10/32" for peer in dns_peers),
          f"{where}: DNS egress must reach NodeLocal DNSCache (169.254.20.10)")

    write_env_file(name, container.get("env", []))

    replicas = deployment["spec"].get("replicas")
    store = env.get("BROKER_REPLAY__STORE", {}).get("value", broker_config.get("replay", {}).get("store", "memory"))
    hpas = [obj for (kind, _), obj in objects.items() if kind == "HorizontalPodAutoscaler"]
    # `kubectl apply` of a manifest with spec.replicas resets whatever the
    # autoscaler chose, on every apply.
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        for (kind, obj_name), obj in objects.items():
            if kind == target["kind"] and obj_name == target["name"]:
                check("replicas" not in obj["spec"],
                      f"{where}: {kind} {obj_name} sets spec.replicas but HorizontalPodAutoscaler "
                      f"{hpa['metadata']['name']} owns the count (every apply would reset it)")
    if name == "base":
        check(replicas == 1 and store == "memory", f"{where}: the base runs one replica with the memory replay store")
        check(not hpas, f"{where}: no autoscaler with the memory replay store")
        check(egress_ports == {53, 443}, f"{where}: egress ports {egress_ports} must be DNS and 443")
    else:
        check(replicas is None, f"{where}: the ha overlay leaves the replica count to the HPA")
        check(store == "redis", f"{where}: several replicas need BROKER_REPLAY__STORE=redis")
        redis_url = env.get("BROKER_REPLAY__REDIS_URL", {})
        check("secretKeyRef" in redis_url.get("valueFrom", {}), f"{where}: the Redis URL must come from a Secret")
        check(egress_ports == {53, 443, 6379}, f"{where}: egress ports {egress_ports} must be DNS, 443 and Redis")
        if check(len(hpas) == 1, f"{where}: expected one HorizontalPodAutoscaler"):
            hpa = hpas[0]["spec"]
            check((hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12), f"{where}: HPA must scale 3..12")
            check(hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"], f"{where}: HPA targets another object")


def check_knobs(objects: dict) -> None:
    """deploy/tests/knobs: the overlay changes documented in docs/operations.md
    take effect."""
    where = "knobs render"
    policies = {name: obj for (kind, name), obj in objects.items() if kind == "NetworkPolicy"}
    admin = policies.get("attestation-broker-admin", {}).get("spec", {})
    sources = [peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
               for rule in admin.get("ingress", []) for peer in rule.get("from", [])]
    check(sources == ["observability"], f"{where}: the admin port admits {sources}, not the observability namespace")
    dns = policies.get("attestation-broker-dns", {}).get("spec", {})
    cidrs = {peer["ipBlock"]["cidr"] for rule in dns.get("egress", []) for peer in rule.get("to", []) if "ipBlock" in peer}
    check(cidrs == {"169.254.20.10/32", "10.100.0.10/32"}, f"{where}: DNS egress addresses {sorted(cidrs)}")
    deployment = one(objects, "Deployment", where)
    if deployment:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        check("lifecycle" not in container, f"{where}: the preStop hook was not removed")
    rule = one(objects, "PrometheusRule", where)
    urls = [item.get("annotations", {}).get("runbook_url", "") for group in rule.get("spec", {}).get("groups", [])
            for item in group["rules"] if "alert" in item]
    wanted = "https://git.example.internal/platform/attestation-broker/blob/v0.1.0/docs/operations.md#"
    check(bool(urls) and all(url.startswith(wanted) for url in urls), f"{where}: runbook links not rebased: {urls[:2]}")


OUT_DIR = pathlib.Path(".")
#: Stand-ins for values the cluster provides from Secrets.
SECRET_STAND_INS = {"BROKER_REPLAY__REDIS_URL": "redis://127.0.0.1:6379"}


def write_env_file(name: str, env: list[dict]) -> None:
    """The pod's BROKER_* variables as NAME=VALUE lines, with paths inside the
    image mapped to the repository and Secrets replaced by stand-ins, so that
    check-deploy.sh can run `check-config` exactly as the pod would start."""
    lines = []
    for item in env:
        if not item["name"].startswith("BROKER_"):
            continue
        if "value" in item:
            value = item["value"].replace(f"{CONFIG_DIR}/", str(ROOT / "deploy" / "base" / "config") + "/")
        else:
            value = SECRET_STAND_INS.get(item["name"])
            if value is None:
                problem(f"{name} render: no stand-in for {item['name']} (from {item.get('valueFrom')})")
                continue
        if any(c.isspace() for c in value):
            problem(f"{name} render: {item['name']} has whitespace")
            continue
        lines.append(f"{item['name']}={value}")
    (OUT_DIR / f"{name}.env").write_text("".join(f"{line}\n" for line in lines))


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    slugs = set()
    for line in markdown.splitlines():
        match = re.match(r"#+\s+(.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            slugs.add(slug)
    return slugs


def check_rules(objects: dict, known: set[str], out: pathlib.Path, where: str = "ha render") -> None:
    rule = one(objects, "PrometheusRule", "PrometheusRule")
    if not rule:
        return
    groups = rule["spec"]["groups"]
    docs = (ROOT / "docs" / "operations.md")
    doc_anchors = anchors(docs.read_text()) if docs.exists() else set()
    check(docs.exists(), "docs/operations.md is missing (alert runbooks)")
    alerts = {}
    bases: set[str] = set()
    for group in groups:
        for item in group["rules"]:
            name = item.get("alert") or item.get("record")
            used = metrics_in(item["expr"], known, f"rule {name}")
            if "alert" in item:
                alerts[name] = used
                check(item.get("labels", {}).get("severity") in ("warning", "critical"), f"alert {name}: severity label")
                runbook = item.get("annotations", {}).get("runbook_url", "")
                base, _, anchor = runbook.partition("#")
                check(re.fullmatch(r"https://[^\s#]+", base) is not None and anchor in doc_anchors,
                      f"{where}: alert {name}: runbook_url {runbook!r} must be an absolute https URL "
                      f"whose #anchor is a section of docs/operations.md")
                bases.add(base)
    check(len(bases) <= 1, f"{where}: the runbook URLs do not share one base (the kustomize replacement missed some): {sorted(bases)}")
    for name, metric in REQUIRED_ALERTS.items():
        check(metric in alerts.get(name, set()), f"alert {name} on {metric} is missing")
    (out / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    stripped = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups]
    (out / "rules-for-tests.yaml").write_text(yaml.safe_dump({"groups": stripped}, sort_keys=False))


def check_dashboard(known: set[str]) -> None:
    path = ROOT / "deploy" / "grafana" / "attestation-broker.json"
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        problem(f"{path.relative_to(ROOT)}: {err}")
        return
    panels = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop()
        panels.append(panel)
        stack.extend(panel.get("panels", []))
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)) and None not in ids, "dashboard: panel ids must be unique")
    used = set()
    for panel in panels:
        for target in panel.get("targets", []):
            used |= metrics_in(target.get("expr", ""), known, f"dashboard panel {panel.get('title')!r}")
    for metric in sorted(REQUIRED_DASHBOARD_METRICS - used):
        problem(f"dashboard: no panel shows {metric}")
    check(dashboard.get("uid") and dashboard.get("title"), "dashboard: uid and title are required")


#: Top-level directories of the repository: a doc token starting with one of
#: them names a repository path.
REPO_DIRS = ("scripts", "src", "docs", "deploy", "config", "tests", "examples", "fuzz", "benches", ".ci")
#: Paths the docs name that tools create (they are not in the repository).
GENERATED_PATHS = {"fuzz/artifacts"}


def check_doc_paths() -> None:
    """Every repository path README.md and docs/*.md name (in `code` or as a
    relative link) exists."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        names = re.findall(r"`([^`\s]+)`", text) + re.findall(r"\]\(([^)#\s]+)", text)
        for name in names:
            path = name.removeprefix("./").split("#")[0].rstrip("/")
            if not re.fullmatch(r"(%s)(/[\w.-]+)*" % "|".join(re.escape(d) for d in REPO_DIRS), path):
                continue
            if path in GENERATED_PATHS:
                continue
            exists = (ROOT / path).exists() or (doc.parent / path).exists()
            check(exists, f"{doc.relative_to(ROOT)}: names {name}, which is not in the repository")


def check_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    check(len(stages) >= 2, "Dockerfile: must be multi-stage")
    check(stages and stages[-1].startswith("gcr.io/distroless/") and "nonroot" in stages[-1],
          "Dockerfile: the final stage must be a distroless nonroot image")
    check("--locked" in text, "Dockerfile: cargo build must use --locked")
    check(f"ENTRYPOINT {ENTRYPOINT}" in text, "Dockerfile: ENTRYPOINT must run serve with the shipped config")
    names = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
    for image in stages:
        if image == "scratch" or image in names or image.startswith("$"):
            continue
        check(re.search(r":[^/@]+@sha256:[0-9a-f]{64}$", image) is not None,
              f"Dockerfile: base image {image} must be pinned by tag and digest (IMAGE:TAG@sha256:...)")
    for label in ("source", "revision", "version"):
        check(re.search(rf"org\.opencontainers\.image\.{label}=", text) is not None,
              f"Dockerfile: LABEL org.opencontainers.image.{label} missing")
    check("--strip-all" in text and "--only-keep-debug" in text,
          "Dockerfile: the binary built from source must be stripped, its debug info kept apart")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), "Dockerfile: must end as a non-root USER")
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignore = [line for line in ignore if line and not line.startswith("#")]
    check(ignore[:1] == ["*"], ".dockerignore: must start with `*` (allow-list)")
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    check("dist/linux-*/attestation-broker" in allowed,
          ".dockerignore: must allow dist/linux-*/attestation-broker (BINARY_FROM=prebuilt in the release workflow)")
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    defaults = {"test": "tests/{}.rs", "bench": "benches/{}.rs", "example": "examples/{}.rs", "bin": "src/bin/{}.rs"}
    for kind, default in defaults.items():
        for target in manifest.get(kind, []):
            path = target.get("path") or default.format(target.get("name", ""))
            covered = any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") for pattern in allowed)
            check(covered, f".dockerignore: Cargo.toml's [[{kind}]] {path} is not in the build context; cargo build would fail")


def all_uses(node) -> list[str]:
    """Every `uses:` value in a parsed workflow or action."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "uses" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(all_uses(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(all_uses(item))
    return found


PINNED_USES = re.compile(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s+v\d+(\.\d+)*\s*$")


def check_repository_workflow(rel: str, text: str, doc: dict) -> None:
    """.github/workflows/*: least privilege and pinned actions."""
    check(doc.get("permissions") == {}, f"{rel}: top-level permissions must be {{}}")
    for job_name, job in doc.get("jobs", {}).items():
        check(isinstance(job.get("permissions"), dict),
              f"{rel}: job {job_name} must list its permissions")
        for step in job.get("steps", []):
            uses = step.get("uses", "")
            if uses.startswith("actions/checkout@"):
                check(step.get("with", {}).get("persist-credentials") is False,
                      f"{rel}: job {job_name}: checkout must set persist-credentials: false")
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*(?:-\s+)?uses:", line) and "uses: ./" not in line:
            check(PINNED_USES.match(line) is not None,
                  f"{rel}:{number}: `{line.strip()}` must be OWNER/REPO@<40-hex SHA> # vX.Y.Z")
    if rel.endswith("release.yml"):
        for needle in ("sbom: true", "provenance: mode=max", "cosign sign", "BINARY_FROM=prebuilt",
                       "linux/amd64,linux/arm64", "SHA256SUMS", "--only-keep-debug"):
            check(needle in text, f"{rel}: `{needle}` missing")


def check_action(rel: str, doc: dict) -> None:
    """action.yml: a composite action whose steps the runner can run."""
    check(isinstance(doc.get("name"), str) and isinstance(doc.get("description"), str),
          f"{rel}: name and description are required")
    runs = doc.get("runs", {})
    check(runs.get("using") == "composite", f"{rel}: must be a composite action")
    inputs = doc.get("inputs", {})
    for name in ("broker-url", "audience", "role", "duration-seconds", "ca-file", "mode", "install"):
        check(name in inputs, f"{rel}: input {name} missing")
    for name, spec in inputs.items():
        check(isinstance(spec, dict) and isinstance(spec.get("description"), str) and spec["description"],
              f"{rel}: input {name} needs a description")
        check(isinstance(spec, dict) and ("default" in spec or spec.get("required") is True),
              f"{rel}: input {name} must be required or have a default")
    steps = runs.get("steps", [])
    ids = [s.get("id") for s in steps]
    check(len(ids) == len(set(ids)), f"{rel}: step ids must be unique")
    for spec in doc.get("outputs", {}).values():
        ref = re.search(r"steps\.([\w-]+)\.outputs", str(spec.get("value", "")))
        check(ref is not None and ref.group(1) in ids, f"{rel}: output {spec} refers to no step")
    for s in steps:
        if "run" in s:
            check(s.get("shell") == "bash", f"{rel}: step {s.get('id')} needs shell: bash")
            check("${{" not in s["run"], f"{rel}: step {s.get('id')}: pass inputs through env, not into the script text")
    install = next((s for s in steps if s.get("id") == "install"), {})
    env = install.get("env", {})
    for key in ("AB_VERSION", "AB_SHA256_X86_64", "AB_SHA256_AARCH64"):
        check(key in env and "${{" not in str(env[key]),
              f"{rel}: the install step must pin {key} as a literal (scripts/pin-action-checksums.sh)")
    check("scripts/install-action-binary.sh" in str(install.get("run", "")),
          f"{rel}: the install step must run scripts/install-action-binary.sh")


def check_workflows() -> None:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    names = {p.name for p in workflows}
    check({"ci.yml", "release.yml"} <= names, f".github/workflows: ci.yml and release.yml expected, found {sorted(names)}")
    rels = ["examples/workflow.yml", "action.yml"] + [str(p.relative_to(ROOT)) for p in workflows]
    for rel in rels:
        path = ROOT / rel
        if not check(path.exists(), f"{rel} is missing"):
            continue
        text = path.read_text()
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problem(f"{rel}: not YAML: {err}")
            continue
        if not check(isinstance(doc, dict), f"{rel}: must be a YAML mapping"):
            continue
        for uses in all_uses(doc):
            check(uses.startswith("./") or re.search(r"@[0-9a-f]{40}$", uses) is not None,
                  f"{rel}: `uses: {uses}` must be pinned to a full commit SHA")
        if rel.startswith(".github/workflows/"):
            check_repository_workflow(rel, text, doc)
        elif rel == "examples/workflow.yml":
            check(doc.get("permissions") == {}, f"{rel}: top-level permissions must be {{}}")
            for job_name, job in doc.get("jobs", {}).items():
                check(job.get("permissions", {}).get("id-token") == "write",
                      f"{rel}: job {job_name} needs permissions id-token: write")
            check("persist-credentials: false" in text, f"{rel}: checkout must set persist-credentials: false")
            check("job.check_run_id" in text, f"{rel}: pass --job-id ${{{{ job.check_run_id }}}}")
        else:
            check_action(rel, doc)


def main() -> int:
    global OUT_DIR
    render_dir, out_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    OUT_DIR = out_dir
    broker_config = tomllib.loads((ROOT / "config" / "broker.toml").read_text())
    for key in ("broker.toml", "policy.toml"):
        copy = ROOT / "deploy" / "base" / "config" / key
        check(copy.exists() and copy.read_bytes() == (ROOT / "config" / key).read_bytes(),
              f"deploy/base/config/{key} differs from config/{key}: cp config/{key} deploy/base/config/{key}")
    known = exported_metrics()
    renders = {name: load_render(render_dir / f"{name}.yaml") for name in ("base", "ha")}
    for name, objects in renders.items():
        check_render(name, objects, broker_config)
    check_rules(renders["ha"], known, out_dir)
    knobs = render_dir / "knobs.yaml"
    if check(knobs.exists(), f"{knobs} is missing (render deploy/tests/knobs)"):
        check_knobs(load_render(knobs))
    check_dashboard(known)
    check_dockerfile()
    check_workflows()
    check_doc_paths()
    for text in PROBLEMS:
        print(f"check-deploy: {text}", file=sys.stderr)
    if not PROBLEMS:
        print("consistency checks: ok")
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
