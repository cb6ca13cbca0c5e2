"""What the daemons and the CLI share: arguments, logging, pidfiles and
signals.  Process concerns live here and nowhere else.

Daemon behaviour follows upstream Nodepool's:

* ``-f``/``-d`` (the foreground, as systemd units run the daemons): no
  pidfile is taken, ``-p`` is ignored; several daemons can run on one host.
* Otherwise the daemon detaches and holds ``-p`` (default
  ``/var/run/nodepool/<app>.pid``); a pidfile left by a dead process is
  replaced.  Problems with the pidfile or the logging configuration are
  reported on the terminal before detaching.
* SIGINT, SIGTERM and SIGUSR1 stop the daemon in order; SIGUSR2 logs every
  thread's stack; SIGHUP re-reads the configuration and secure files.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

from nodepool import logconfig
from nodepool.cmd.signals import SignalRelay
from nodepool.config import DEFAULT_CONFIG
from nodepool.version import version_string

DEFAULT_LOG_FORMAT = logconfig.DEFAULT_FORMAT
PID_DIR = "/var/run/nodepool"
LOG_DIR = "/var/log/nodepool"


def logging_config(log_config: str | None, debug: bool = False,
                   logfile: str | None = None,
                   stream: str = "stderr") -> logconfig.LoggingConfig:
    """The operator's ``-l`` file, or the default: INFO (DEBUG with
    ``debug``) to ``logfile`` or ``stream``.  Raises
    LoggingConfigError."""
    if log_config:
        return logconfig.load_config(log_config)
    return logconfig.LoggingConfig(logconfig.default_config(debug, logfile, stream),
                                   source=logfile or f"<{stream}>")


def setup_logging(log_config: str | None, debug: bool = False,
                  logfile: str | None = None, stream: str = "stderr") -> None:
    """Configure logging (see :mod:`nodepool.logconfig`); exits with the
    reason when the configuration cannot be used."""
    try:
        logging_config(log_config, debug, logfile, stream).apply()
    except logconfig.LoggingConfigError as e:
        raise SystemExit(f"nodepool: {e}") from e


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-c", dest="config", default=DEFAULT_CONFIG,
                        help=f"path to the config file (default {DEFAULT_CONFIG})")
    parser.add_argument("-s", dest="secure",
                        help="path to a secure file holding credentials")
    parser.add_argument("-l", dest="logconfig",
                        help="path to a logging config: a Python logging dictConfig in "
                             "YAML (.yaml, .yml) or JSON (.json), or an INI file for "
                             "logging.config.fileConfig (any other extension)")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {version_string}")
    return parser


class PidFile:
    """A pidfile that refuses a second live process and replaces a stale
    one.  ``check()`` runs before detaching, so that the operator sees why
    the daemon cannot start; ``acquire()`` takes the file in the detached
    process (exclusively: of two daemons starting at once, one wins)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _holder(self) -> int | None:
        """The live process named in the file, if any."""
        try:
            with open(self.path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        if pid and pid != os.getpid() and _alive(pid):
            return pid
        return None

    def _refuse(self, pid: int) -> SystemExit:
        return SystemExit(f"another process (pid {pid}) holds the pidfile {self.path}: "
                          "stop it first, or give this daemon another pidfile with -p")

    def check(self) -> None:
        pid = self._holder()
        if pid is not None:
            raise self._refuse(pid)
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"cannot create {directory} for the pidfile: {e.strerror}; "
                             "create it writable by this user, pass another path with "
                             "-p, or run in the foreground with -f") from e
        if not os.access(directory, os.W_OK):
            raise SystemExit(f"cannot write the pidfile in {directory}: make it writable "
                             "by this user, pass another path with -p, or run in the "
                             "foreground with -f")

    def acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = self._holder()
                if pid is not None:
                    raise self._refuse(pid) from None
                # Left by a process that is gone.
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return
        raise SystemExit(f"could not take the pidfile {self.path}: other processes keep "
                         "creating it")

    def release(self) -> None:
        """Remove the file if it is still ours."""
        try:
            with open(self.path) as f:
                if f.read().strip() != str(os.getpid()):
                    return
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
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def _absolute(path: str | None) -> str | None:
    # A detached daemon works in /, so relative paths are resolved first.
    return os.path.abspath(os.path.expanduser(path)) if path else path


