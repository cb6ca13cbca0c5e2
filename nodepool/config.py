"""Loading and validating nodepool.yaml.

The file is validated with voluptuous (each provider's part by its
driver's schema), then cross-checked (labels, diskimages, parents).
Every problem is reported with the file, the place inside it (a path such
as ``providers[0](name=fake) > pools[0] > labels[1] > min-ram``), the line
and what was expected, so an operator can fix it without reading code.

Two readers share that work.  ``load_config`` (the daemons, the CLI) is as
forgiving as upstream's loader: unknown settings are warnings, and a
provider that cannot be loaded is left out while the others load.
``validate_config`` (``nodepool config-validate``) is as strict as
upstream's validator.  ``check_zookeeper`` is what every process that
connects requires.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import voluptuous as v
import yaml

from nodepool.driver import ConfigValue, Driver, ProviderConfig, registry
from nodepool.exceptions import ConfigError, DriverNotFound, ProviderNotImplemented

log = logging.getLogger("nodepool.config")

DEFAULT_CONFIG = "/etc/nodepool/nodepool.yaml"
DEFAULT_BUILD_LOG_DIR = "/var/log/nodepool/builds"
DEFAULT_WEBAPP_PORT = 8005
DEFAULT_WEBAPP_ADDRESS = "0.0.0.0"
DEFAULT_BUILDER_WEBAPP_PORT = 8006

_ENV_PATTERN = re.compile(r"%\((NODEPOOL_[A-Za-z0-9_]+)\)")


# --------------------------------------------------------------------------
# Schema


def _positive_or_unlimited(value: Any) -> Any:
    return v.Coerce(int)(value)


zookeeper_server = {
    v.Required("host"): str,
    "port": int,
    "chroot": str,
}

zookeeper_tls = {
    v.Required("cert"): str,
    v.Required("key"): str,
    v.Required("ca"): str,
}

label_schema = {
    v.Required("name"): str,
    "min-ready": int,
    "max-ready-age": int,
    # Ours: nodes of the label across every provider (upstream's
    # validator rejects the key).
    "max-servers": v.All(int, v.Range(min=0)),
}

# Ours: a check of each upload before it serves requests (see
# ImageValidation).
validation_schema = {
    v.Required("command"): v.All(str, v.Length(min=1)),
    "timeout": v.All(int, v.Range(min=1)),
    "username": str,
    "private-key": str,
    "label": str,
}

diskimage_schema = {
    v.Required("name"): str,
    "validation": validation_schema,
    "abstract": bool,
    "parent": str,
    "build-timeout": int,
    "dib-cmd": str,
    "delete-after-upload": bool,
    "elements": [str],
    "env-vars": {str: str},
    "formats": [str],
    "keep-formats": [str],
    "metadata": dict,
    "pause": bool,
    "python-path": str,
    "shell-type": str,
    "rebuild-age": int,
    "release": v.Any(str, int),
    "username": str,
}

webapp_schema = {
    "port": int,
    "listen_address": str,
}

tenant_limit_schema = {
    v.Required("tenant-name"): str,
    "max-servers": int,
    "max-cores": int,
    "max-ram": int,
    "max-volumes": int,
    "max-volume-gb": int,
    str: int,
}

provider_common = {
    v.Required("name"): str,
    "driver": str,
    "max-concurrency": int,
    "priority": int,
}

top_level_schema = v.Schema({
    "webapp": webapp_schema,
    # Ours: the builder's /metrics and /health, off unless set.
    "builder-webapp": webapp_schema,
    "elements-dir": str,
    "images-dir": str,
    "build-log-dir": str,
    "build-log-retention": int,
    "zookeeper-servers": [zookeeper_server],
    "zookeeper-tls": zookeeper_tls,
    "zookeeper-timeout": v.Any(int, float),
    "labels": [label_schema],
    "diskimages": [diskimage_schema],
    "providers": list,
    "max-hold-age": int,
    "tenant-resource-limits": [tenant_limit_schema],
})

secure_schema = v.Schema({
    "zookeeper-servers": [zookeeper_server],
    "zookeeper-tls": zookeeper_tls,
    "diskimages": [{v.Required("name"): str, "env-vars": {str: str}}],
})


# --------------------------------------------------------------------------
# Configuration objects


@dataclass(eq=False)
class Label(ConfigValue):
    name: str
    min_ready: int = 0
    max_ready_age: int = 0
    # Nodes of this label allowed at once across every provider and pool
    # (see nodepool.launcher.label_caps); unlimited unless set.
    max_servers: float = math.inf
    # The pools (ConfigPool objects) that offer this label.
    pools: list[Any] = field(default_factory=list)

    _NO_COMPARE = frozenset({"pools"})


DEFAULT_VALIDATION_TIMEOUT = 600


@dataclass(eq=False)
class ImageValidation(ConfigValue):
    """A diskimage's ``validation``: after each upload, a launcher serving
    the provider boots one node from it and runs ``command`` over SSH;
    the upload serves requests only once the command exits 0 within
    ``timeout`` seconds (connecting included)."""

    command: str
    timeout: int = DEFAULT_VALIDATION_TIMEOUT
    # None: the diskimage's ``username``.
    username: str | None = None
    # None: the launcher user's own SSH keys and agent.
    private_key: str | None = None
    # The label the check node is booted as, where a pool of the
    # provider offers it with this diskimage; None (or elsewhere): the
    # first such label of the provider's pools.
    label: str | None = None

    @classmethod
    def from_yaml(cls, d: Mapping[str, Any]) -> ImageValidation:
        return cls(command=d["command"], timeout=d.get("timeout", DEFAULT_VALIDATION_TIMEOUT),
                   username=d.get("username"), private_key=d.get("private-key"),
                   label=d.get("label"))


@dataclass(eq=False)
class DiskImage(ConfigValue):
    """A diskimage after parent inheritance has been applied."""

    name: str
    abstract: bool = False
    parent: str | None = None
    build_timeout: int = 8 * 3600
    dib_cmd: str = "disk-image-create"
    delete_after_upload: bool = False
    elements: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    formats: list[str] = field(default_factory=list)
    keep_formats: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    pause: bool = False
    python_path: str = "auto"
    shell_type: str | None = None
    rebuild_age: int = 86400
    release: str | None = None
    username: str = "zuul"
    # Ours: checked before service when set (off by default).
    validation: ImageValidation | None = None
    # Formats the providers using this image need (filled by providers).
    image_types: set[str] = field(default_factory=set)


class Config(ConfigValue):
    """The whole parsed configuration.

    ``problems`` and ``left_out`` say what the daemons' loader could not
    use (a provider left out, with the reasons); ``warnings`` what it
    ignored (unknown settings) or expects not to work as meant.
    """

    _NO_COMPARE = frozenset({"path", "secure_path", "problems", "left_out", "warnings"})

    def __init__(self) -> None:
        self.path: str | None = None
        self.secure_path: str | None = None
        self.problems: list[str] = []
        # Provider name (or ``providers[i]`` when it has none) -> reasons.
        self.left_out: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        self.webapp: dict[str, Any] = {
            "port": DEFAULT_WEBAPP_PORT, "listen_address": DEFAULT_WEBAPP_ADDRESS}
        # None: the builder serves no web endpoints.
        self.builder_webapp: dict[str, Any] | None = None
        self.elements_dir: str | None = None
        self.images_dir: str | None = None
        self.build_log_dir: str = DEFAULT_BUILD_LOG_DIR
        self.build_log_retention: int = 7
        self.zookeeper_servers: list[dict[str, Any]] = []
        self.zookeeper_tls_cert: str | None = None
        self.zookeeper_tls_key: str | None = None
        self.zookeeper_tls_ca: str | None = None
        self.zookeeper_timeout: float = 10.0
        self.labels: dict[str, Label] = {}
        self.diskimages: dict[str, DiskImage] = {}
        self.providers: dict[str, ProviderConfig] = {}
        self.max_hold_age: float = math.inf
        self.tenant_resource_limits: dict[str, dict[str, float]] = {}

    @property
    def webapp_port(self) -> int:
        return self.webapp["port"]


# --------------------------------------------------------------------------
# Loading


class _Locator:
    """Finds the line of a place in the YAML document for error messages."""

    def __init__(self, text: str) -> None:
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def line(self, path: list[Any]) -> int | None:
        node = self.root
        best = node
        for part in path:
            if isinstance(node, yaml.MappingNode):
                found = None
                for key, value in node.value:
                    if getattr(key, "value", None) == part:
                        found = value
                        best = key
                        break
                node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
                if node is not None:
                    best = node
            else:
                node = None
            if node is None:
                break
        if best is None:
            return None
        return best.start_mark.line + 1


def describe_path(data: Any, path: list[Any]) -> str:
    """``providers[0](name=fake) > pools[0](name=main) > labels[1]``."""
    parts: list[str] = []
    node = data
    for part in path:
        if isinstance(part, int):
            text = f"[{part}]"
            item = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(item, Mapping) and "name" in item:
                text += f"(name={item['name']})"
            if parts:
                parts[-1] += text
            else:
                parts.append(text)
            node = item
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, Mapping) else None
    return " > ".join(parts) or "(top level)"


def substitute_env(text: str) -> str:
    """Replace ``%(NODEPOOL_X)`` with the environment variable's value."""
    def repl(match: re.Match) -> str:
        return os.environ.get(match.group(1), match.group(0))
    return _ENV_PATTERN.sub(repl, text)


