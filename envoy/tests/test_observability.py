"""The observability kit: stats tag extraction, Prometheus alert rules and the Grafana dashboard.

- The tag extractors (`stats_config.stats_tags`) of envoy/envoy.yaml parse with Envoy's schema, are the same in the
  Istio and Envoy Gateway files, and turn each of the filter's labelled stat names (from plugin/filter/src/metrics.rs)
  into the metric and tag Envoy exports.
- Every alert expression and dashboard query parses with a real PromQL parser (promql-parser, the Rust parser's
  Python binding); every metric it selects and every label it matches or groups by is one that real Envoy exports:
  envoy/observability/envoy-prometheus.fixture.txt, scraped from Envoy 1.40 by envoy/observability/scrape_envoy.py;
  and every label value it matches is a code the filter emits.
- The OpenTelemetry access logger of envoy/observability/otel-access-log.yaml parses with Envoy's schema (the
  logger and its HTTP/2 cluster), and every filter-state key it reads is one the filter writes (the record's key and
  FIELD_PROPERTIES in plugin/core/src/gate/record.rs). Real Envoy sending it to a loopback OTLP receiver is
  host-tests/tests/it/envoy_otlp.rs.

Run: py=$(scripts/python-env.sh) && "$py" -m pytest envoy/tests/test_observability.py -q
"""

import json
import pathlib
import re

import promql_parser
import pytest
import yaml
from google.protobuf import json_format

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.metrics.v3 import stats_pb2

# Imported for their side effect: they register the typed configs' message types for ParseDict.
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[2]
OBS = ROOT / "envoy" / "observability"
ALERTS = OBS / "warden-alerts.yaml"
DASHBOARD = OBS / "warden-dashboard.json"
FIXTURE = OBS / "envoy-prometheus.fixture.txt"
METRICS_RS = ROOT / "plugin" / "filter" / "src" / "metrics.rs"
OTEL = OBS / "otel-access-log.yaml"
RECORD_RS = ROOT / "plugin" / "core" / "src" / "gate" / "record.rs"
# Labels the scrape adds (Kubernetes service discovery, Prometheus itself), not Envoy.
TARGET_LABELS = {"namespace", "pod", "instance", "job"}
# Grafana's built-in variables, replaced by a duration before parsing (as Grafana does before querying).
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def shipped_stats_config():
    return yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text(encoding="utf-8"))["stats_config"]


def fixture():
    """metric name -> {label name -> set of values} as Envoy exported them."""
    out = {}
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)", line)
        assert m, f"{FIXTURE.name}: not a Prometheus sample: {line!r}"
        labels = out.setdefault(m.group(1), {})
        for name, value in re.findall(r'(\w+)="([^"]*)"', m.group(2)):
            labels.setdefault(name, set()).add(value)
    return out


