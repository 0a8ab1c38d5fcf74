"""The Prometheus Operator fields the shipped `Probe` and `ScrapeConfig` resources rely on, and
the Prometheus scrape config the operator derives from them.

No Kubernetes cluster (and no operator) is available to the tests, so the resources in
`config/prometheus-operator-*.yaml` cannot be applied. Instead:

* `problems()` checks a resource against the CRD fields written down here, taken from the
  operator's v0.72.0 CRDs (`example/prometheus-operator-crd/monitoring.coreos.com_probes.yaml`
  and `..._scrapeconfigs.yaml`): names, types, enums, patterns and required fields. Only fields
  the examples use are listed, so any other key is reported, a typo included; a field the CRD
  has can be added here when an example starts to use it.
* `scrape_config()` turns a resource into the Prometheus `scrape_config` the operator writes for
  it (`pkg/prometheus/promcfg.go`: for a Probe with `staticConfig` it sets `__param_target`,
  `instance` and `__address__` = prober URL, then appends the resource's relabelings; a
  ScrapeConfig's relabelings go through as written, actions lower-cased), so that promtool and
  a real Prometheus can run what the resource asks for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The CRD's pattern for every duration field (interval, scrapeTimeout, scrapeInterval).
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
RELABEL_ACTIONS = (
    "replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
    "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
    "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
    "dropequal", "DropEqual",
)  # fmt: skip


@dataclass(frozen=True)
class Text:
    """A string, optionally matching a pattern or one of some values."""

    pattern: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Integer:
    """An integer (int64 in the CRD)."""


@dataclass(frozen=True)
class ListOf:
    """An array of one item type."""

    item: Schema


@dataclass(frozen=True)
class MapOf:
    """An object with free keys (additionalProperties) of one value type."""

    value: Schema


@dataclass(frozen=True)
class Obj:
    """An object with named properties; `required` ones must be present."""

    properties: Mapping[str, Schema]
    required: frozenset[str] = field(default_factory=frozenset)


Schema = Text | Integer | ListOf | MapOf | Obj

RELABEL_CONFIG = Obj(
    {
        "action": Text(choices=RELABEL_ACTIONS),
        "modulus": Integer(),
        "regex": Text(),
        "replacement": Text(),
        "separator": Text(),
        "sourceLabels": ListOf(Text(pattern=LABEL_NAME)),
        "targetLabel": Text(),
    }
)
METADATA = Obj({"name": Text(), "namespace": Text(), "labels": MapOf(Text())}, frozenset({"name"}))

PROBE = Obj(
    {
        "apiVersion": Text(choices=("monitoring.coreos.com/v1",)),
        "kind": Text(choices=("Probe",)),
        "metadata": METADATA,
        "spec": Obj(
            {
                "jobName": Text(),
                "module": Text(),
                "interval": Text(pattern=DURATION),
                "scrapeTimeout": Text(pattern=DURATION),
                "prober": Obj(
                    {
                        "url": Text(),
                        "path": Text(),
                        "scheme": Text(choices=("http", "https")),
                        "proxyUrl": Text(),
                    },
                    frozenset({"url"}),
                ),
                "targets": Obj(
                    {
                        "staticConfig": Obj(
                            {
                                "static": ListOf(Text()),
                                "labels": MapOf(Text()),
                                "relabelingConfigs": ListOf(RELABEL_CONFIG),
                            }
                        )
                    }
                ),
                "metricRelabelings": ListOf(RELABEL_CONFIG),
            }
        ),
    },
    frozenset({"apiVersion", "kind", "metadata", "spec"}),
)

SCRAPE_CONFIG = Obj(
    {
        "apiVersion": Text(choices=("monitoring.coreos.com/v1alpha1",)),
        "kind": Text(choices=("ScrapeConfig",)),
        "metadata": METADATA,
        "spec": Obj(
            {
                "scrapeInterval": Text(pattern=DURATION),
                "scrapeTimeout": Text(pattern=DURATION),
                "metricsPath": Text(),
                "params": MapOf(ListOf(Text())),
                "scheme": Text(choices=("HTTP", "HTTPS")),
                "staticConfigs": ListOf(Obj({"targets": ListOf(Text()), "labels": MapOf(Text())})),
                "relabelings": ListOf(RELABEL_CONFIG),
                "metricRelabelings": ListOf(RELABEL_CONFIG),
            }
        ),
    },
    frozenset({"apiVersion", "kind", "metadata", "spec"}),
)

SCHEMAS: Mapping[str, Obj] = {"Probe": PROBE, "ScrapeConfig": SCRAPE_CONFIG}


def problems(resource: Any) -> list[str]:
    """Every way `resource` departs from the CRD fields of its kind, as `path: message`."""
    if not isinstance(resource, dict) or resource.get("kind") not in SCHEMAS:
        return ["kind: not Probe or ScrapeConfig"]
    found: list[str] = []
    _check(resource, SCHEMAS[resource["kind"]], "", found)
    return found


def _check(value: Any, schema: Schema, path: str, found: list[str]) -> None:
    if isinstance(schema, Text):
        _check_text(value, schema, path or ".", found)
    elif isinstance(schema, Integer):
        if not isinstance(value, int) or isinstance(value, bool):
            found.append(f"{path}: expected an integer, got {value!r}")
    elif isinstance(schema, ListOf):
        if not isinstance(value, list):
            found.append(f"{path}: expected a list, got {value!r}")
            return
        for index, item in enumerate(value):
            _check(item, schema.item, f"{path}[{index}]", found)
    elif isinstance(schema, MapOf):
        if not isinstance(value, dict):
            found.append(f"{path}: expected a mapping, got {value!r}")
            return
        for key, item in value.items():
            _check(item, schema.value, f"{path}.{key}", found)
    else:
        _check_object(value, schema, path, found)


def _check_text(value: Any, schema: Text, where: str, found: list[str]) -> None:
    if not isinstance(value, str):
        found.append(f"{where}: expected a string, got {value!r}")
    elif schema.pattern is not None and not re.fullmatch(schema.pattern, value):
        found.append(f"{where}: {value!r} does not match {schema.pattern}")
    elif schema.choices and value not in schema.choices:
        found.append(f"{where}: {value!r} is not one of {', '.join(schema.choices)}")


def _check_object(value: Any, schema: Obj, path: str, found: list[str]) -> None:
    if not isinstance(value, dict):
        found.append(f"{path or '.'}: expected an object, got {value!r}")
        return
    for key in sorted(schema.required - value.keys()):
        found.append(f"{path}.{key}: required field missing")
    for key, item in value.items():
        if key not in schema.properties:
            found.append(f"{path}.{key}: not a field of the CRD (or not one listed here)")
        else:
            _check(item, schema.properties[key], f"{path}.{key}", found)


_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "separator": "separator",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def _relabel(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CR relabeling as Prometheus' relabel_config (the operator lower-cases the action)."""
    converted = {_RELABEL_KEYS[key]: value for key, value in rule.items()}
    if "action" in converted:
        converted["action"] = str(converted["action"]).lower()
    return converted


