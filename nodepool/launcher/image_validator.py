"""ImageValidator: checks new uploads before they serve requests.

A diskimage with ``validation`` has each upload written ``ready`` with
``validation: {state: pending}`` by the builder (see
:class:`nodepool.zk.models.ImageUpload`); launchers boot nodes only from
uploads in service, so the previous upload keeps serving meanwhile.  This
worker, in every launcher, looks for uploads awaiting their check in the
providers it serves, and for each one it can check (its provider runs
here and one of its pools offers a label using the diskimage):

1. takes the upload's validation lock (ZooKeeper, without waiting: one
   launcher checks an upload; the lock goes with a launcher that dies,
   and another launcher checks it again) and marks the check ``checking``;
2. waits for room in the pool (the check node counts against the pool's
   and the cloud's quota, and its label's ``max-servers``, like any
   node), then launches one node from the
   upload itself, through the provider's normal launch machinery, stored
   ``testing`` instead of ``ready`` and kept locked, so no request is
   ever handed it (and, should this launcher die, the delete worker of
   any launcher removes it: an unlocked ``testing`` node is nobody's);
3. runs the diskimage's command on it over SSH (:mod:`.ssh_check`) within
   its timeout;
4. records the verdict on the upload: ``passed`` (it serves from now on),
   or ``failed`` with the reason, which also makes the upload's state
   ``failed`` (so upstream launchers skip it too); the node is then
   marked ``deleting`` for the delete worker.

A check node that cannot be launched is a failed check (an image that
does not boot is the first thing a check is for); a launch the cloud
refused for lack of quota is tried again.  Only the newest upload awaiting
a check that is newer than the one in service is checked (the builder
removes older ones); one check per image and provider at a time.  An
upload awaiting a check whose diskimage no longer asks for one (the
setting was removed) is marked ``skipped`` and serves.

Every verdict is sent as ``nodepool.image_validation.<image>.<provider>.
<result>`` (timer and counter).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.driver.launch import ABORTED, READY
from nodepool.launcher.ssh_check import CheckAbandoned, CheckResult, run_check
from nodepool.launcher.worker import LauncherWorker
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import ImageUpload, Node

if TYPE_CHECKING:
    from nodepool.config import ImageValidation

log = logging.getLogger("nodepool.ImageValidator")

# Safety net behind the image cache's events (a validation lock released
# by a launcher that died is not an event the cache reports).
PASS_INTERVAL = 60.0
# A check waiting for room in its pool looks again whenever a node record
# goes, and at least this often (limits may change too).
CAPACITY_RETRY = 5.0
# After a check node the cloud refused for lack of quota, the next try of
# that image and provider waits at least this long (tried at the next
# pass after it).
RETRY_DELAY = 30.0
# How often a check waiting for its node's launch looks for a stop.
LAUNCH_POLL = 1.0
# How long the worker waits for running checks when the launcher stops.
STOP_GRACE = 10.0


class UploadChanged(Exception):
    """The upload being checked no longer awaits its check."""


class CheckTarget:
    """Where this launcher boots the check node of an upload: a pool of
    the upload's provider and a label of it using the diskimage."""

    def __init__(self, provider: Any, pool: Any, label: Any) -> None:
        self.provider = provider
        self.pool = pool
        self.label = label


def check_target(config: Any, providers: dict[str, Any], image: str,
                 provider_name: str) -> CheckTarget | None:
    """The pool and label this launcher would boot a check node of
    ``image`` in ``provider_name`` as, or None when it cannot (the
    provider does not run here, or none of its labels uses the image).
    The diskimage's ``validation.label`` wins where a pool offers it with
    this image; otherwise the first such label in configuration order."""
    live = providers.get(provider_name)
    provider_config = config.providers.get(provider_name)
    if live is None or provider_config is None or not live.launches_nodes:
        return None
    diskimage = config.diskimages.get(image)
    wanted = diskimage.validation.label if (
        diskimage is not None and diskimage.validation is not None) else None
    first: CheckTarget | None = None
    for pool in provider_config.pools.values():
        for label in pool.labels.values():
            if label.diskimage is None or label.diskimage.name != image:
                continue
            if label.name == wanted:
                return CheckTarget(live, pool, label)
            if first is None:
                first = CheckTarget(live, pool, label)
    return first