def _read_yaml(path: str) -> tuple[Any, str]:
    try:
        with open(path) as f:
            text = substitute_env(f.read())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise ConfigError(f"{path}: YAML syntax error at {where}: {e.problem}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML syntax error: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, "
                          f"not a {type(data).__name__}")
    return data, text


_EXTRA_KEYS = "extra keys not allowed"


@dataclass
class ConfigReport:
    """What is wrong with a configuration file, one message per problem,
    each with file, line and place."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Document:
    """One YAML file being checked: words every message the same way
    (``file:line: place: what``)."""

    def __init__(self, path: str, data: Any, text: str) -> None:
        self.path = path
        self.data = data
        self.locator = _Locator(text)

    def where(self, place: list[Any]) -> str:
        line = self.locator.line(place)
        return f"{self.path}" + (f":{line}" if line else "")

    def message(self, place: list[Any], what: str) -> str:
        return f"{self.where(place)}: {describe_path(self.data, place)}: {what}"

    def invalid(self, errors: list[v.Invalid], prefix: list[Any]) -> list[str]:
        out = []
        for err in errors:
            msg = err.error_message
            if msg == _EXTRA_KEYS:
                msg = "unknown setting (check the spelling; see the configuration reference)"
            elif msg == "required key not provided":
                msg = "required setting is missing"
            # A rule over several keys ("one of a, b or c") ends the path
            # with the rule itself: the place is the mapping holding them.
            path = list(err.path)
            while path and not _is_place(path[-1]):
                path.pop()
            message = self.message(prefix + path, msg)
            if message not in out:
                out.append(message)
        return out

    def check(self, schema: v.Schema, value: Any, prefix: list[Any], strict: bool,
              report: ConfigReport) -> list[str]:
        """Validate ``value`` (found at ``prefix``).  Unknown settings
        become errors (``strict``) or warnings in ``report``; every other
        problem is returned, for the caller to decide what it costs."""
        unknown, others = _split_unknown(schema, value)
        # Found round by round: report them in the file's order.
        unknown.sort(key=lambda place: self.locator.line(prefix + place) or 0)
        for place in unknown:
            if strict:
                report.errors.extend(self.invalid([v.Invalid(_EXTRA_KEYS, place)], prefix))
            else:
                report.warnings.append(self.message(
                    prefix + place, "unknown setting, ignored (check the spelling; "
                    "nodepool config-validate reports it as an error)"))
        return self.invalid(others, prefix)


def _is_place(part: Any) -> bool:
    """Whether a voluptuous error path part names a key or an index."""
    if isinstance(part, v.Marker):
        part = part.schema
    return isinstance(part, (str, int))


def _split_unknown(schema: v.Schema, value: Any) -> tuple[list[list[Any]], list[v.Invalid]]:
    """(paths of unknown keys, every other error).

    voluptuous stops checking a list at its first bad item, so an unknown
    key there would hide the items after it: unknown keys are dropped from
    a copy and the check repeated until only other errors are left (each
    round drops at least one key, so this ends).
    """
    work = copy.deepcopy(value)
    unknown: list[list[Any]] = []
    while True:
        try:
            schema(work)
            return unknown, []
        except v.MultipleInvalid as e:
            extras = [err for err in e.errors if err.error_message == _EXTRA_KEYS]
            others = [err for err in e.errors if err.error_message != _EXTRA_KEYS]
            dropped = [err for err in extras if _drop_key(work, list(err.path))]
            unknown.extend(list(err.path) for err in dropped)
            if not dropped:
                return unknown, others + extras


def _drop_key(data: Any, path: list[Any]) -> bool:
    node = data
    for part in path[:-1]:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    if isinstance(node, dict) and path and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def _driver_name(provider: Mapping[str, Any]) -> str:
    # Upstream forces providers named fake* onto the fake cloud driver.
    name = str(provider.get("name", ""))
    if name.startswith("fake"):
        return "fake"
    return provider.get("driver") or "openstack"


def _check_unique(path: str, items: Any, what: str) -> list[str]:
    seen: set[Any] = set()
    errors = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        name = item.get("name")
        if name in seen:
            errors.append(f"{path}: {what} {name!r} is defined more than once")
        seen.add(name)
    return errors


def _resolve_diskimages(path: str, raw: list[dict]) -> tuple[dict[str, DiskImage], list[str]]:
    """Apply parent inheritance: elements append, env-vars update, other
    keys are inherited unless set."""
    by_name = {d["name"]: d for d in raw}
    errors: list[str] = []
    resolved: dict[str, DiskImage] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> DiskImage | None:
        if name in resolved:
            return resolved[name]
        d = by_name[name]
        parent_name = d.get("parent")
        if parent_name is not None:
            if parent_name in chain:
                errors.append(f"{path}: diskimages: parent loop {' -> '.join(chain + (name,))}")
                return None
            if parent_name not in by_name:
                errors.append(f"{path}: diskimage {name!r} names parent {parent_name!r}, "
                              "which is not defined under diskimages")
                return None
            parent = resolve(parent_name, chain + (name,))
            if parent is None:
                return None
            image = DiskImage(
                name=name, parent=parent_name, build_timeout=parent.build_timeout,
                dib_cmd=parent.dib_cmd, delete_after_upload=parent.delete_after_upload,
                elements=list(parent.elements), env_vars=dict(parent.env_vars),
                formats=list(parent.formats), keep_formats=list(parent.keep_formats),
                metadata=dict(parent.metadata), pause=parent.pause,
                python_path=parent.python_path, shell_type=parent.shell_type,
                rebuild_age=parent.rebuild_age, release=parent.release,
                username=parent.username, validation=parent.validation)
        else:
            image = DiskImage(name=name)
        image.abstract = bool(d.get("abstract", False))
        image.elements = image.elements + list(d.get("elements") or [])
        image.env_vars.update(d.get("env-vars") or {})
        for key, attr in (("build-timeout", "build_timeout"), ("dib-cmd", "dib_cmd"),
                          ("delete-after-upload", "delete_after_upload"),
                          ("formats", "formats"), ("keep-formats", "keep_formats"),
                          ("metadata", "metadata"), ("pause", "pause"),
                          ("python-path", "python_path"), ("shell-type", "shell_type"),
                          ("rebuild-age", "rebuild_age"), ("username", "username")):
            if key in d:
                setattr(image, attr, d[key])
        if "release" in d:
            image.release = str(d["release"])
        if "validation" in d:
            image.validation = ImageValidation.from_yaml(d["validation"])
        if image.dib_cmd and "%p" in image.dib_cmd:
            import nodepool
            image.dib_cmd = image.dib_cmd.replace(
                "%p", os.path.dirname(os.path.abspath(nodepool.__file__)))
        resolved[name] = image
        return image

    for name in by_name:
        resolve(name, ())
    return resolved, errors


def _check_validation_labels(doc: _Document, raw: list[dict],
                             labels: Mapping[str, Label]) -> list[str]:
    """A diskimage's ``validation`` ``label`` must be a configured label."""
    errors = []
    for i, item in enumerate(raw):
        name = (item.get("validation") or {}).get("label")
        if name is not None and name not in labels:
            errors.append(doc.message(
                ["diskimages", i, "validation", "label"],
                f"label {name!r} is not defined under the top-level labels; name a label "
                "whose pools use this diskimage, or leave it out"))
    return errors


