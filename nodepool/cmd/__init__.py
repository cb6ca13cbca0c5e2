"""What the daemons and the CLI share: arguments, logging, pidfiles and
signals.  Process concerns live here and nowhere else."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import signal
import sys
import threading
import traceback
from typing import Any

import yaml

from nodepool.config import DEFAULT_CONFIG
from nodepool.version import version_string

stack_log = logging.getLogger("nodepool.stack_dump")

DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def stack_dump_handler(signum: int, frame: Any) -> None:
    """SIGUSR2: log every thread's stack (by thread name) and carry on."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = ["Thread stack dump:"]
    for ident, stack in sys._current_frames().items():
        lines.append(f"\nThread: {names.get(ident, '?')} ({ident})")
        lines.extend(line.rstrip("\n") for line in traceback.format_stack(stack))
    stack_log.warning("\n".join(lines))


def setup_logging(log_config: str | None, debug: bool = False,
                  logfile: str | None = None) -> None:
    """Configure logging from a dictConfig YAML file, or a default.

    The default writes to stderr (or ``logfile``) at INFO (DEBUG with
    ``debug``), so the stack dump and errors are always visible.
    """
    if log_config:
        try:
            with open(log_config) as f:
                conf = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise SystemExit(f"cannot read logging config {log_config}: {e}") from e
        if not isinstance(conf, dict):
            raise SystemExit(f"logging config {log_config} must be a dictConfig mapping")
        conf.setdefault("version", 1)
        logging.config.dictConfig(conf)
        return
    level = logging.DEBUG if debug else logging.INFO
    handlers: list[logging.Handler]
    if logfile:
        os.makedirs(os.path.dirname(logfile) or ".", exist_ok=True)
        handlers = [logging.FileHandler(logfile)]
    else:
        handlers = [logging.StreamHandler()]
    logging.basicConfig(level=level, format=DEFAULT_LOG_FORMAT, handlers=handlers,
                        force=True)
    # kazoo logs every connection detail at INFO; keep it to warnings
    # unless debugging.
    if not debug:
        logging.getLogger("kazoo").setLevel(logging.WARNING)
        logging.getLogger("paramiko").setLevel(logging.WARNING)


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-c", dest="config", default=DEFAULT_CONFIG,
                        help=f"path to the config file (default {DEFAULT_CONFIG})")
    parser.add_argument("-s", dest="secure",
                        help="path to a secure file holding credentials")
    parser.add_argument("-l", dest="logconfig", help="path to a logging config (YAML)")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {version_string}")
    return parser


class PidFile:
    """A pidfile that refuses a second live process and replaces a stale one."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> PidFile:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            with open(self.path) as f:
                old = int(f.read().strip() or 0)
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid() and _alive(old):
            raise SystemExit(f"another process (pid {old}) holds {self.path}; "
                             "stop it first")
        with open(self.path, "w") as f:
            f.write(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemonize() -> None:
    """Classic double fork: detach from the terminal and session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


class DaemonApp:
    """Base of ``nodepool-launcher`` and ``nodepool-builder``.

    Subclasses implement ``run()`` (start work, then wait) and ``stop()``
    (orderly shutdown, called from the signal handler thread).
    """

    app_name = "nodepool"
    description = ""

    def __init__(self) -> None:
        self.args: argparse.Namespace | None = None
        self._stop_event = threading.Event()

    def parser(self) -> argparse.ArgumentParser:
        parser = base_parser(self.app_name, self.description)
        parser.add_argument("-p", dest="pidfile",
                            default=f"/var/run/nodepool/{self.pid_name}.pid",
                            help="path to the pid file")
        parser.add_argument("-f", dest="nodaemon", action="store_true",
                            help="run in the foreground")
        parser.add_argument("-d", dest="debug", action="store_true",
                            help="run in the foreground with debug logging")
        return parser

    @property
    def pid_name(self) -> str:
        return self.app_name

    def parse_args(self, argv: list[str] | None = None) -> argparse.Namespace:
        self.args = self.parser().parse_args(argv)
        return self.args

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        logging.getLogger(f"nodepool.{self.app_name}").info(
            "Received signal %s; stopping", signal.Signals(signum).name)
        # Stopping joins threads; never do that inside the signal handler.
        threading.Thread(target=self._stop_once, name="SignalStop", daemon=True).start()

    def _stop_once(self) -> None:
        if self._stop_event.is_set():
            return
        self._stop_event.set()
        try:
            self.stop()
        except Exception:
            logging.getLogger(f"nodepool.{self.app_name}").exception("Error while stopping")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGUSR2, stack_dump_handler)
        if hasattr(self, "reload"):
            signal.signal(signal.SIGHUP, lambda s, f: threading.Thread(
                target=self.reload, name="SignalReload", daemon=True).start())

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parse_args(argv)
        foreground = args.nodaemon or args.debug
        logfile = None if foreground else f"/var/log/nodepool/{self.pid_name}.log"
        if not foreground:
            daemonize()
        setup_logging(args.logconfig, debug=args.debug, logfile=logfile)
        with PidFile(args.pidfile):
            self.install_signal_handlers()
            return self.run() or 0

    def run(self) -> int | None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
