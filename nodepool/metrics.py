"""Every metric we send, declared once: its statsd key and its Prometheus name.

A :class:`Metric` pairs an upstream statsd key pattern
(``nodepool.provider.{provider}.nodes.{state}``) with the Prometheus family
it feeds (``nodepool_provider_nodes``), whose labels are the pattern's
fields.  Call sites build their keys from these declarations
(``PROVIDER_NODES.key(provider=p, state=s)``): the result is the statsd key
string, as upstream writes it, carrying its labels along, so names that
contain dots (labels, images and hosts may) map to the right labels
without parsing the dotted key after the fact.

The statsd type decides the Prometheus type: a gauge is a gauge, a
counter a counter (``_total``), a timer a histogram in seconds.  A statsd
counter sent under the same key as a timer (``nodepool.image_update.*``)
is that histogram's ``_count``.

Launch results (four statsd keys for one event) and the measurements
statsd cannot carry well (latency histograms per provider and label) are
declared at the end as :class:`Family` objects; :mod:`nodepool.stats`
feeds them from structured calls.

``doc/source/metrics.rst`` lists the same mapping for operators; a unit
test holds the two together.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

GAUGE = "gauge"
COUNTER = "counter"
TIMER = "timer"

# Bucket bounds, in seconds.  Launches and request waits run from seconds
# (a ready node handed out) to the better part of an hour (a slow cloud).
LAUNCH_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0,
                  300.0, 600.0, 900.0, 1800.0, 3600.0)
# A cloud API call: milliseconds to the API timeout (60 s by default).
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Image builds take minutes to hours (build-timeout defaults to 8 h).
BUILD_BUCKETS = (60.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0,
                 7200.0, 10800.0, 14400.0, 21600.0, 28800.0)
UPLOAD_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
                  7200.0, 14400.0)


@dataclass(frozen=True)
class Metric:
    """One statsd key pattern and the Prometheus family it feeds.

    ``dotless`` names the fields whose values never contain a dot (they
    are normalised, or come from a fixed vocabulary such as node states);
    a plain string key can be read back into labels only when at most one
    field may contain dots (see :func:`parse`).
    """

    pattern: str
    name: str
    kind: str
    help: str
    dotless: frozenset[str] = frozenset()
    buckets: tuple[float, ...] = ()
    labels: tuple[str, ...] = field(init=False)
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = tuple(name for _, name, _, _ in string.Formatter().parse(self.pattern)
                       if name)
        object.__setattr__(self, "labels", fields)
        free = [f for f in fields if f not in self.dotless]
        regex = None
        if len(free) <= 1:
            parts = []
            for literal, name, _, _ in string.Formatter().parse(self.pattern):
                parts.append(re.escape(literal))
                if name:
                    body = "[^.]+" if name in self.dotless else ".+"
                    parts.append(f"(?P<{name}>{body})")
            regex = re.compile("".join(parts) + r"\Z")
        object.__setattr__(self, "_regex", regex)

    @property
    def exposed_name(self) -> str:
        """The name the samples carry in ``/metrics``."""
        if self.kind == COUNTER:
            return f"{self.name}_total"
        return self.name

    def key(self, **values: Any) -> Key:
        """The statsd key for these label values (written raw, as upstream
        writes them), carrying the values for Prometheus."""
        if set(values) != set(self.labels):
            raise ValueError(f"{self.pattern} takes {self.labels}, not {sorted(values)}")
        labels = {k: str(v) for k, v in values.items()}
        return Key(self.pattern.format(**labels), self, labels)

    def parse(self, key: str) -> Key | None:
        """``key`` as this metric's, when the pattern can be read back
        unambiguously and matches."""
        if self._regex is None:
            return None
        match = self._regex.match(key)
        if match is None:
            return None
        return Key(key, self, match.groupdict())


class Key(str):
    """A statsd key that knows its :class:`Metric` and label values.

    It is a ``str`` so that every statsd call site, test and dictionary
    keyed by key text keeps working unchanged.
    """

    metric: Metric
    labels: dict[str, str]

    def __new__(cls, text: str, metric: Metric, labels: dict[str, str]) -> Key:
        obj = super().__new__(cls, text)
        obj.metric = metric
        obj.labels = labels
        return obj

    def label_values(self) -> tuple[str, ...]:
        return tuple(self.labels[name] for name in self.metric.labels)


@dataclass(frozen=True)
class Family:
    """A Prometheus family fed from structured calls, not from one statsd key."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def exposed_name(self) -> str:
        if self.kind == COUNTER:
            return f"{self.name}_total"
        return self.name