def _apply_secure(config_path: str, data: dict, secure_path: str | None, strict: bool,
                  report: ConfigReport) -> None:
    """Merge the secure file into ``data``.  Its problems other than
    unknown settings (in the daemons) make the whole configuration
    unusable, as upstream's loader fails on them too."""
    if not secure_path:
        return
    secure, text = _read_yaml(secure_path)
    doc = _Document(secure_path, secure, text)
    secure_report = ConfigReport()
    errors = doc.check(secure_schema, secure, [], strict, secure_report)
    errors = secure_report.errors + errors
    if errors:
        raise ConfigError("\n".join(errors))
    report.warnings.extend(secure_report.warnings)
    for key in ("zookeeper-servers", "zookeeper-tls"):
        if key in secure:
            data[key] = secure[key]
    images = {d.get("name"): d for d in data.get("diskimages") or []
              if isinstance(d, dict)}
    for item in secure.get("diskimages") or []:
        if item["name"] not in images:
            raise ConfigError(
                f"{secure_path}: diskimage {item['name']!r} is not defined in {config_path}")
        env = dict(images[item["name"]].get("env-vars") or {})
        env.update(item.get("env-vars") or {})
        images[item["name"]]["env-vars"] = env


def _provider_structure(doc: _Document, i: int, item: Any, strict: bool,
                        report: ConfigReport) -> tuple[Driver | None, list[str]]:
    """The provider's driver, and what its schema finds wrong."""
    place: list[Any] = ["providers", i]
    if not isinstance(item, dict):
        return None, [doc.message(place, f"expected a mapping with the provider's "
                                         f"settings, not {type(item).__name__}")]
    try:
        driver = registry.get_driver(_driver_name(item))
    except DriverNotFound as e:
        return None, [doc.message(place, str(e))]
    schema = v.Schema({**provider_common, **driver.get_schema()})
    return driver, doc.check(schema, item, place, strict, report)


