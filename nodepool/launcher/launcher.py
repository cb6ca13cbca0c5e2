"""The launcher: config, ZooKeeper, providers and their pool workers.

``NodePool`` is the main thread of ``nodepool-launcher``.  It loads the
configuration (and reloads it when the file changes), keeps one live
provider per configured provider and one ``PoolWorker`` per pool, keeps
``min-ready`` nodes, and runs the delete, cleanup, stats and image check
workers.  A
provider that fails to start is reported and retried; the others run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from nodepool import config as nodepool_config
from nodepool.driver import registry
from nodepool.driver.registrar import Registrar
from nodepool.launcher.cleanup import CleanupWorker
from nodepool.launcher.deleter import DeletedNodeWorker
from nodepool.launcher.image_validator import ImageValidator
from nodepool.launcher.label_caps import LabelCaps
from nodepool.launcher.local_stats import LocalStatsWorker
from nodepool.launcher.min_ready import MinReady
from nodepool.launcher.pool_worker import PoolWorker
from nodepool.launcher.resume import LostRequests
from nodepool.launcher.stats_worker import StatsWorker
from nodepool.launcher.worker import LauncherWorker
from nodepool.zk import ZooKeeper, ZooKeeperClient
from nodepool.zk import client as zkclient
from nodepool.zk.cache import (
    ImageCache,
    NodeCache,
    PoolComponentCache,
    RequestCache,
    RequestLockCache,
)
from nodepool.zk.components import (
    RUNNING,
    ComponentRegistry,
    LauncherComponent,
)

log = logging.getLogger("nodepool.NodePool")



class NodePool(threading.Thread):
    """The launcher's main loop."""

    def __init__(self, config_path: str, secure_path: str | None = None, *,
                 watermark_sleep: float = 1.0, cleanup_interval: float = 60.0,
                 delete_interval: float = 5.0, hostname: str | None = None,
                 stop_grace: float = 10.0, orphan_grace: float = 600.0) -> None:
        super().__init__(name="NodePool", daemon=True)
        self.config_path = config_path
        self.secure_path = secure_path
        self.watermark_sleep = watermark_sleep
        self.cleanup_interval = cleanup_interval
        self.delete_interval = delete_interval
        self.stop_grace = stop_grace
        self.orphan_grace = orphan_grace
        self.hostname = hostname or socket.gethostname()
        self.config: Any = None
        # Without ZooKeeper settings the launcher can do nothing: refuse
        # such a file at start (and on reload) with a one-line reason.
        self.config_file = nodepool_config.ConfigFile(
            config_path, secure_path, check=nodepool_config.check_zookeeper)
        self.zk_client: ZooKeeperClient | None = None
        self.zk: Any = None
        self.node_cache: Any = None
        # Labels' max-servers across all providers (set on connecting).
        self.label_caps: LabelCaps | None = None
        self.request_cache: Any = None
        self.image_cache: Any = None
        self.component_cache: Any = None
        self.request_lock_cache: Any = None
        self.lost_requests = LostRequests(self)
        self.providers: dict[str, Any] = {}
        # One per provider name whose provider registers endpoints (static
        # hosts); outlives the provider objects a config reload replaces.
        self.registrars: dict[str, Registrar] = {}
        self._provider_configs: dict[str, Any] = {}
        # Replaced providers finishing their launches in flight.
        self._retiring: list[Any] = []
        self.pool_workers: dict[str, PoolWorker] = {}
        self.component: LauncherComponent | None = None
        self._running = True
        self._wake = threading.Event()
        self.ready = False
        # Bumped when pool components change (pools came, went, paused):
        # pool workers then reconsider requests they left to others.
        self.components_generation = 0
        self._node_generations: dict[str | None, int] = {}
        self._label_generations: dict[str, int] = {}
        # Monotonic time at which the latest completed main pass (config
        # reload, providers, min-ready) began: proof it has looked since.
        self.last_pass_started = float("-inf")
        self._workers: list[LauncherWorker] = []
        self.min_ready: MinReady | None = None
        self.image_validator: ImageValidator | None = None

    # Public state ----------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def request_reload(self) -> None:
        """Re-read the configuration and secure files now, even if their
        modification times did not change (SIGHUP)."""
        self.config_file.force_reload()
        self._wake.set()

    def stop(self, grace: float | None = None) -> None:
        """Orderly stop: no new requests are taken; requests in progress
        get up to ``grace`` seconds to finish (launches complete, requests
        fulfilled); whatever is left is abandoned and its locks released
        with the session, so another launcher's lost-request cleanup picks
        it up."""
        log.info("Stopping launcher")
        self._running = False
        self._wake.set()
        grace = self.stop_grace if grace is None else grace
        for worker in list(self.pool_workers.values()):
            worker.stop(grace)
        for worker in list(self.pool_workers.values()):
            worker.join(grace + 10)
        for helper in self._workers:
            helper.stop()
        for helper in self._workers:
            helper.join(10)
        for registrar in self.registrars.values():
            registrar.stop()
        for registrar in self.registrars.values():
            registrar.join(10)
        for provider in list(self.providers.values()) + self._retiring:
            try:
                provider.stop()
            except Exception:
                log.exception("Error stopping provider")
        # Let cancelled launches record their outcome while we still have
        # a session (bounded: a cloud call may hang).
        joiners = [threading.Thread(target=p.join, daemon=True)
                   for p in self.providers.values()]
        for t in joiners:
            t.start()
        for t in joiners:
            t.join(10)
        for cache in self._caches:
            cache.stop()
        if self.component is not None:
            self.component.unregister()
        if self.zk_client is not None:
            self.zk_client.disconnect()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(10)

    # Start-up --------------------------------------------------------------

    def load_config(self) -> Any:
        return self.config_file.load()

    def _connect(self) -> None:
        self.zk_client = nodepool_config.zookeeper_client(self.config)
        nodepool_config.connect_until_stopped(self.zk_client, lambda: self._running,
                                              time.sleep)
        self.zk = ZooKeeper(self.zk_client)
        self.zk_client.add_listener(self._on_connection)
        self.node_cache = NodeCache(self.zk)
        self.label_caps = LabelCaps(self.node_cache.index, lambda: self.config.labels,
                                    on_freed=self._wake_label_pools)
        self.request_cache = RequestCache(self.zk)
        self.image_cache = ImageCache(self.zk)
        self.component_cache = PoolComponentCache(self.zk)
        self.request_lock_cache = RequestLockCache(self.zk)
        self.request_lock_cache.add_listener(self.lost_requests.lock_changed)
        self.component_cache.add_listener(self._on_component_change)
        self.node_cache.add_listener(self._on_node_change)
        self.request_cache.add_listener(self._on_request_change)
        self.image_cache.add_listener(self._on_image_change)
        for cache in self._caches:
            cache.start()
        for cache in self._caches:
            while self._running and not cache.wait_synced(0.5):
                pass

    @property
    def _caches(self) -> list[Any]:
        return [c for c in (self.node_cache, self.request_cache, self.image_cache,
                            self.component_cache, self.request_lock_cache)
                if c is not None]

    def start_services(self) -> None:
        """Load config, connect, and start the helper workers (not the
        main loop)."""
        if self.config is None:
            self.config = self.load_config()
        self._connect()
        if not self._running:
            return
        self.component = LauncherComponent(self.hostname)
        self.component.register(self.zk)
        self.component.update(state=RUNNING)
        self.min_ready = MinReady(self)
        self.image_validator = ImageValidator(self)
        self._workers = [
            DeletedNodeWorker(self, self.delete_interval),
            CleanupWorker(self, self.cleanup_interval, self.orphan_grace),
            StatsWorker(self),
            LocalStatsWorker(self),
            self.lost_requests,
            self.image_validator,
        ]
        for worker in self._workers:
            worker.start()

    def run(self) -> None:
        try:
            if self.zk is None:
                self.start_services()
            if not self._running:
                return
        except Exception:
            log.exception("Launcher could not start")
            self._running = False
            return
        while self._running:
            started = time.monotonic()
            try:
                self._main_pass()
                self.ready = True
                self.last_pass_started = started
            except Exception:
                log.exception("Error in launcher main loop")
            self._wake.wait(self.watermark_sleep)
            self._wake.clear()
            # Coalesce bursts of events into one pass.
            time.sleep(0.01)

    # Events ------------------------------------------------------------------

    def _wake_pools(self, provider: str | None = None) -> None:
        """Wake the pool workers (of ``provider``, or all)."""
        for worker in list(self.pool_workers.values()):
            if provider is None or worker.provider_name == provider:
                worker.wake()

    def _wake_label_pools(self, labels: set[str]) -> None:
        """Wake the pool workers offering any of ``labels`` (room under
        a label's max-servers matters to pools of every provider)."""
        for worker in list(self.pool_workers.values()):
            try:
                offered = worker.pool.labels
            except KeyError:  # its pool or provider is being removed
                continue
            if any(label in offered for label in labels):
                worker.wake()

    def _on_image_change(self, key: Any, old: Any, new: Any) -> None:
        # An upload becoming ready (or going) changes what pools can serve.
        self._wake_pools()
        for worker in self._workers:
            worker.image_changed(key, old, new)

    def _on_component_change(self, key: str, old: Any, new: Any) -> None:
        self.components_generation += 1
        self._wake_pools()

    def _on_request_change(self, key: str, old: Any, new: Any) -> None:
        # Each pool worker keeps its own queue in order and wakes only if
        # the change concerns it.
        for worker in list(self.pool_workers.values()):
            worker.request_changed(key, new)
        for helper in self._workers:
            helper.request_changed(key, old, new)
        if (new is not None and new.requestor == MinReady.REQUESTOR) or (
                old is not None and old.requestor == MinReady.REQUESTOR):
            self._wake.set()

    def _on_node_change(self, key: str, old: Any, new: Any) -> None:
        # Only the node's provider gains or loses capacity or a ready
        # node (its pools share the cloud's quota), and only changes to
        # those matter to its pool workers (launches they wait for wake
        # them on their own).
        node = new if new is not None else old
        provider = node.provider if node is not None else None
        generation = self.node_cache.index.generation(provider)
        if generation != self._node_generations.get(provider):
            self._node_generations[provider] = generation
            self._wake_pools(provider)
        if old is not None:
            # A node of a capped label gone: pools of any provider may
            # be waiting for that label.
            self._wake_for_freed_labels(old.type)
        for worker in self._workers:
            worker.node_changed(key, old, new)
        # Ready counts changed: min-ready may need a top-up.
        if self.min_ready is not None and self.min_ready.concerns(node) and (
                old is None or new is None or old.state != new.state
                or old.allocated_to != new.allocated_to):
            self._wake.set()

    def _wake_for_freed_labels(self, names: list[Any]) -> None:
        """Wake the pools offering any capped label among ``names`` whose
        records went away since last asked (the index's count of that)."""
        labels = self.config.labels
        freed = set()
        for name in names:
            label = labels.get(name) if isinstance(name, str) else None
            if label is None or label.max_servers == math.inf:
                continue
            generation = self.node_cache.index.label_generation(name)
            if generation != self._label_generations.get(name):
                self._label_generations[name] = generation
                freed.add(name)
        if freed:
            self._wake_label_pools(freed)

    def _on_connection(self, event: str) -> None:
        if event == zkclient.LOST:
            log.warning("ZooKeeper session lost: abandoning in-flight requests")
            for worker in list(self.pool_workers.values()):
                worker.session_lost()
        elif event == zkclient.CONNECTED:
            for helper in self._workers:
                helper.reconnected()
            self._wake_pools()
            self._wake.set()

    # Main pass -------------------------------------------------------------

    def _main_pass(self) -> None:
        self._reload_config_if_changed()
        if self.zk_client is None or not self.zk_client.connected:
            return
        self._sync_providers()
        if self._sync_pool_workers():
            self.lost_requests.check_all()
        self.lost_requests.enable()
        if self.min_ready is not None:
            self.min_ready.run()

    def _reload_config_if_changed(self) -> None:
        config = self.config_file.reload_if_changed()
        if config is not None:
            self.config = config
            self._wake_image_validator()

    def _sync_providers(self) -> None:
        """Start new providers, replace changed ones, stop removed ones.

        A changed provider is replaced without stopping its pool workers:
        new launches go to the new provider object while the old one
        finishes its launches in flight and is then stopped.
        """
        wanted = self.config.providers
        for name in list(self.providers):
            if name not in wanted:
                self._stop_provider(name)
        for name, provider_config in wanted.items():
            current = self.providers.get(name)
            if current is not None and provider_config == self._provider_configs[name]:
                # Same config: keep it, but use the new config objects.
                current.provider = provider_config
                self._provider_configs[name] = provider_config
                continue
            try:
                driver = registry.get_driver(provider_config.driver_name)
                provider = driver.getProvider(provider_config)
                provider.start(self.zk, self.node_cache, self.image_cache)
            except Exception:
                log.exception("Provider %s could not start; will retry", name)
                continue
            if current is not None:
                log.info("Provider %s changed; replacing it", name)
                self._retiring.append(current)
            else:
                log.info("Started provider %s", name)
            self.providers[name] = provider
            self._provider_configs[name] = provider_config
            self._serve_registration(name, provider)
            # Uploads of this provider may await a check only it can run.
            self._wake_image_validator()
        for old in list(self._retiring):
            if old.launches_in_flight() == 0:
                self._retiring.remove(old)
                try:
                    old.stop()
                except Exception:
                    log.exception("Error stopping replaced provider")

    def _wake_image_validator(self) -> None:
        if self.image_validator is not None:
            self.image_validator.wake()

    def _serve_registration(self, name: str, provider: Any) -> None:
        """Hand a (new) provider to its registrar, starting or stopping
        the registrar as the provider does or does not register endpoints."""
        registrar = self.registrars.get(name)
        if not provider.registers_endpoints:
            if registrar is not None:
                self._stop_registrar(name)
            return
        if registrar is None:
            registrar = Registrar(name, self.zk, self.node_cache, identifier=self.hostname)
            registrar.serve(provider)
            registrar.start()
            self.registrars[name] = registrar
        else:
            registrar.serve(provider)

    def _stop_registrar(self, name: str) -> None:
        registrar = self.registrars.pop(name, None)
        if registrar is not None:
            registrar.stop()
            registrar.join(10)

    def _stop_provider(self, name: str) -> None:
        for key in [k for k, w in self.pool_workers.items() if w.provider_name == name]:
            worker = self.pool_workers.pop(key)
            worker.stop()
            worker.join(10)
        self._stop_registrar(name)
        provider = self.providers.pop(name)
        self._provider_configs.pop(name, None)
        try:
            provider.stop()
        except Exception:
            log.exception("Error stopping provider %s", name)
        log.info("Stopped provider %s", name)

    def _sync_pool_workers(self) -> bool:
        """Start, restart and stop pool workers; True if any started."""
        started = False
        wanted = {}
        for name, provider_config in self.config.providers.items():
            if name not in self.providers:
                continue
            for pool_name in provider_config.pools:
                wanted[f"{name}-{pool_name}"] = (name, pool_name)
        for key in list(self.pool_workers):
            worker = self.pool_workers[key]
            if key not in wanted or not worker.is_alive():
                self.pool_workers.pop(key)
                worker.stop()
                if worker.is_alive():
                    worker.join(10)
        for key, (provider_name, pool_name) in wanted.items():
            if key not in self.pool_workers:
                worker = PoolWorker(self, provider_name, pool_name)
                # Registered before it serves anything, so every pool of
                # this launcher is visible to the others' routing at once.
                worker.register()
                self.pool_workers[key] = worker
                worker.start()
                worker.wake()
                started = True
        return started

    # Shared helpers for pool workers ----------------------------------------

    def pool_components(self, fresh: bool = False) -> list[Any]:
        """Registered pool components (from the watch-driven cache;
        ``fresh`` reads ZooKeeper now, for decisions such as failing a
        request)."""
        if fresh or self.component_cache is None or not self.component_cache.synced:
            return ComponentRegistry(self.zk).all("pool")
        return self.component_cache.items()

    def pool_peers(self, worker: PoolWorker) -> list[Any]:
        """The other launchers' pool components serving ``worker``'s
        provider pool."""
        return [p for p in self.pool_components()
                if p.provider_name == worker.provider_name and p.name == worker.pool_name
                and p.id != worker.id]

    @contextlib.contextmanager
    def pool_coordination(self, worker: PoolWorker, peers: list[Any]) -> Iterator[bool]:
        """Serialise capacity decisions with other launchers serving the
        same pool, so two launchers never both fill the last slot.

        Only taken when another launcher registered the same provider
        pool (``peers``, from :meth:`pool_peers`).  After the lock is
        ours, the node cache is brought up to date (a barrier) so the other
        launcher's new nodes are counted.
        """
        if not peers:
            yield False
            return
        lock = self.zk.pool_coordination_lock(worker.provider_name, worker.pool_name,
                                              worker.id)
        if not lock.acquire(timeout=30):
            yield False
            return
        try:
            self.node_cache.barrier(10)
            yield True
        finally:
            try:
                lock.release()
            except Exception:
                log.exception("Could not release pool coordination lock")