_STATE = frozenset({"state"})

# Nodes and requests (launcher; see nodepool.launcher.stats_worker) -----------

NODES = Metric("nodepool.nodes.{state}", "nodepool_nodes", GAUGE,
               "Nodes in each state.", _STATE)
NODES_UNREADABLE = Metric("nodepool.nodes.unreadable", "nodepool_nodes_unreadable", GAUGE,
                          "Node records the launchers keep but cannot read.")
PROVIDER_NODES = Metric("nodepool.provider.{provider}.nodes.{state}",
                        "nodepool_provider_nodes", GAUGE,
                        "Nodes in each state, per provider.", _STATE)
LABEL_NODES = Metric("nodepool.label.{label}.nodes.{state}", "nodepool_label_nodes", GAUGE,
                     "Nodes in each state, per label (a node counts for each of its "
                     "labels).", _STATE)
ADDRESSABLE_REQUESTS = Metric(
    "nodepool.provider.{provider}.pool.{pool}.addressable_requests",
    "nodepool_pool_addressable_requests", GAUGE,
    "Node requests in ZooKeeper all of whose labels the pool offers.")

# Pools (every launcher's pool workers) ----------------------------------------

PROVIDER_MAX_SERVERS = Metric("nodepool.provider.{provider}.max_servers",
                              "nodepool_provider_max_servers", GAUGE,
                              "Sum of max-servers over the provider's pools.")
LABEL_MAX_SERVERS = Metric("nodepool.label.{label}.max_servers",
                           "nodepool_label_max_servers", GAUGE,
                           "A label's own max-servers across all providers (only labels "
                           "that set one).")
TENANT_LIMIT = Metric("nodepool.tenant_limits.{tenant}.{limit}", "nodepool_tenant_limit",
                      GAUGE, "Each tenant-resource-limits entry (names normalised as in "
                      "the statsd key).", frozenset({"tenant", "limit"}))

# Leaks (launcher and builder) --------------------------------------------------

PROVIDER_LEAKED = Metric("nodepool.provider.{provider}.leaked.{type}",
                         "nodepool_provider_leaked", COUNTER,
                         "Leaked cloud resources deleted.", frozenset({"type"}))

# The launcher's ZooKeeper backlog (nodepool.launcher.local_stats) ------------

_CACHE = frozenset({"cache"})
LAUNCHER_ZK_CONNECTION_QUEUE = Metric(
    "nodepool.launcher.{hostname}.zk.client.connection_queue",
    "nodepool_launcher_zk_connection_queue", GAUGE,
    "Requests waiting to be sent to ZooKeeper.")
LAUNCHER_ZK_EVENT_QUEUE = Metric(
    "nodepool.launcher.{hostname}.zk.{cache}.event_queue",
    "nodepool_launcher_zk_event_queue", GAUGE,
    "ZooKeeper watch events received but not yet read, per cache.", _CACHE)
LAUNCHER_ZK_PLAYBACK_QUEUE = Metric(
    "nodepool.launcher.{hostname}.zk.{cache}.playback_queue",
    "nodepool_launcher_zk_playback_queue", GAUGE,
    "Reads made but not yet applied to the cached view, per cache.", _CACHE)

# Checks of uploads before service (nodepool.launcher.image_validator) --------

IMAGE_VALIDATION = Metric("nodepool.image_validation.{image}.{provider}.{result}",
                          "nodepool_image_validation_duration_seconds", TIMER,
                          "How long the checks of uploads before service took, from "
                          "booting the check node to the verdict, by result (passed, "
                          "failed; _count: checks).", frozenset({"result"}),
                          buckets=LAUNCH_BUCKETS)

# Builder -------------------------------------------------------------------------