def _undefined_labels(doc: _Document, place: list[Any], provider: ProviderConfig,
                      config: Config) -> list[str]:
    return [doc.message(place, f"pool {pool.name!r} offers label {label_name!r}, which "
                               "is not defined under the top-level labels; add it there")
            for pool in provider.pools.values() for label_name in pool.labels
            if label_name not in config.labels]


def _withdraw(config: Config, provider: ProviderConfig) -> None:
    """Forget the pools a provider that is left out registered."""
    for label in config.labels.values():
        label.pools = [p for p in label.pools if p.provider is not provider]


def _load_provider(doc: _Document, i: int, item: Any, config: Config, strict: bool,
                   report: ConfigReport) -> tuple[ProviderConfig | None, list[str]]:
    """Load one provider: (the provider, []) or (None, its problems)."""
    place: list[Any] = ["providers", i]
    driver, problems = _provider_structure(doc, i, item, strict, report)
    if problems or driver is None:
        return None, problems
    provider: ProviderConfig | None = None
    try:
        provider = driver.getProviderConfig(item)
        try:
            provider.check_environment()
        except ConfigError as e:
            if not strict:
                return None, [doc.message(place, str(e))]
            # config-validate: the file may be checked away from the
            # launcher's clouds.yaml (upstream's validator does not look).
            report.warnings.append(doc.message(
                place, f"{e}; the launcher leaves this provider out until it is fixed"))
        provider.load(config)
    except ConfigError as e:
        problems.append(doc.message(place, str(e)))
    except Exception as e:
        log.exception("Unexpected error loading %s", describe_path(doc.data, place))
        problems.append(doc.message(
            place, f"could not be loaded: {type(e).__name__}: {e} (a bug: please report "
                   "it with the traceback logged by nodepool.config)"))
    if provider is not None and not problems:
        problems = _undefined_labels(doc, place, provider, config)
        if problems and strict and not driver.undefined_labels_fail_validation:
            # Upstream's validator does not look for these in this
            # driver's providers: keep its verdict and warn of what its
            # loader refuses.
            report.warnings.extend(
                f"{problem} (the launcher would leave this provider out for it)"
                for problem in problems)
            problems = []
    if provider is not None and not problems and driver.config_only:
        # Understood, checked, but this build cannot serve it: left out
        # like a provider that cannot be loaded, so the others serve on.
        if strict:
            report.warnings.append(doc.message(
                place, f"provider {provider.name!r} uses driver {driver.name!r}, whose "
                       "configuration this build understands but which cannot launch "
                       "nodes yet: this provider will not serve in this build (the "
                       "launcher and the builder leave it out)"))
        else:
            problems = [doc.message(place, str(ProviderNotImplemented(provider.name,
                                                                      driver.name)))]
    if problems:
        if provider is not None:
            _withdraw(config, provider)
        return None, problems
    assert provider is not None
    report.warnings.extend(doc.message(place, w) for w in provider.load_warnings())
    return provider, []


