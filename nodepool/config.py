"""Loading and validating nodepool.yaml.

The file is validated in one pass with voluptuous (each provider's part by
its driver's schema), then cross-checked (labels, diskimages, parents).
Every problem is reported with the file, the place inside it (a path such
as ``providers[0](name=fake) > pools[0] > labels[1] > min-ram``), the line
and what was expected, so an operator can fix it without reading code.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import voluptuous as v
import yaml

from nodepool.driver import ConfigValue, ProviderConfig, registry
from nodepool.exceptions import ConfigError, DriverNotFound

log = logging.getLogger("nodepool.config")

DEFAULT_CONFIG = "/etc/nodepool/nodepool.yaml"
DEFAULT_BUILD_LOG_DIR = "/var/log/nodepool/builds"
DEFAULT_WEBAPP_PORT = 8005
DEFAULT_WEBAPP_ADDRESS = "0.0.0.0"

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
}

diskimage_schema = {
    v.Required("name"): str,
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
    # The pools (ConfigPool objects) that offer this label.
    pools: list[Any] = field(default_factory=list)

    _NO_COMPARE = frozenset({"pools"})


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
    # Formats the providers using this image need (filled by providers).
    image_types: set[str] = field(default_factory=set)


class Config(ConfigValue):
    """The whole parsed configuration."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.webapp: dict[str, Any] = {
            "port": DEFAULT_WEBAPP_PORT, "listen_address": DEFAULT_WEBAPP_ADDRESS}
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
    parts = []
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


def _format_invalid(path: str, data: Any, text: str, errors: v.MultipleInvalid,
                    prefix: list[Any] | None = None) -> list[str]:
    locator = _Locator(text)
    out = []
    for err in errors.errors:
        full = (prefix or []) + list(err.path)
        line = locator.line(full)
        where = f"{path}" + (f":{line}" if line else "")
        msg = err.error_message
        if msg == "extra keys not allowed":
            msg = "unknown setting (check the spelling; see the configuration reference)"
        elif msg == "required key not provided":
            msg = "required setting is missing"
        out.append(f"{where}: {describe_path(data, full)}: {msg}")
    return out


def _validate_structure(path: str, data: dict, text: str) -> list[str]:
    errors: list[str] = []
    try:
        top_level_schema(data)
    except v.MultipleInvalid as e:
        errors.extend(_format_invalid(path, data, text, e))
    providers = data.get("providers") or []
    if not isinstance(providers, list):
        return errors
    for i, provider in enumerate(providers):
        if not isinstance(provider, dict):
            errors.append(f"{path}: providers[{i}]: expected a mapping")
            continue
        driver_name = _driver_name(provider)
        try:
            driver = registry.get_driver(driver_name)
        except DriverNotFound as e:
            errors.append(f"{path}: {describe_path(data, ['providers', i])}: {e}")
            continue
        schema = v.Schema({**provider_common, **driver.get_schema()})
        try:
            schema(provider)
        except v.MultipleInvalid as e:
            errors.extend(_format_invalid(path, data, text, e, ["providers", i]))
    return errors


def _driver_name(provider: Mapping[str, Any]) -> str:
    # Upstream forces providers named fake* onto the fake cloud driver.
    name = str(provider.get("name", ""))
    if name.startswith("fake"):
        return "fake"
    return provider.get("driver") or "openstack"


def _check_unique(path: str, items: list, what: str) -> list[str]:
    seen: set[str] = set()
    errors = []
    for item in items:
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
                username=parent.username)
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
        if image.dib_cmd and "%p" in image.dib_cmd:
            import nodepool
            image.dib_cmd = image.dib_cmd.replace(
                "%p", os.path.dirname(os.path.abspath(nodepool.__file__)))
        resolved[name] = image
        return image

    for name in by_name:
        resolve(name, ())
    return resolved, errors


def _apply_secure(config_path: str, data: dict, secure_path: str | None) -> None:
    if not secure_path:
        return
    secure, text = _read_yaml(secure_path)
    try:
        secure_schema(secure)
    except v.MultipleInvalid as e:
        raise ConfigError("\n".join(_format_invalid(secure_path, secure, text, e))) from e
    for key in ("zookeeper-servers", "zookeeper-tls"):
        if key in secure:
            data[key] = secure[key]
    images = {d.get("name"): d for d in data.get("diskimages") or []}
    for item in secure.get("diskimages") or []:
        if item["name"] not in images:
            raise ConfigError(
                f"{secure_path}: diskimage {item['name']!r} is not defined in {config_path}")
        env = dict(images[item["name"]].get("env-vars") or {})
        env.update(item.get("env-vars") or {})
        images[item["name"]]["env-vars"] = env


def load_config(path: str, secure_path: str | None = None,
                validate_only: bool = False) -> Config:
    """Read, validate and build the configuration.

    Raises ConfigError whose message lists every problem found, one per
    line, each with file, line, place and what was expected.
    """
    data, text = _read_yaml(path)
    _apply_secure(path, data, secure_path)
    errors = _validate_structure(path, data, text)
    errors += _check_unique(path, data.get("labels") or [], "label")
    errors += _check_unique(path, data.get("diskimages") or [], "diskimage")
    errors += _check_unique(path, data.get("providers") or [], "provider")
    if errors:
        raise ConfigError("\n".join(errors))

    config = Config()
    config.path = path
    webapp = data.get("webapp") or {}
    config.webapp = {"port": webapp.get("port", DEFAULT_WEBAPP_PORT),
                     "listen_address": webapp.get("listen_address", DEFAULT_WEBAPP_ADDRESS)}
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

    for item in data.get("labels") or []:
        config.labels[item["name"]] = Label(
            name=item["name"], min_ready=item.get("min-ready", 0),
            max_ready_age=item.get("max-ready-age", 0))

    config.diskimages, errors = _resolve_diskimages(path, data.get("diskimages") or [])

    for item in data.get("tenant-resource-limits") or []:
        limits: dict[str, float] = {}
        for key, value in item.items():
            if key == "tenant-name":
                continue
            name = {"max-servers": "instances", "max-cores": "cores", "max-ram": "ram",
                    "max-volumes": "volumes", "max-volume-gb": "volume-gb"}.get(key, key)
            limits[name] = value
        config.tenant_resource_limits[item["tenant-name"]] = limits

    for i, item in enumerate(data.get("providers") or []):
        driver = registry.get_driver(_driver_name(item))
        try:
            provider = driver.getProviderConfig(item)
            provider.load(config)
        except ConfigError as e:
            errors.append(f"{path}: {describe_path(data, ['providers', i])}: {e}")
            continue
        config.providers[provider.name] = provider

    errors += _cross_check(path, config)
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def _cross_check(path: str, config: Config) -> list[str]:
    errors = []
    for provider in config.providers.values():
        for pool in provider.pools.values():
            for label_name in pool.labels:
                if label_name not in config.labels:
                    errors.append(
                        f"{path}: provider {provider.name!r} pool {pool.name!r} offers label "
                        f"{label_name!r}, which is not defined under labels")
    return errors


def check_config(path: str, secure_path: str | None = None) -> list[str]:
    """All problems with a configuration file, one message each (empty
    when it is valid).  Used by ``nodepool config-validate``."""
    try:
        load_config(path, secure_path, validate_only=True)
    except ConfigError as e:
        return str(e).splitlines()
    return []


def zookeeper_client(config: Config) -> Any:
    """An unconnected ZooKeeper client for the configured servers and TLS
    files (the daemons and the CLI all connect this way)."""
    from nodepool.zk import ZooKeeperClient, build_hosts
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
