"""Logging set-up of the daemons and the CLI.

An operator's ``-l`` file is a Python logging configuration, in the forms
upstream Nodepool accepts: a ``dictConfig`` mapping in YAML or JSON (by the
file's extension: ``.yaml``, ``.yml``, ``.json``) or, with any other
extension, an INI file for ``logging.config.fileConfig``.  Without one the
daemons log INFO (DEBUG with ``-d``) to stdout in the foreground, or to
``/var/log/nodepool/<app>.log`` through a ``WatchedFileHandler`` (so
logrotate can move the file away) when they detach.

Python's logging disables every logger that exists when a configuration
is applied and that the configuration does not name, unless told
otherwise (``disable_existing_loggers``, default true).  Most of our
loggers are created when their modules are imported, i.e. before the
operator's file is applied, so a file without that key would silence the
stack dump, configuration errors and everything else.  Hence:

* a dictConfig file that does not set ``disable_existing_loggers``, and
  every INI file, is applied with it false;
* whatever the file says, every ``nodepool`` logger is enabled again
  afterwards: an explicit ``disable_existing_loggers: true`` still
  silences other libraries' loggers, never ours.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from typing import Any

# logging.config (with logging.handlers) and yaml are imported where they
# are used: ``nodepool list`` and the other short commands without ``-l``
# need neither, and logging.config alone costs them milliseconds.

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DICT_EXTENSIONS = (".yaml", ".yml", ".json")
# Libraries that report every connection detail at INFO.
CHATTY_LOGGERS = ("kazoo", "paramiko", "openstack", "keystoneauth", "requests", "urllib3")


class LoggingConfigError(Exception):
    """The logging configuration file cannot be used (message says why)."""


class MultiLineFormatter(logging.Formatter):
    """Repeats the line prefix (time, level, logger) on every line of a
    multi-line message, so that a stack dump or a list of configuration
    errors can be grepped and survives log shippers that split lines.
    Also usable from operators' files as
    ``nodepool.logconfig.MultiLineFormatter`` (upstream's name)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text:
            return text
        first, *rest = text.split("\n")
        message = record.message
        try:
            lines = [first]
            for line in rest:
                record.message = "  " + line
                lines.append(self.formatMessage(record))
        finally:
            record.message = message
        return "\n".join(lines)


def default_config(debug: bool = False, logfile: str | None = None,
                   stream: str = "stderr") -> dict[str, Any]:
    """The dictConfig used without ``-l``: our loggers at INFO (DEBUG
    with ``debug``) to ``logfile`` (rotation-safe) or to ``stream``
    (``"stdout"`` or ``"stderr"``); chatty libraries at WARNING unless
    debugging."""
    level = "DEBUG" if debug else "INFO"
    handler: dict[str, Any]
    if logfile:
        handler = {"class": "logging.handlers.WatchedFileHandler",
                   "filename": logfile, "encoding": "utf-8"}
    else:
        handler = {"class": "logging.StreamHandler", "stream": f"ext://sys.{stream}"}
    handler["formatter"] = "default"
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": MultiLineFormatter, "format": DEFAULT_FORMAT}},
        "handlers": {"default": handler},
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {},
    }
    if not debug:
        for name in CHATTY_LOGGERS:
            config["loggers"][name] = {"level": "WARNING"}
    return config


def log_warnings_to_stderr() -> None:
    """What a command line tool logs without ``-l`` or ``--debug``:
    warnings and errors on stderr in the default format, except kazoo's
    report of every failed connection attempt (the command's own error
    says it better).  Set up directly, without a dictConfig, on a logging
    module nothing has configured yet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MultiLineFormatter(DEFAULT_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)


class LoggingConfig:
    """A logging configuration, read (and checked as far as possible)
    when created, applied with ``apply()``; applying it again (e.g. in
    a detached child) replaces the handlers of the previous apply."""

    def __init__(self, dict_config: dict[str, Any] | None = None,
                 ini_path: str | None = None, source: str = "default") -> None:
        self._dict_config = dict_config
        self._ini_path = ini_path
        self.source = source

    def apply(self) -> None:
        """Configure logging; LoggingConfigError when the configuration
        names something that does not exist or cannot be opened."""
        import logging.config

        try:
            if self._ini_path is not None:
                logging.config.fileConfig(self._ini_path, disable_existing_loggers=False)
            else:
                # dictConfig changes the dict it is given; keep ours intact
                # for a second apply.
                logging.config.dictConfig(copy.deepcopy(self._dict_config or {}))
        except Exception as e:
            # dictConfig wraps the real reason ("No such file...") in a
            # generic "Unable to configure handler".
            reason = f"{e}: {e.__cause__}" if e.__cause__ is not None else str(e)
            raise LoggingConfigError(
                f"cannot apply the logging configuration {self.source}: {reason}; "
                "fix the file or start without -l") from e
        enable_nodepool_loggers()


def load_config(path: str) -> LoggingConfig:
    """Read an operator's logging file (see the module docstring for the
    formats).  LoggingConfigError when it is missing or malformed."""
    if not os.path.isfile(path):
        raise LoggingConfigError(f"the logging configuration {path} does not exist or "
                                 "is not a file")
    if os.path.splitext(path)[1].lower() not in DICT_EXTENSIONS:
        try:
            with open(path):
                pass
        except OSError as e:
            raise LoggingConfigError(
                f"cannot read the logging configuration {path}: {e.strerror}") from e
        return LoggingConfig(ini_path=path, source=path)
    import yaml

    try:
        with open(path) as f:
            conf = yaml.safe_load(f)
    except OSError as e:
        raise LoggingConfigError(
            f"cannot read the logging configuration {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise LoggingConfigError(
            f"the logging configuration {path} is not valid YAML/JSON: {e}") from e
    if not isinstance(conf, dict):
        raise LoggingConfigError(
            f"the logging configuration {path} must be a mapping in Python's "
            "logging dictConfig schema (version: 1, handlers, loggers, root...)")
    conf.setdefault("version", 1)
    conf.setdefault("disable_existing_loggers", False)
    return LoggingConfig(dict_config=conf, source=path)


def enable_nodepool_loggers() -> None:
    """Undo ``disable_existing_loggers`` for every ``nodepool`` logger:
    operators must never lose the stack dump or configuration errors
    because our loggers existed before their file was applied."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (name == "nodepool" or name.startswith("nodepool.")) and isinstance(
                logger, logging.Logger):
            logger.disabled = False