def _build(path: str, secure_path: str | None, strict: bool) -> tuple[Config | None,
                                                                      ConfigReport]:
    """Read and check a configuration.

    ``strict`` (config-validate): every problem is an error.  Otherwise
    (the daemons and the CLI) unknown settings are warnings and a provider
    that cannot be loaded is left out (``Config.left_out``).  Problems
    outside the providers raise ConfigError in both modes (strict: the
    report lists them and no Config is returned).
    """
    report = ConfigReport()
    data, text = _read_yaml(path)
    _apply_secure(path, data, secure_path, strict, report)
    doc = _Document(path, data, text)
    fatal = doc.check(top_level_schema, data, [], strict, report)
    fatal += _check_unique(path, data.get("labels"), "label")
    fatal += _check_unique(path, data.get("diskimages"), "diskimage")
    if fatal:
        if not strict:
            raise ConfigError("\n".join(fatal))
        report.errors.extend(fatal)
        providers = data.get("providers")
        for i, item in enumerate(providers if isinstance(providers, list) else []):
            report.errors.extend(_provider_structure(doc, i, item, strict, report)[1])
        return None, report

    config = Config()
    config.path = path
    config.secure_path = secure_path
    webapp = data.get("webapp") or {}
    config.webapp = {"port": webapp.get("port", DEFAULT_WEBAPP_PORT),
                     "listen_address": webapp.get("listen_address", DEFAULT_WEBAPP_ADDRESS)}
    if "builder-webapp" in data:
        builder_webapp = data.get("builder-webapp") or {}
        config.builder_webapp = {
            "port": builder_webapp.get("port", DEFAULT_BUILDER_WEBAPP_PORT),
            "listen_address": builder_webapp.get("listen_address", DEFAULT_WEBAPP_ADDRESS)}
    config.elements_dir = data.get("elements-dir")
    config.images_dir = data.get("images-dir")
    config.build_log_dir = data.get("build-log-dir") or DEFAULT_BUILD_LOG_DIR
    config.build_log_retention = data.get("build-log-retention", 7)
    config.zookeeper_servers = [dict(s) for s in data.get("zookeeper-servers") or []]
    tls = data.get("zookeeper-tls") or {}
    config.zookeeper_tls_cert = tls.get("cert")
    config.zookeeper_tls_key = tls.get("key")
    config.zookeeper_tls_ca = tls.get("ca")
    config.zookeeper_timeout = float(data.get("zookeeper-timeout", 10.0))
    max_hold_age = data.get("max-hold-age")
    config.max_hold_age = max_hold_age if max_hold_age and max_hold_age > 0 else math.inf

    for i, item in enumerate(data.get("labels") or []):
        label = config.labels[item["name"]] = Label(
            name=item["name"], min_ready=item.get("min-ready", 0),
            max_ready_age=item.get("max-ready-age", 0),
            max_servers=item.get("max-servers", math.inf))
        if label.min_ready > label.max_servers:
            report.warnings.append(doc.message(
                ["labels", i, "min-ready"],
                f"min-ready {label.min_ready} is more than the label's max-servers "
                f"{label.max_servers}: at most {label.max_servers} ready nodes are kept"))

    config.diskimages, fatal = _resolve_diskimages(path, data.get("diskimages") or [])
    fatal += _check_validation_labels(doc, data.get("diskimages") or [], config.labels)
    if fatal:
        if not strict:
            raise ConfigError("\n".join(fatal))
        report.errors.extend(fatal)

    for item in data.get("tenant-resource-limits") or []:
        limits: dict[str, float] = {}
        for key, value in item.items():
            if key == "tenant-name":
                continue
            name = {"max-servers": "instances", "max-cores": "cores", "max-ram": "ram",
                    "max-volumes": "volumes", "max-volume-gb": "volume-gb"}.get(key, key)
            limits[name] = value
        config.tenant_resource_limits[item["tenant-name"]] = limits

    first_seen: dict[str, str] = {}
    for i, item in enumerate(data.get("providers") or []):
        name = item.get("name") if isinstance(item, Mapping) else None
        name = name if isinstance(name, str) and name else None
        provider: ProviderConfig | None = None
        if name is not None and name in first_seen:
            # Upstream's loader lets the last one win silently; keeping
            # the first keeps a running provider from being replaced.
            problems = _provider_structure(doc, i, item, strict, report)[1] + [doc.message(
                ["providers", i], f"provider {name!r} is defined more than once (first at "
                                  f"{first_seen[name]}); rename one")]
        else:
            provider, problems = _load_provider(doc, i, item, config, strict, report)
        if name is not None:
            first_seen.setdefault(name, doc.where(["providers", i]))
        if provider is None:
            report.errors.extend(problems)
            config.left_out.setdefault(name or f"providers[{i}]", []).extend(problems)
            continue
        config.providers[provider.name] = provider
    if strict:
        report.warnings.extend(_zookeeper_warnings(config))
    config.problems = list(report.errors)
    config.warnings = list(report.warnings)
    return config, report