class DaemonApp:
    """Base of ``nodepool-launcher`` and ``nodepool-builder``.

    Subclasses implement ``run()`` (start work, then wait), ``stop()``
    (orderly shutdown, called from a thread started by the signal
    handler) and ``reload()`` (SIGHUP).
    """

    app_name = "nodepool"
    description = ""

    def __init__(self) -> None:
        self.args: argparse.Namespace | None = None
        self._stop_event = threading.Event()
        self._relay = SignalRelay()

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"nodepool.{self.app_name}")

    def parser(self) -> argparse.ArgumentParser:
        parser = base_parser(self.app_name, self.description)
        parser.add_argument("-p", dest="pidfile",
                            help="path to the pid file, taken when the daemon detaches "
                                 f"(default {self.default_pidfile}); not used with -f/-d")
        parser.add_argument("-f", dest="nodaemon", action="store_true",
                            help="run in the foreground")
        parser.add_argument("-d", dest="debug", action="store_true",
                            help="run in the foreground with debug logging")
        return parser

    @property
    def pid_name(self) -> str:
        """Names the default pidfile and log file (upstream's names)."""
        return self.app_name

    @property
    def default_pidfile(self) -> str:
        return f"{PID_DIR}/{self.pid_name}.pid"

    @property
    def default_logfile(self) -> str:
        return f"{LOG_DIR}/{self.pid_name}.log"

    def parse_args(self, argv: list[str] | None = None) -> argparse.Namespace:
        args = self.parser().parse_args(argv)
        for name in ("config", "secure", "logconfig", "pidfile"):
            setattr(args, name, _absolute(getattr(args, name)))
        self.args = args
        return args

    def config_files(self) -> str:
        """The configuration file and secure file, for log messages."""
        args = self.args
        if args is None:
            return "the configuration"
        return f"{args.config} and {args.secure}" if args.secure else args.config

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        self._relay.put(lambda: self.log.info("Received signal %s; stopping", name))
        self._relay.start_thread(self._stop_once, "SignalStop")

    def _stop_once(self) -> None:
        if self._stop_event.is_set():
            return
        self._stop_event.set()
        try:
            self.stop()
        except Exception:
            self.log.exception("Error while stopping")

    def _on_reload_signal(self, signum: int, frame: Any) -> None:
        self._relay.start_thread(self._reload_safely, "SignalReload")

    def _reload_safely(self) -> None:
        try:
            self.reload()
        except Exception:
            self.log.exception("Error handling SIGHUP")

    def install_signal_handlers(self) -> None:
        """Handlers that only hand work to the relay thread (see
        :mod:`nodepool.cmd.signals`)."""
        self._relay.start()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(signum, self._on_stop_signal)
        signal.signal(signal.SIGUSR2, self._relay.dump_stacks)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parse_args(argv)
        foreground = args.nodaemon or args.debug
        pidfile = None
        try:
            if foreground:
                log_config = logging_config(args.logconfig, debug=args.debug,
                                            stream="stdout")
            else:
                pidfile = PidFile(args.pidfile or self.default_pidfile)
                pidfile.check()
                if not args.logconfig:
                    self._check_default_logfile()
                log_config = logging_config(args.logconfig, logfile=self.default_logfile)
                # Applied once before detaching too: a file that names a
                # missing handler class or an unwritable log file is then
                # reported on the terminal instead of silently.
                log_config.apply()
                daemonize()
            log_config.apply()
        except logconfig.LoggingConfigError as e:
            raise SystemExit(f"{self.app_name}: {e}") from e
        self.install_signal_handlers()
        if pidfile is not None:
            try:
                pidfile.acquire()
            except SystemExit as e:
                self.log.error("%s", e)
                return 1
        elif args.pidfile:
            self.log.info("Running in the foreground: the pidfile %s is not used",
                          args.pidfile)
        try:
            return self.run() or 0
        finally:
            if pidfile is not None:
                pidfile.release()

    def _check_default_logfile(self) -> None:
        path = self.default_logfile
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a"):
                pass
        except OSError as e:
            raise SystemExit(
                f"{self.app_name}: cannot write the log file {path}: {e.strerror}; make "
                f"{os.path.dirname(path)} writable by this user, pass a logging "
                "configuration with -l, or run in the foreground with -f") from e

    def run(self) -> int | None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def reload(self) -> None:
        """SIGHUP: re-read the configuration (and secure) file even if
        their modification times did not change."""
        raise NotImplementedError
