"""``nodepool-launcher``: the daemon shell around :class:`NodePool`."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from nodepool.cmd import DaemonApp
from nodepool.exceptions import ConfigError

log = logging.getLogger("nodepool.launcher")


class NodePoolLauncherApp(DaemonApp):
    app_name = "nodepool-launcher"
    description = "Fulfil Zuul's node requests from clouds and static hosts"

    def __init__(self) -> None:
        super().__init__()
        self.pool: Any = None
        self.webapp: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    @property
    def pid_name(self) -> str:
        # Upstream's default pidfile name for the launcher.
        return "nodepool"

    def parser(self) -> argparse.ArgumentParser:
        parser = super().parser()
        parser.add_argument("--no-webapp", action="store_true",
                            help="do not start the web API")
        return parser

    def run(self) -> int:
        from nodepool.launcher import NodePool

        args = self.args
        assert args is not None
        with self._lock:
            # A stop signal either came first or finds the pool to stop.
            if self._stop_event.is_set():
                return 0
            self.pool = NodePool(args.config, args.secure)
        try:
            config = self.pool.config = self.pool.load_config()
        except ConfigError as e:
            log.error("Invalid configuration:\n%s", e)
            return 1
        # Connect before serving the web API so it has ZooKeeper to read.
        self.pool.start_services()
        if self._stop_event.is_set():
            return 0
        self.pool.start()
        if not args.no_webapp:
            self._start_webapp(config)
        log.info("nodepool-launcher started")
        while not self._done.wait(1.0):
            if not self.pool.is_alive() and not self._stop_event.is_set():
                log.error("The launcher's main thread ended; exiting")
                return 1
        return 0

    def _start_webapp(self, config) -> None:
        from nodepool.web.status_page import StatusPage
        from nodepool.webapp import WebApp

        try:
            self.webapp = WebApp(
                self.pool.zk, lambda: self.pool.config, lambda: self.pool.ready,
                listen_address=config.webapp["listen_address"],
                port=config.webapp["port"],
                node_cache=self.pool.node_cache,
                request_cache=self.pool.request_cache,
                status_page=StatusPage(self.pool))
            self.webapp.start()
        except Exception:
            log.exception("Could not start the web API")

    def reload(self) -> None:
        log.info("SIGHUP: re-reading %s", self.config_files())
        if self.pool is not None:
            self.pool.request_reload()

    def stop(self) -> None:
        with self._lock:
            pool = self.pool
        if self.webapp is not None:
            try:
                self.webapp.stop()
            except Exception:
                log.exception("Error stopping the web API")
        if pool is not None:
            pool.stop()
        self._done.set()


def main(argv: list[str] | None = None) -> int:
    return NodePoolLauncherApp().main(argv)


if __name__ == "__main__":
    sys.exit(main())