def load_config(path: str, secure_path: str | None = None) -> Config:
    """The daemons' (and the CLI's) loader: as forgiving as upstream's.

    Unknown settings are logged as warnings and ignored; a provider that
    cannot be loaded is logged as an error and left out, and the others
    are loaded (``Config.left_out``).  Raises ConfigError, listing every
    problem one per line, when the file as a whole is unusable (YAML
    syntax, a wrong value outside the providers, a bad secure file).
    """
    config, _ = _build(path, secure_path, strict=False)
    assert config is not None
    for warning in config.warnings:
        log.warning("%s", warning)
    for name, problems in config.left_out.items():
        log.error("Provider %s is left out until this is fixed (the other providers "
                  "keep serving):\n%s", name, "\n".join(problems))
    return config


def validate_config(path: str, secure_path: str | None = None) -> ConfigReport:
    """Everything ``nodepool config-validate`` reports: errors (unknown
    settings included, as upstream's validator) and warnings (what the
    file cannot show to be wrong but the daemons will refuse or ignore)."""
    try:
        _, report = _build(path, secure_path, strict=True)
    except ConfigError as e:
        return ConfigReport(errors=str(e).splitlines())
    return report


def check_config(path: str, secure_path: str | None = None) -> list[str]:
    """All errors in a configuration file, one message each (empty when
    ``config-validate`` accepts it)."""
    return validate_config(path, secure_path).errors