class ImageValidator(LauncherWorker):
    """The launcher's worker that checks uploads (see the module)."""

    def __init__(self, launcher: Any, interval: float = PASS_INTERVAL) -> None:
        super().__init__("ImageValidator")
        self.launcher = launcher
        self.interval = interval
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        # (image, provider) -> the check running here.
        self._checks: dict[tuple[str, str], UploadCheck] = {}
        # (image, provider) -> monotonic time before which no check of
        # the pair starts (its last one could not get a node).
        self._not_before: dict[tuple[str, str], float] = {}
        # Bumped whenever a node record goes (room may have been freed),
        # for checks waiting for room in their pool.
        self._room = threading.Condition()
        self._room_generation = 0
        # Monotonic time at which the latest completed pass began (proof,
        # for operators and tests, that the worker has looked since).
        self.last_pass_started = float("-inf")

    # Events (called on the caches' threads: only note them) --------------

    def image_changed(self, key: Any, old: Any, new: Any) -> None:
        if isinstance(new, ImageUpload) or isinstance(old, ImageUpload):
            self._wake.set()

    def node_changed(self, key: str, old: Any, new: Any) -> None:
        if new is None:
            with self._room:
                self._room_generation += 1
                self._room.notify_all()

    def reconnected(self) -> None:
        self._wake.set()

    def wait_for_room_change(self, timeout: float) -> None:
        """Wait until a node record goes (or ``timeout`` seconds, or the
        worker stops): a check waiting for room then looks again."""
        with self._room:
            generation = self._room_generation
            self._room.wait_for(lambda: self._room_generation != generation
                                or self._stopped.is_set(), timeout)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        with self._room:
            self._room.notify_all()

    # Main loop -----------------------------------------------------------

    def run(self) -> None:
        # A first pass at once: uploads may await a check from before
        # this launcher started.
        self._wake.set()
        while not self._stopped.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopped.is_set():
                break
            started = time.monotonic()
            try:
                if self.launcher.zk_client.connected:
                    self.check_uploads()
                    self.last_pass_started = started
            except Exception:
                log.exception("Error looking for uploads to check")
        deadline = time.monotonic() + STOP_GRACE
        for check in self.running_checks():
            check.join(max(0.0, deadline - time.monotonic()))

    def retry_later(self, image: str, provider_name: str) -> None:
        """The pair's check reached no verdict (no room in the cloud):
        start none before RETRY_DELAY has passed."""
        with self._lock:
            self._not_before[(image, provider_name)] = time.monotonic() + RETRY_DELAY

    def running_checks(self) -> list[UploadCheck]:
        with self._lock:
            self._checks = {k: c for k, c in self._checks.items() if c.is_alive()}
            return list(self._checks.values())

    def check_uploads(self) -> None:
        """Start a check for each image and provider that needs one and
        that this launcher can check."""
        config = self.launcher.config
        running = {(c.image, c.provider_name) for c in self.running_checks()}
        now = time.monotonic()
        with self._lock:
            self._not_before = {k: t for k, t in self._not_before.items() if t > now}
            waiting = set(self._not_before)
        for (image, provider_name), uploads in self._uploads_by_pair():
            pair = (image, provider_name)
            if pair in running or pair in waiting or self._stopped.is_set():
                continue
            upload = next_to_check(uploads)
            if upload is None:
                continue
            target = check_target(config, self.launcher.providers, image, provider_name)
            if target is None:
                continue
            diskimage = config.diskimages.get(image)
            validation = diskimage.validation if diskimage is not None else None
            check = UploadCheck(self, upload, target, validation)
            with self._lock:
                self._checks[(image, provider_name)] = check
            check.start()

    def _uploads_by_pair(self) -> list[tuple[tuple[str, str], list[ImageUpload]]]:
        pairs: dict[tuple[str, str], list[ImageUpload]] = {}
        for upload in self.launcher.image_cache.uploads():
            pairs.setdefault((str(upload.image_name), str(upload.provider_name)),
                             []).append(upload)
        return sorted(pairs.items())

    @property
    def stopping(self) -> threading.Event:
        return self._stopped


def next_to_check(uploads: list[ImageUpload]) -> ImageUpload | None:
    """Of one image's uploads to one provider, the one to check next: the
    newest awaiting its check, if it is newer than every upload in
    service (an older one would never serve)."""
    serving = max((u.state_time for u in uploads if u.in_service), default=float("-inf"))
    waiting = [u for u in uploads if u.awaiting_validation and u.state_time > serving]
    return max(waiting, key=lambda u: u.state_time, default=None)