_FORMAT = frozenset({"format"})
DIB_IMAGE_SIZE = Metric("nodepool.dib_image_build.{image}.{format}.size",
                        "nodepool_dib_image_build_size_bytes", GAUGE,
                        "Bytes on disk of each format of the last successful build.",
                        _FORMAT)
DIB_IMAGE_DURATION = Metric("nodepool.dib_image_build.{image}.status.duration",
                            "nodepool_dib_image_build_duration_seconds", TIMER,
                            "How long image builds ran.", buckets=BUILD_BUCKETS)
DIB_IMAGE_RC = Metric("nodepool.dib_image_build.{image}.status.rc",
                      "nodepool_dib_image_build_rc", GAUGE,
                      "Exit code of the image's last build (1 for a timeout or a "
                      "cancel).")
DIB_IMAGE_LAST_BUILD = Metric("nodepool.dib_image_build.{image}.status.last_build",
                              "nodepool_dib_image_build_last_build_timestamp_seconds", GAUGE,
                              "When the image's last build ended (seconds since the epoch).")
IMAGE_UPLOAD = Metric("nodepool.image_update.{image}.{provider}",
                      "nodepool_image_upload_duration_seconds", TIMER,
                      "How long successful uploads took (_count: successful uploads).",
                      buckets=UPLOAD_BUCKETS)
IMAGE_BUILD_REQUESTS = Metric("nodepool.image_build_requests",
                              "nodepool_image_build_requests", GAUGE,
                              "Pending image-build requests.")
IMAGE_BUILD_REQUESTED = Metric("nodepool.image.{image}.image_build_requests",
                               "nodepool_image_build_requested", GAUGE,
                               "1 while the image has a pending build request.")
BUILDER_BUILD_STATE = Metric("nodepool.builder.{hostname}.image.{image}.build.state",
                             "nodepool_builder_build_state", GAUGE,
                             "This builder's build of the image: 0 idle, 1 building, "
                             "3 paused.")
BUILDER_UPLOAD_STATE = Metric(
    "nodepool.builder.{hostname}.image.{image}.provider.{provider}.upload.state",
    "nodepool_builder_upload_state", GAUGE,
    "This builder's upload of the image to the provider: 0 idle, 2 uploading, "
    "3 paused.")

# Fed from structured calls ----------------------------------------------------

LAUNCHES = Family("nodepool_launches", COUNTER,
                  "Launch attempts by result (the four nodepool.launch.* counters).",
                  ("provider", "az", "requestor", "result"))
LAUNCH_DURATION = Family("nodepool_launch_duration_seconds", TIMER,
                         "Time from the node record to the launch's result (the "
                         "nodepool.launch.* timers), per provider and label.",
                         ("provider", "label", "result"), LAUNCH_BUCKETS)
REQUEST_FULFIL_DURATION = Family(
    "nodepool_request_fulfil_duration_seconds", TIMER,
    "Time from a node request's creation to its fulfilment, per provider "
    "and label (a request observes once for each distinct label it asks for).",
    ("provider", "label"), LAUNCH_BUCKETS)
CLOUD_API_DURATION = Family(
    "nodepool_cloud_api_duration_seconds", TIMER,
    "Cloud API calls by provider, service, HTTP method and status.",
    ("provider", "service", "method", "status"), API_BUCKETS)

METRICS: tuple[Metric, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Metric))
FAMILIES: tuple[Family, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Family))

# The statsd keys of launch results, mapped onto LAUNCHES and
# LAUNCH_DURATION by nodepool.stats.Stats.launch_result.
LAUNCH_KEYS = (
    "nodepool.launch.{result}",
    "nodepool.launch.provider.{provider}.{result}",
    "nodepool.launch.provider.{provider}.{az}.{result}",
    "nodepool.launch.requestor.{requestor}.{result}",
)


def parse(key: str) -> Key | None:
    """A plain statsd key read back into its metric and labels, for call
    sites that do not build keys from :class:`Metric`; None when it is
    not ours or reading it back could be ambiguous (two patterns match)."""
    if isinstance(key, Key):
        return key
    found = [k for metric in METRICS if (k := metric.parse(key)) is not None]
    if len(found) != 1:
        return None
    return found[0]