def _zookeeper_warnings(config: Config) -> list[str]:
    try:
        check_zookeeper(config, check_files=False)
    except ConfigError as e:
        return [f"{e} (the launcher, the builder and the nodepool commands that "
                "read ZooKeeper refuse to start without it)"]
    return []


def check_zookeeper(config: Config, check_files: bool = True) -> None:
    """Raise ConfigError, in one line naming the missing setting, unless
    the configuration can make the mandatory TLS ZooKeeper connection.

    Upstream's validator accepts a file without them and its launcher then
    dies on the first ZooKeeper call; here every process that connects
    calls this first.
    """
    where = config.path or "the configuration"
    if config.secure_path:
        where += f" (or the secure file {config.secure_path})"
    if not config.zookeeper_servers:
        raise ConfigError(f"{where}: zookeeper-servers is missing: list the ZooKeeper "
                          "servers to connect to (host, port, chroot)")
    files = {"ca": config.zookeeper_tls_ca, "cert": config.zookeeper_tls_cert,
             "key": config.zookeeper_tls_key}
    if not all(files.values()):
        raise ConfigError(f"{where}: zookeeper-tls is missing: a TLS ZooKeeper connection "
                          "is required; set zookeeper-tls with ca, cert and key")
    if not check_files:
        return
    for key, filename in files.items():
        try:
            with open(str(filename), "rb"):
                pass
        except OSError as e:
            raise ConfigError(f"{where}: zookeeper-tls {key} {filename} cannot be read: "
                              f"{e.strerror}") from e


def zookeeper_client(config: Config) -> Any:
    """An unconnected ZooKeeper client for the configured servers and TLS
    files (the daemons and the CLI all connect this way).  ConfigError
    when a setting it needs is missing."""
    from nodepool.zk import ZooKeeperClient, build_hosts
    check_zookeeper(config)
    return ZooKeeperClient(
        build_hosts(config.zookeeper_servers), config.zookeeper_tls_cert,
        config.zookeeper_tls_key, config.zookeeper_tls_ca,
        timeout=config.zookeeper_timeout)