def scrape_config(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The scrape_config the operator generates for a Probe or ScrapeConfig resource."""
    metadata, spec = resource["metadata"], resource["spec"]
    namespace, name = metadata.get("namespace", "default"), metadata["name"]
    job: dict[str, Any]
    if resource["kind"] == "Probe":
        prober, static = spec["prober"], spec["targets"]["staticConfig"]
        job = {
            "job_name": f"probe/{namespace}/{name}",
            "metrics_path": prober.get("path", "/probe"),
            "scheme": prober.get("scheme", "http"),
            "static_configs": [{"targets": static["static"], "labels": static.get("labels", {})}],
        }
        if "module" in spec:
            job["params"] = {"module": [spec["module"]]}
        relabels: list[dict[str, Any]] = []
        if "jobName" in spec:
            relabels.append({"target_label": "job", "replacement": spec["jobName"]})
        relabels += [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": prober["url"]},
        ]
        relabels += [_relabel(rule) for rule in static.get("relabelingConfigs", [])]
        job["relabel_configs"] = relabels
        timing = {"interval": "scrape_interval", "scrapeTimeout": "scrape_timeout"}
    else:
        job = {
            "job_name": f"scrapeConfig/{namespace}/{name}",
            "metrics_path": spec.get("metricsPath", "/metrics"),
            "scheme": spec.get("scheme", "HTTP").lower(),
            "static_configs": spec.get("staticConfigs", []),
            "relabel_configs": [_relabel(rule) for rule in spec.get("relabelings", [])],
        }
        if "params" in spec:
            job["params"] = spec["params"]
        timing = {"scrapeInterval": "scrape_interval", "scrapeTimeout": "scrape_timeout"}
    for key, prometheus_key in timing.items():
        if key in spec:
            job[prometheus_key] = spec[key]
    if "metricRelabelings" in spec:
        job["metric_relabel_configs"] = [_relabel(rule) for rule in spec["metricRelabelings"]]
    return job
