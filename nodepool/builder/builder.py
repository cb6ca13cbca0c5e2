"""NodePoolBuilder: the builder's configuration, ZooKeeper session,
providers and worker threads.

The builder keeps one ZooKeeper session for all its threads, a persistent
identity (``<images-dir>/builder_id.txt``) so that a restarted builder
recognises its own builds, and one live provider per configured provider
that takes image uploads.  Workers are woken by ZooKeeper changes to the
image tree (a build became ready, an upload was deleted, someone asked for
a build or lifted a pause) and by each other; their intervals are only a
safety net and the clock for ``rebuild-age``.  The configuration file is
re-read, without a restart, when it or the secure file changes or on SIGHUP.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from nodepool import config as nodepool_config
from nodepool.builder.build_worker import BuildWorker
from nodepool.builder.cleanup import CleanupWorker
from nodepool.builder.status import BuilderStatus
from nodepool.builder.upload_worker import UploadWorker
from nodepool.builder.webapp import BuilderWebApp
from nodepool.driver import registry
from nodepool.exceptions import BuilderError, ConfigError
from nodepool.zk import ZooKeeper, ZooKeeperClient
from nodepool.zk import client as zkclient
from nodepool.zk.cache import ImageCache
from nodepool.zk.components import RUNNING, BuilderComponent

log = logging.getLogger("nodepool.builder.NodePoolBuilder")

BUILDER_ID_FILE = "builder_id.txt"
DEFAULT_MIN_FREE_SPACE = 1024 * 2**20
# How often a provider that failed to start is tried again.
PROVIDER_RETRY_INTERVAL = 60.0


def read_builder_id(images_dir: str) -> str:
    """The builder's identity, created (a uuid4) on first start.

    It lives with the images because it names who owns the files there: a
    builder restarted on the same images-dir is the same builder.
    """
    path = os.path.join(images_dir, BUILDER_ID_FILE)
    try:
        with open(path) as f:
            builder_id = f.read().strip()
        if builder_id:
            return builder_id
    except FileNotFoundError:
        pass
    builder_id = str(uuid.uuid4())
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(builder_id)
    os.replace(tmp, path)
    return builder_id


class NodePoolBuilder:
    """Builds diskimages, uploads them and cleans up after them.

    ``start()`` returns once the workers run; ``stop()`` cancels running
    builds (they are recorded as failed and their files removed), waits
    for the build and cleanup workers, and closes the session.  Uploads
    are not waited for (they can take hours); an interrupted upload's
    record and cloud image are cleaned up by any builder afterwards.
    """

    def __init__(self, config_path: str, secure_path: str | None = None, *,
                 num_builders: int = 1, num_uploaders: int = 4,
                 build_interval: float = 10.0, upload_interval: float = 10.0,
                 cleanup_interval: float = 60.0, config_check_interval: float = 1.0,
                 retry_delay: float = 60.0, upload_attempts: int = 3,
                 upload_attempt_delay: float = 5.0,
                 min_free_space: int = DEFAULT_MIN_FREE_SPACE,
                 hostname: str | None = None) -> None:
        self.config_path = config_path
        self.secure_path = secure_path
        self.num_builders = num_builders
        self.num_uploaders = num_uploaders
        self.build_interval = build_interval
        self.upload_interval = upload_interval
        self.cleanup_interval = cleanup_interval
        self.config_check_interval = config_check_interval
        # After a failed build or upload, wait this long before trying
        # that image (or build and provider) again.
        self.retry_delay = retry_delay
        self.upload_attempts = upload_attempts
        self.upload_attempt_delay = upload_attempt_delay
        self.min_free_space = min_free_space
        self.hostname = hostname or socket.gethostname()
        self.config: Any = None
        self.config_file = nodepool_config.ConfigFile(config_path, secure_path,
                                                      check=self._check_config)
        self.builder_id: str | None = None
        self.zk_client: ZooKeeperClient | None = None
        self.zk: ZooKeeper | None = None
        self.image_cache: ImageCache | None = None
        self.component: BuilderComponent | None = None
        # provider name -> (ProviderConfig, live Provider)
        self.providers: dict[str, tuple[Any, Any]] = {}
        # (provider, image) -> the format that provider takes.
        self.upload_formats: dict[tuple[str, str], str | None] = {}
        self.build_workers: list[BuildWorker] = []
        self.upload_workers: list[UploadWorker] = []
        self.cleanup_worker: CleanupWorker | None = None
        self.status = BuilderStatus()
        self.build_failures: dict[str, float] = {}
        self.upload_failures: dict[tuple[str, str, str], float] = {}
        # Cancel events of running builds (set on stop or session loss).
        self.running_builds: set[threading.Event] = set()
        self._running = False
        self._stop_event = threading.Event()
        self._config_thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.webapp: BuilderWebApp | None = None

    # Configuration ----------------------------------------------------------

    def load_config(self) -> Any:
        """Read and check the configuration (ConfigError if unusable)."""
        return self.config_file.load()

    def _check_config(self, config: Any) -> None:
        if not config.zookeeper_servers:
            raise ConfigError(f"{self.config_path}: the builder needs zookeeper-servers")
        if not config.images_dir:
            raise ConfigError(f"{self.config_path}: the builder needs images-dir, the "
                              "directory where it keeps the images it builds")

    def _reload_if_changed(self) -> None:
        config = self.config_file.reload_if_changed()
        if config is None:
            return
        if config.images_dir != self.config.images_dir:
            log.warning("images-dir changed from %s to %s; restart the builder to use "
                        "it", self.config.images_dir, config.images_dir)
            config.images_dir = self.config.images_dir
        self.config = config
        self._sync_providers()
        self.wake_all()

    def _sync_providers(self) -> None:
        """One live provider per configured provider that takes uploads;
        providers whose configuration changed are replaced.  Workers read
        ``providers`` without a lock, so a new dict replaces the old one."""
        zk = self.zk
        assert zk is not None, "providers start only once ZooKeeper is connected"
        wanted = {name: pc for name, pc in self.config.providers.items()
                  if pc.manage_images}
        providers = dict(self.providers)
        for name in list(providers):
            pc, provider = providers[name]
            if name in wanted and wanted[name] == pc:
                providers[name] = (wanted[name], provider)
                continue
            del providers[name]
            try:
                provider.stop()
            except Exception:
                log.exception("Error stopping provider %s", name)
            log.info("Stopped provider %s", name)
        for name, pc in wanted.items():
            if name in providers:
                continue
            try:
                provider = registry.get_driver(pc.driver_name).getProvider(pc)
                provider.start(zk)
            except Exception:
                log.exception("Provider %s could not start; uploads to it wait until it "
                              "does (tried again every %d s)", name,
                              PROVIDER_RETRY_INTERVAL)
                continue
            providers[name] = (pc, provider)
            log.info("Started provider %s", name)
        # A provider's format may come from clouds.yaml, which is slow to
        # read; look it up once per configuration.
        formats = {}
        for name, (pc, _) in providers.items():
            for image in pc.diskimage_names():
                try:
                    formats[(name, image)] = pc.image_format(image)
                except Exception:
                    log.exception("Could not tell the image format provider %s wants", name)
        self.upload_formats = formats
        self.providers = providers

    def request_reload(self) -> None:
        """Re-read the configuration and secure files on the next check
        even if they look unchanged (SIGHUP)."""
        self.config_file.force_reload()

    def upload_pairs(self) -> list[tuple[str, str]]:
        """(provider, image) for every upload this builder is responsible
        for, in a stable order."""
        return [(name, image) for name, (pc, _) in sorted(self.providers.items())
                for image in sorted(pc.diskimage_names())]

    # Waking workers ------------------------------------------------------------

    def wake_builds(self) -> None:
        for worker in self.build_workers:
            worker.wake()

    def wake_uploads(self) -> None:
        for worker in self.upload_workers:
            worker.wake()

    def wake_cleanup(self) -> None:
        if self.cleanup_worker is not None:
            self.cleanup_worker.wake()

    def wake_all(self) -> None:
        self.wake_builds()
        self.wake_uploads()
        self.wake_cleanup()

    def _on_image_change(self, key: Any, old: Any, new: Any) -> None:
        # A build or upload appeared, changed or went: every kind of worker
        # may have something to do now (upload a ready build, rebuild after
        # a deletion, delete what an operator marked).
        self.wake_all()

    def _on_image_flag(self, image: str, flag: str) -> None:
        self.wake_builds()
        self.wake_cleanup()

    def _on_connection(self, event: str) -> None:
        if event == zkclient.LOST:
            if self.running_builds:
                log.warning("ZooKeeper session lost: cancelling %d running build(s), "
                            "whose locks are gone", len(self.running_builds))
            for cancel in list(self.running_builds):
                cancel.set()
        elif event == zkclient.CONNECTED:
            self.wake_all()

    def wait_connected(self, timeout: float) -> bool:
        """Wait for the ZooKeeper connection (e.g. after a build finished
        during an outage); False if it did not come back in time."""
        deadline = time.monotonic() + timeout
        while self.zk_client is not None and not self.zk_client.connected:
            if time.monotonic() > deadline or self._stop_event.is_set():
                return False
            time.sleep(0.2)
        return self.zk_client is not None

    # Lifecycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Load the configuration, connect and start the workers.

        Raises ConfigError or BuilderError when the builder cannot run.
        """
        with self._start_lock:
            if self._running:
                raise BuilderError("the builder is already running")
            self.config = self.load_config()
            os.makedirs(self.config.images_dir, exist_ok=True)
            self.builder_id = read_builder_id(self.config.images_dir)
            self._running = True
            self._stop_event.clear()
            # Before connecting: /health says 503 while ZooKeeper is out
            # of reach, and /metrics shows why the builder waits.
            self._start_webapp()
            self._connect()
            if not self._running:
                return
            assert self.zk is not None
            self.component = BuilderComponent(self.hostname)
            self.component.register(self.zk)
            self.component.update(state=RUNNING)
            self._sync_providers()
            self.build_workers = [BuildWorker(self, i, self.build_interval)
                                  for i in range(self.num_builders)]
            self.upload_workers = [UploadWorker(self, i, self.upload_interval)
                                   for i in range(self.num_uploaders)]
            workers: list[Any] = self.build_workers + self.upload_workers
            if self.cleanup_interval > 0:
                self.cleanup_worker = CleanupWorker(self, 0, self.cleanup_interval)
                workers.append(self.cleanup_worker)
            for worker in workers:
                worker.start()
            self._config_thread = threading.Thread(
                target=self._watch_config, name="NodePoolBuilder", daemon=True)
            self._config_thread.start()
            log.info("nodepool-builder %s started (builder id %s, %d build and %d upload "
                     "workers)", self.hostname, self.builder_id, self.num_builders,
                     self.num_uploaders)

    def _start_webapp(self) -> None:
        """Serve ``/metrics`` and ``/health`` if ``builder-webapp`` is
        configured (read at start; a reload does not move the port)."""
        settings = self.config.builder_webapp
        if settings is None or self.webapp is not None:
            return
        webapp = BuilderWebApp(lambda: self.zk_client is not None and self.zk_client.connected,
                               listen_address=settings["listen_address"],
                               port=settings["port"])
        try:
            webapp.start()
        except OSError as e:
            log.error("Could not serve /metrics and /health on %s:%s (%s); the builder "
                      "runs without them: free the port or change builder-webapp in %s",
                      settings["listen_address"], settings["port"], e, self.config_path)
            return
        self.webapp = webapp

    def _connect(self) -> None:
        self.zk_client = nodepool_config.zookeeper_client(self.config)
        nodepool_config.connect_until_stopped(self.zk_client, lambda: self._running,
                                              self._stop_event.wait)
        if not self._running:
            return
        self.zk = ZooKeeper(self.zk_client)
        self.zk_client.add_listener(self._on_connection)
        self.image_cache = ImageCache(self.zk)
        self.image_cache.add_listener(self._on_image_change)
        self.image_cache.add_flag_listener(self._on_image_flag)
        self.image_cache.start()
        if not self.image_cache.wait_synced(60):
            log.warning("The image cache is not synced after 60 s; carrying on")

    def _watch_config(self) -> None:
        next_provider_retry = time.monotonic() + PROVIDER_RETRY_INTERVAL
        while not self._stop_event.wait(self.config_check_interval):
            try:
                self._reload_if_changed()
                if time.monotonic() >= next_provider_retry:
                    next_provider_retry = time.monotonic() + PROVIDER_RETRY_INTERVAL
                    if set(self.providers) != {n for n, pc in self.config.providers.items()
                                               if pc.manage_images}:
                        self._sync_providers()
            except Exception:
                log.exception("Error checking the configuration")

    def stop(self) -> None:
        """Stop the workers (cancelling running builds) and disconnect."""
        # Flags first: start() may still be waiting for ZooKeeper under
        # the lock, and must see them to give up.
        was_running, self._running = self._running, False
        self._stop_event.set()
        with self._start_lock:
            if not was_running:
                return
            log.info("Stopping nodepool-builder")
            workers: list[Any] = self.build_workers + self.upload_workers
            if self.cleanup_worker is not None:
                workers.append(self.cleanup_worker)
            for worker in workers:
                worker.stop()
            for cancel in list(self.running_builds):
                cancel.set()
            # Builds record their failure while the session is still ours.
            for worker in self.build_workers:
                worker.join(60)
            if self.cleanup_worker is not None:
                self.cleanup_worker.join(60)
            for worker in self.upload_workers:
                worker.join(1)
            if self._config_thread is not None:
                self._config_thread.join(5)
            for name, (_, provider) in list(self.providers.items()):
                try:
                    provider.stop()
                except Exception:
                    log.exception("Error stopping provider %s", name)
            self.providers = {}
            if self.image_cache is not None:
                self.image_cache.stop()
            if self.component is not None:
                self.component.unregister()
            if self.zk_client is not None:
                self.zk_client.disconnect()
            if self.webapp is not None:
                self.webapp.stop()
                self.webapp = None
            log.info("nodepool-builder stopped")