def connect_until_stopped(client: Any, running: Any, pause: Any) -> bool:
    """Connect, retrying while ``running()``; ``pause(seconds)`` waits
    between tries.  True once connected."""
    from nodepool.zk import ZKConnectionError
    while running():
        try:
            client.connect(timeout=10)
            return True
        except ZKConnectionError as e:
            log.error("%s; retrying", e)
            pause(1)
    return False


def keep_broken_providers(new: Config, previous: Config) -> list[str]:
    """A provider that ran under ``previous`` but is left out of ``new``
    (its section became broken) keeps its previous definition, so one
    mistake in one provider's section never stops it serving (OPERATORS.md
    row 21).  Returns the names kept."""
    kept = []
    for name in new.left_out:
        old = previous.providers.get(name)
        if old is None or name in new.providers:
            continue
        new.providers[name] = old
        for pool in old.pools.values():
            for label_name in pool.labels:
                label = new.labels.get(label_name)
                if label is not None:
                    label.pools.append(pool)
        kept.append(name)
        log.error("Provider %s keeps its previous configuration until its section in %s "
                  "is fixed", name, new.path)
    return kept


class ConfigFile:
    """A daemon's configuration file and secure file, re-read when either
    changes.

    A file counts as changed when its modification time (in ns) or inode
    differs from when it was last read (an edit in place, or a new file
    renamed over it).  ``force_reload()`` (SIGHUP) makes the next check
    re-read both even if neither looks changed, e.g. after a tool that
    keeps modification times rewrote them.  ``check`` may add
    daemon-specific requirements (raising ConfigError).  A file that
    becomes invalid is reported once and the running configuration stays
    in force.
    """

    def __init__(self, path: str, secure_path: str | None = None,
                 check: Any = None) -> None:
        self.path = path
        self.secure_path = secure_path
        self.check = check
        # What the files looked like when last read (None: never read).
        self._read_signature: tuple[Any, ...] | None = None
        # Forced reloads asked for and seen: counters rather than a flag,
        # so a SIGHUP that lands while a check runs is never lost.
        self._forces_asked = 0
        self._forces_seen = 0
        # The configuration in force (the last one returned).
        self.current: Config | None = None

    @property
    def files(self) -> str:
        """The files, for messages."""
        return f"{self.path} and {self.secure_path}" if self.secure_path else self.path

    def _signature(self) -> tuple[Any, ...]:
        def stat(path: str | None) -> tuple[int, int] | None:
            if path is None:
                return None
            try:
                st = os.stat(path)
            except OSError:
                return None
            return (st.st_mtime_ns, st.st_ino)
        return (stat(self.path), stat(self.secure_path))

    def load(self) -> Config:
        """Read and validate now (ConfigError when unusable)."""
        from nodepool.driver import registry as driver_registry
        # Taken before reading: a change while reading is seen next time.
        signature = self._signature()
        driver_registry.reset_all()
        config = load_config(self.path, self.secure_path)
        if self.check is not None:
            self.check(config)
        self._read_signature = signature
        if self.current is not None:
            keep_broken_providers(config, self.current)
        self.current = config
        return config

    def force_reload(self) -> None:
        """Re-read the files on the next check even if they look unchanged."""
        self._forces_asked += 1

    def reload_if_changed(self) -> Config | None:
        """The new configuration if a file changed (or a reload was forced)
        and the result is valid."""
        asked = self._forces_asked
        forced = asked != self._forces_seen
        self._forces_seen = asked
        signature = self._signature()
        if not forced and signature == self._read_signature:
            return None
        try:
            config = self.load()
        except ConfigError as e:
            self._read_signature = signature
            log.error("Configuration %s is invalid; keeping the previous one until it is "
                      "fixed (it is re-read when a file changes, or on SIGHUP):\n%s",
                      self.files, e)
            return None
        except Exception:
            self._read_signature = signature
            log.exception("Configuration %s could not be loaded; keeping the previous one",
                          self.files)
            return None
        log.info("Configuration %s reloaded%s", self.files, " (forced)" if forced else "")
        return config