class UploadCheck(threading.Thread):
    """One upload's check, on its own thread (it takes minutes)."""

    def __init__(self, validator: ImageValidator, upload: ImageUpload,
                 target: CheckTarget, validation: ImageValidation | None) -> None:
        self.image = str(upload.image_name)
        self.provider_name = str(upload.provider_name)
        super().__init__(name=f"ImageValidator.{self.image}.{self.provider_name}",
                         daemon=True)
        self.validator = validator
        self.launcher = validator.launcher
        self.zk = validator.launcher.zk
        self.upload = upload
        self.target = target
        self.validation = validation
        self.stopping = validator.stopping
        self.hostname = validator.launcher.hostname
        self.what = (f"upload {upload.id} of {self.image}-{upload.build_id} to "
                     f"{self.provider_name}")

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("Error checking %s", self.what)

    def _run(self) -> None:
        upload = self.upload
        try:
            lock = self.zk.lock_upload_validation(
                self.image, upload.build_id, self.provider_name, upload.id,
                identifier=self.hostname)
        except ZKLockException:
            # Another launcher checks it, or it is gone.
            return
        try:
            current = self.zk.get_upload(self.image, upload.build_id, self.provider_name,
                                         upload.id)
            if current is None or not current.awaiting_validation:
                return
            validation = self.validation
            if validation is None:
                self._record(models.VALIDATION_SKIPPED,
                             "the diskimage no longer asks for a check")
                return
            if not self._mark_checking(None):
                return
            started = time.monotonic()
            try:
                result = self._check(current, validation)
            except CheckAbandoned:
                log.info("Check of %s abandoned: the launcher is stopping; another "
                         "launcher (or this one, restarted) checks it again", self.what)
                self._mark_pending()
                return
            except UploadChanged:
                log.info("Check of %s stopped: the upload no longer awaits it (deleted, "
                         "or changed by an operator)", self.what)
                return
            if result is None:
                # Not decided (the cloud had no room): tried again later.
                self._mark_pending()
                self.validator.retry_later(self.image, self.provider_name)
                return
            state = models.VALIDATION_PASSED if result.passed else models.VALIDATION_FAILED
            if self._record(state, result.reason, duration=time.monotonic() - started):
                self._send_stats(state, time.monotonic() - started)
        finally:
            self.zk.unlock(lock)
        # An older upload awaiting its check may be next (when this one failed).
        self.validator.wake()

    # The check -----------------------------------------------------------

    def _check(self, upload: ImageUpload, validation: ImageValidation) -> CheckResult | None:
        """Launch the check node, run the command, release the node.
        None when no verdict could be reached (no room in the cloud)."""
        target = self.target
        provider, pool, label = target.provider, target.pool, target.label
        try:
            quota = provider.quota_for_label(label)
        except Exception as e:
            return CheckResult(False, f"label {label.name} cannot be launched in "
                                      f"{self.provider_name}: {e}")
        reservation, claim = self._wait_for_room(quota)
        node = self._new_node(upload, quota)
        done = threading.Event()
        caps = self.launcher.label_caps
        try:
            handle = provider.launch(node, label, pool, None, upload.external_id,
                                     on_done=lambda h: done.set(), reservation=reservation,
                                     ready_state=models.TESTING)
        except Exception:
            provider.release(reservation)
            if claim is not None:
                caps.release([claim])
            raise
        if claim is not None:
            caps.launched(claim, handle)
        while not done.wait(LAUNCH_POLL):
            if self.stopping.is_set():
                # Left as its record says; without our lock (which goes
                # with the session) a delete worker removes it.
                handle.cancel()
                raise CheckAbandoned("stopping")
        node = handle.node
        if handle.state != READY:
            caps.launch_ended(handle)
            self._release(node, models.FAILED)
            if handle.state == ABORTED:
                log.info("No room in the cloud for the check node of %s; trying again "
                         "later", self.what)
                return None
            return CheckResult(False, f"the check node could not be launched: "
                                      f"{handle.error or 'launch failed'}")
        try:
            if not self._mark_checking(str(node.id)):
                raise UploadChanged(self.what)
            return self._run_command(node, validation)
        finally:
            self._release(node, models.DELETING)

    def _wait_for_room(self, quota: Any) -> tuple[Any, Any]:
        """Reserve room for the check node in its pool and, for a label
        with ``max-servers``, a slot under it (a claim; None for a label
        without), waiting as long as there is none: the node counts like
        any other."""
        provider, pool = self.target.provider, self.target.pool
        label = self.target.label.name
        caps = self.launcher.label_caps
        waited = False
        while True:
            if self.stopping.is_set():
                raise CheckAbandoned("stopping")
            if provider.available_quota(pool).fits(quota):
                claims = caps.claim([label])
                if claims is not None:
                    return (provider.reserve(pool.name, quota),
                            claims[0] if claims else None)
            if not waited:
                log.info("Check of %s waits for room in pool %s of %s (or under the "
                         "max-servers of label %s)", self.what, pool.name,
                         self.provider_name, label)
                waited = True
            self.validator.wait_for_room_change(CAPACITY_RETRY)

    def _new_node(self, upload: ImageUpload, quota: Any) -> Node:
        provider, pool, label = self.target.provider, self.target.pool, self.target.label
        node = Node()
        node.state = models.INIT
        node.type = [label.name]
        node.provider = self.provider_name
        node.pool = pool.name
        node.launcher = f"{self.hostname}-ImageValidator"
        node.attributes = pool.node_attributes
        node.az = provider.choose_az(pool)
        node.image_id = upload.path
        node.cloud = provider.provider.cloud
        node.region = provider.provider.region_name
        node.resources = quota.to_dict()
        node.comment = f"checking {self.what} before it serves requests"
        image = label.image
        if image is not None:
            node.username = image.username
            node.python_path = image.python_path
            node.shell_type = image.shell_type
            node.connection_type = image.connection_type
            node.connection_port = image.connection_port
        return node

    def _run_command(self, node: Node, validation: ImageValidation) -> CheckResult:
        username = validation.username or node.username
        host = node.interface_ip
        if not host:
            return CheckResult(False, "the check node has no address to connect to")
        log.info("Checking %s on node %s (%s@%s): %s", self.what, node.id, username,
                 host, validation.command)
        result = run_check(host=host, port=int(node.connection_port or 22),
                           username=username, command=validation.command,
                           timeout=validation.timeout, host_keys=list(node.host_keys),
                           private_key=validation.private_key, stop=self.stopping)
        if result.output:
            log.info("Output of the check of %s:\n%s", self.what, result.output)
        return result

    def _release(self, node: Node, state: str) -> None:
        """Hand the check node to the delete worker (``deleting``, or
        ``failed`` for a launch that did not finish) and let go of it."""
        if node.id is None:
            return
        try:
            if node.lock is not None:
                node.state = state
                self.zk.store_node(node)
        except Exception:
            # Unlocked in a cleanup state all the same: still deleted.
            log.exception("Could not mark check node %s %s", node.id, state)
        finally:
            if node.lock is not None:
                self.zk.unlock_node(node)

    # The upload record ----------------------------------------------------

    def _update(self, change: Any) -> ImageUpload | None:
        """Apply ``change(record)`` to the current upload record while it
        still awaits its check; the record written, or None when it no
        longer awaits one (an operator or the builder changed it)."""
        for _ in range(5):
            current = self.zk.get_upload(self.image, self.upload.build_id,
                                         self.provider_name, self.upload.id)
            if current is None or not current.awaiting_validation:
                return None
            change(current)
            if self.zk.replace_upload(current):
                return current
        return None

    def _mark_checking(self, node_id: str | None) -> bool:
        def change(record: ImageUpload) -> None:
            record.validation = {"state": models.VALIDATION_CHECKING, "time": time.time(),
                                 "launcher": self.hostname, "node": node_id}
        return self._update(change) is not None

    def _mark_pending(self) -> None:
        def change(record: ImageUpload) -> None:
            record.validation = {"state": models.VALIDATION_PENDING, "time": time.time()}
        self._update(change)

    def _record(self, state: str, reason: str, duration: float | None = None) -> bool:
        """Write the verdict; a failed check makes the upload ``failed``."""
        def change(record: ImageUpload) -> None:
            previous = record.validation if isinstance(record.validation, dict) else {}
            record.validation = {"state": state, "time": time.time(),
                                 "launcher": self.hostname, "node": previous.get("node"),
                                 "reason": reason}
            if duration is not None:
                record.validation["duration"] = round(duration, 1)
            if state == models.VALIDATION_FAILED:
                record.state = models.FAILED
                record.state_time = time.time()

        written = self._update(change)
        if written is None:
            log.warning("Check of %s ended (%s: %s) but the upload no longer awaits "
                        "it; its record is left as it is", self.what, state, reason)
            return False
        if state == models.VALIDATION_FAILED:
            log.error("Check of %s failed: %s; the upload is marked failed and the "
                      "previous upload keeps serving. Fix the image (or the check) "
                      "and build again, or remove the failed upload with 'nodepool "
                      "image-delete' to upload and check this build again",
                      self.what, reason)
        else:
            log.info("Check of %s %s (%s); it serves requests from now on", self.what,
                     state, reason)
        return True

    def _send_stats(self, state: str, seconds: float) -> None:
        key = metrics.IMAGE_VALIDATION.key(image=self.image, provider=self.provider_name,
                                           result=state)
        stats = statsmod.get_stats()
        stats.timing(key, int(seconds * 1000))
        stats.incr(key)