def alert_rules():
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_queries():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            expr = t["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"panel {p['title']!r}: an unknown Grafana variable in {t['expr']!r}"
            out.append((f"panel {p['title']!r} {t['refId']}", expr))
    return out


def every_query():
    return [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()] + dashboard_queries()


def walk(node, selectors, grouping):
    """Collects (name, matchers) of every vector selector and the labels of every by/without clause."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        selectors.append(node)
        return
    if kind == "AggregateExpr" and node.modifier is not None:
        grouping.update(node.modifier.labels)
    if kind == "BinaryExpr" and node.modifier is not None and node.modifier.matching is not None:
        grouping.update(node.modifier.matching.labels)
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and type(child).__name__ not in ("str", "int", "float"):
            walk(child, selectors, grouping)
    for arg in getattr(node, "args", None) or []:
        walk(arg, selectors, grouping)


def emitted_codes():
    """Every string literal of the filter and core sources: the codes a label value may take."""
    text = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "plugin").rglob("*.rs"))
    return set(re.findall(r'"([a-z][a-z0-9_]*)"', text))


@pytest.mark.parametrize("where,expr", every_query(), ids=lambda v: v if isinstance(v, str) and len(v) < 60 else "")
def test_every_query_parses_and_names_what_envoy_exports(where, expr):
    exported = fixture()
    codes = emitted_codes()
    ast = promql_parser.parse(expr)
    selectors, grouping = [], set()
    walk(ast, selectors, grouping)
    assert selectors, f"{where}: selects no metric"
    for s in selectors:
        assert s.name in exported, f"{where}: metric {s.name!r} is not exported by Envoy (see {FIXTURE.name})"
        labels = exported[s.name]
        for m in s.matchers.matchers:
            assert m.name in labels or m.name in TARGET_LABELS, f"{where}: {s.name} has no label {m.name!r}"
            if m.name in labels:
                values = m.value.split("|") if str(m.op).endswith("Re") else [m.value]
                for v in values:
                    assert v in codes, f"{where}: {m.name}={v!r} is not a code the filter emits"
    known = set().union(*(exported[s.name].keys() for s in selectors)) | TARGET_LABELS
    assert grouping <= known, f"{where}: groups by {grouping - known}, which no selected metric has"


def test_the_parser_would_catch_a_broken_query():
    with pytest.raises(Exception):
        promql_parser.parse("sum by (warden_reason (rate(warden_reasons[5m]))")
    selectors, grouping = [], set()
    walk(promql_parser.parse('sum by (pod) (rate(envoy_wasmcustom_warden_reasons{warden_reason="x"}[5m]))'),
         selectors, grouping)
    assert [s.name for s in selectors] == ["envoy_wasmcustom_warden_reasons"]
    assert grouping == {"pod"}
    assert "envoy_wasmcustom_warden_reasons" not in fixture(), "Envoy drops the wasmcustom namespace and prefix"


def test_alert_rules_are_complete():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"WardenFailingClosed", "WardenBundleStale", "WardenBundleFetchFailing", "WardenBundleRejectedAsForged",
            "WardenDenyRateSpike", "WardenApprovalReplayed"} <= names
    for r in rules:
        assert r["labels"]["severity"] in {"warning", "critical"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_the_fixture_covers_every_labelled_family():
    exported = fixture()
    for metric, label in [("warden_decisions", "warden_outcome"), ("warden_reasons", "warden_reason"),
                          ("warden_bundle_fetch_failure", "warden_cause"),
                          ("warden_approvals_refused", "warden_approval_refusal"), ("warden_shadow", "warden_shadow")]:
        assert label in exported.get(metric, {}), f"{metric}{{{label}}} missing from {FIXTURE.name}: regenerate it"
    for gauge in ["warden_bundle_revision", "warden_bundle_age_seconds"]:
        assert gauge in exported


def stats_configs():
    istio = yaml.safe_load((ROOT / "envoy" / "istio" / "stats.yaml").read_text(encoding="utf-8"))
    eg = yaml.safe_load((ROOT / "envoy" / "envoy-gateway" / "stats.yaml").read_text(encoding="utf-8"))
    return {
        "envoy/envoy.yaml": shipped_stats_config(),
        "envoy/istio/stats.yaml": json.loads(istio["data"]["custom_bootstrap.json"])["stats_config"],
        "envoy/envoy-gateway/stats.yaml": yaml.safe_load(eg["spec"]["bootstrap"]["value"])["stats_config"],
    }


def test_the_tag_extractors_are_the_same_everywhere_and_parse():
    configs = stats_configs()
    for where, config in configs.items():
        msg = stats_pb2.StatsConfig()
        json_format.ParseDict(config, msg)
        assert config == configs["envoy/envoy.yaml"], where
        names = [t.tag_name for t in msg.stats_tags]
        assert len(names) == len(set(names)), f"{where}: Envoy refuses a tag name used twice"
    assert yaml.safe_load((ROOT / "envoy" / "istio" / "stats.yaml").read_text())["kind"] == "ConfigMap"


def test_every_labelled_stat_name_gets_its_tag():
    """Envoy's extraction (first capture group removed from the name, the second is the value) applied to the names
    the filter defines."""
    text = METRICS_RS.read_text(encoding="utf-8")
    families = re.findall(r'"(warden\.[a-z_.]+\.)\{', text) + re.findall(r'"(warden\.[a-z_.]+\.)"', text)
    assert {"warden.decisions.", "warden.reasons.", "warden.bundle.fetch.failure.", "warden.approvals.refused.",
            "warden.shadow."} <= set(families), families
    extractors = [(t["tag_name"], re.compile(t["regex"])) for t in shipped_stats_config()["stats_tags"]]
    for family in set(families):
        name = f"wasmcustom.{family}some_code"
        hits = [(tag, rx.search(name)) for tag, rx in extractors if rx.search(name)]
        assert len(hits) == 1, f"{name}: matched by {[t for t, _ in hits]}"
        tag, m = hits[0]
        assert m.group(2) == "some_code"
        assert name.replace(m.group(1), "") == f"wasmcustom.{family[:-1]}"
    assert not any(rx.search("wasmcustom.warden.bundle.revision") for _, rx in extractors)


def written_filter_state_keys():
    """Envoy's names (`wasm.` + the property path) of what the filter writes, read from the core's constants."""
    text = RECORD_RS.read_text(encoding="utf-8")
    record = re.search(r'pub const RECORD_PROPERTY: &str = "([^"]+)";', text).group(1)
    fields = re.search(r"pub const FIELD_PROPERTIES: \[&str; \d+\] = \[(.*?)\];", text, re.S).group(1)
    return {"wasm." + k for k in [record, *re.findall(r'"([^"]+)"', fields)]}


def test_the_otel_access_logger_parses_and_reads_only_what_the_filter_writes():
    doc = yaml.safe_load(OTEL.read_text(encoding="utf-8"))
    (logger,) = doc["access_log"]
    (cluster,) = doc["clusters"]
    json_format.ParseDict(logger, accesslog_pb2.AccessLog())
    json_format.ParseDict(cluster, cluster_pb2.Cluster())
    config = logger["typed_config"]
    assert config["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == cluster["name"]
    read = set(re.findall(r"%FILTER_STATE\(([^:)]+):PLAIN\)%", OTEL.read_text(encoding="utf-8")))
    written = written_filter_state_keys()
    assert read, "the logger reads no filter state"
    assert read <= written, f"keys the filter never writes: {sorted(read - written)}"
    assert written <= read, f"fields the logger leaves out: {sorted(written - read)}"
    assert config["body"]["string_value"] == "%FILTER_STATE(wasm.warden_decision:PLAIN)%"
