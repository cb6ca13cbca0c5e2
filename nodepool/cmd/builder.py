"""``nodepool-builder``: the daemon shell around :class:`NodePoolBuilder`."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from nodepool.cmd import DaemonApp
from nodepool.exceptions import ConfigError, NodepoolError

log = logging.getLogger("nodepool.builder")


class NodepoolBuilderApp(DaemonApp):
    app_name = "nodepool-builder"
    description = "Build diskimages, upload them to providers and clean up old ones"

    def __init__(self) -> None:
        super().__init__()
        self.builder: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def parser(self) -> argparse.ArgumentParser:
        parser = super().parser()
        parser.add_argument("--build-workers", dest="build_workers", type=int, default=1,
                            help="number of builds run at once (default 1)")
        parser.add_argument("--upload-workers", dest="upload_workers", type=int,
                            default=4, help="number of uploads run at once (default 4)")
        return parser

    def run(self) -> int:
        from nodepool.builder import NodePoolBuilder

        args = self.args
        assert args is not None
        if args.build_workers < 1 or args.upload_workers < 0:
            log.error("--build-workers must be at least 1 and --upload-workers at least 0")
            return 2
        with self._lock:
            # A stop signal either came first or finds the builder to stop.
            if self._stop_event.is_set():
                return 0
            self.builder = NodePoolBuilder(
                args.config, args.secure, num_builders=args.build_workers,
                num_uploaders=args.upload_workers)
        try:
            self.builder.start()
        except (ConfigError, NodepoolError) as e:
            log.error("nodepool-builder cannot start:\n%s", e)
            return 1
        if self._stop_event.is_set():
            # The stop signal came while it was starting.
            self.builder.stop()
        # Never an untimed wait here: Python runs signal handlers on the main
        # thread only, and when the kernel hands SIGTERM to another thread, a
        # main thread blocked on a lock without a timeout never runs it (the
        # daemon then ignored SIGTERM, now and then, in CI).
        while not self._done.wait(1.0):
            pass
        return 0

    def reload(self) -> None:
        log.info("SIGHUP: re-reading %s", self.config_files())
        if self.builder is not None:
            self.builder.request_reload()

    def stop(self) -> None:
        with self._lock:
            builder = self.builder
        try:
            if builder is not None:
                builder.stop()
        finally:
            self._done.set()


def main(argv: list[str] | None = None) -> int:
    return NodepoolBuilderApp().main(argv)


if __name__ == "__main__":
    sys.exit(main())
