"""BuildWorker: builds the diskimages that are due, one at a time.

An image is due when it has no ready build, when its newest ready build is
older than ``rebuild-age`` or lacks a format that is now needed, or when
someone asked for a build (``nodepool image-build`` creates
``/nodepool/images/<image>/request-build``).  Paused images are never
built.  Builders share the work through ZooKeeper: the image's build lock
(``builds/lock``) lets one builder build an image at a time, and the
per-build lock marks the build as alive while DIB runs.  The image lock's
identifier names the build being made, so another builder can tell a
build being created right now from one whose builder died.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from kazoo.exceptions import NoNodeError

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.builder import dib, files
from nodepool.builder.worker import BuilderWorker
from nodepool.exceptions import BuilderError
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import ImageBuild

LOCK_ID_PREFIX = "nodepool-builder"


def build_lock_identifier(builder_id: str, build_id: str) -> str:
    """What a builder writes into the image's build lock while making
    ``build_id`` (read back by :func:`lock_names_build`)."""
    return f"{LOCK_ID_PREFIX} {builder_id} {build_id}"


def lock_names_build(identifier: str | None, build_id: str) -> bool | None:
    """Whether the image build lock's holder says it is making
    ``build_id``: True or False for our builders' identifiers, None when
    the holder is unknown (e.g. an upstream builder, which names nothing)."""
    if identifier is None:
        return False
    parts = identifier.split()
    if len(parts) != 3 or parts[0] != LOCK_ID_PREFIX:
        return None
    return parts[2] == build_id


def needed_formats(diskimage: Any) -> list[str]:
    """Formats to build: the diskimage's ``formats`` plus those of every
    provider that uploads it (empty: nobody needs the image)."""
    return sorted(set(diskimage.formats) | set(diskimage.image_types))


class BuildWorker(BuilderWorker):
    kind = "BuildWorker"

    def work(self) -> None:
        config = self.builder.config
        for diskimage in list(config.diskimages.values()):
            if not self.running or self.builder.config is not config:
                # A reload woke us again; the next pass sees the new config.
                return
            try:
                self.consider(diskimage)
            except Exception:
                self.log.exception("Error checking whether image %s needs a build",
                                   diskimage.name)

    # Deciding -------------------------------------------------------------

    def consider(self, diskimage: Any) -> None:
        """Build ``diskimage`` if it is due and no other builder is on it.

        The first look uses the image cache (no ZooKeeper reads for the
        images that are not due); the decision is made again from
        ZooKeeper once the image's build lock is ours.
        """
        name = diskimage.name
        if diskimage.abstract:
            return
        formats = needed_formats(diskimage)
        if not formats:
            return
        zk = self.builder.zk
        paused = diskimage.pause or name in self.builder.image_cache.paused
        self.builder.status.set_build_paused(name, paused)
        if paused or self.due_reason(diskimage, formats, fresh=False) is None:
            return
        build_id = uuid.uuid4().hex
        try:
            lock = zk.lock_image_builds(
                name, blocking=False,
                identifier=build_lock_identifier(self.builder.builder_id, build_id))
        except ZKLockException:
            return
        try:
            # Someone may have finished a build between our look and the lock.
            if zk.is_image_paused(name):
                return
            reason = self.due_reason(diskimage, formats, fresh=True)
            if reason is None:
                return
            requested = zk.build_request_time(name) is not None
            self.build(diskimage, formats, build_id, reason, requested)
        finally:
            zk.unlock(lock)

    def due_reason(self, diskimage: Any, formats: list[str], fresh: bool = True) -> str | None:
        """Why the image should be built now, or None.  ``fresh`` reads
        ZooKeeper; otherwise the image cache answers (it may lag a little,
        but every change it has not shown yet wakes us again)."""
        name = diskimage.name
        now = time.time()
        requested_at: float | None
        if fresh:
            zk = self.builder.zk
            requested_at = zk.build_request_time(name)
            requested = requested_at is not None
            ready = zk.get_builds(name, [models.READY])
        else:
            cache = self.builder.image_cache
            requested = name in cache.build_requests
            requested_at = None  # the cache does not know when
            ready = sorted((b for b in cache.builds(name) if b.state == models.READY),
                           key=lambda b: b.state_time, reverse=True)
        failed_at = self.builder.build_failures.get(name)
        if failed_at is not None and now - failed_at < self.builder.retry_delay:
            # Back off after a failure, unless someone asked for a build since.
            if not (requested and (requested_at is None or requested_at > failed_at)):
                return None
        if requested:
            return "a build was requested"
        if not ready:
            return "it has no ready build"
        newest = ready[0]
        if now - newest.state_time >= diskimage.rebuild_age:
            return f"its newest build is older than rebuild-age ({diskimage.rebuild_age} s)"
        missing = set(formats) - set(newest.formats)
        if missing:
            return f"its newest build lacks the format(s) {', '.join(sorted(missing))}"
        return None

    # Building -------------------------------------------------------------

    def build(self, diskimage: Any, formats: list[str], build_id: str, reason: str,
              requested: bool) -> ImageBuild | None:
        """Record, run and finish one build (the image lock is held)."""
        builder = self.builder
        zk = builder.zk
        config = builder.config
        name = diskimage.name
        images_dir = config.images_dir
        free = files.free_space(images_dir)
        if free < builder.min_free_space:
            self.log.error(
                "Not building image %s: images-dir %s has %d MiB free, below the %d MiB "
                "the builder keeps in reserve; free some space (old builds go once newer "
                "ones are ready) or point images-dir at a larger filesystem",
                name, images_dir, free // 2**20, builder.min_free_space // 2**20)
            builder.build_failures[name] = time.time()
            return None

        record = ImageBuild(name, build_id)
        record.state = models.BUILDING
        record.builder = builder.hostname
        record.builder_id = builder.builder_id
        record.formats = list(formats)
        record.username = diskimage.username
        record.python_path = diskimage.python_path
        record.shell_type = diskimage.shell_type
        zk.store_build(name, record, create=True)
        self.log.info("Building image %s (build %s, formats %s) because %s",
                      name, build_id, ",".join(formats), reason)
        try:
            build_lock = zk.lock_build(name, build_id, timeout=30)
        except ZKLockException as e:
            self.log.warning("Could not lock new build %s-%s (%s); leaving it to cleanup",
                             name, build_id, e)
            return None
        try:
            current = zk.get_build(name, build_id)
            if current is None or current.state != models.BUILDING:
                self.log.warning("Build %s-%s was taken over by cleanup before it started",
                                 name, build_id)
                return None
            return self._run_and_record(diskimage, formats, record, requested)
        finally:
            zk.unlock(build_lock)

    def _run_and_record(self, diskimage: Any, formats: list[str], record: ImageBuild,
                        requested: bool) -> ImageBuild:
        builder = self.builder
        zk = builder.zk
        config = builder.config
        name = diskimage.name
        build_id = str(record.id)
        generation = builder.zk_client.session_generation
        cancel = threading.Event()
        builder.running_builds.add(cancel)
        try:
            with builder.status.building(name):
                result = self._run_dib(diskimage, formats, build_id, config, cancel)
        finally:
            builder.running_builds.discard(cancel)

        missing = [f for f in formats
                   if f not in files.find_build_files(config.images_dir, name, build_id)]
        session_lost = (builder.zk_client.session_generation != generation
                        or not builder.wait_connected(60))
        ok = result is not None and result.ok and not missing and not session_lost
        if result is not None and result.ok and missing:
            self.log.error("Build %s-%s: the build command succeeded but wrote no %s file(s)",
                           name, build_id, ",".join(missing))
        if session_lost:
            self.log.error("Build %s-%s failed: the ZooKeeper session was lost while it "
                           "ran, so another builder may already have taken over", name,
                           build_id)
        elif result is not None and not result.ok:
            self.log.error("Build %s-%s failed (exit code %s%s); see its log %s", name,
                           build_id, result.returncode,
                           ", timed out" if result.timed_out else
                           ", cancelled" if result.cancelled else "",
                           files.build_log_path(config.build_log_dir, name, build_id))
        record.state = models.READY if ok else models.FAILED
        record.state_time = time.time()
        try:
            zk.store_build(name, record)
        except NoNodeError:
            self.log.warning("The record of build %s-%s vanished; removing its files",
                             name, build_id)
            ok = False
        except Exception:
            self.log.exception("Could not record the end of build %s-%s; removing its "
                               "files", name, build_id)
            ok = False
        if ok:
            self.log.info("Image %s build %s is ready", name, build_id)
            builder.build_failures.pop(name, None)
            if requested:
                zk.remove_build_request(name)
        else:
            files.remove_build_files(config.images_dir, name, build_id)
            builder.build_failures[name] = time.time()
        self._report(diskimage, formats, record, result, ok)
        files.prune_build_logs(config.build_log_dir, name, config.build_log_retention)
        builder.wake_all()
        return record

    def _run_dib(self, diskimage: Any, formats: list[str], build_id: str, config: Any,
                 cancel: threading.Event) -> dib.DibResult | None:
        name = diskimage.name
        output_base = files.build_base(config.images_dir, name, build_id)
        os.makedirs(config.build_log_dir, exist_ok=True)
        log_path = files.build_log_path(config.build_log_dir, name, build_id)
        cmd = dib.dib_command(diskimage, formats, output_base)
        env = dib.dib_environment(diskimage, output_base, config.elements_dir)
        self.log.info("Running %s (log: %s)", " ".join(cmd), log_path)
        try:
            return dib.run_dib(cmd, env, log_path, diskimage.build_timeout, cancel)
        except BuilderError as e:
            self.log.error("Build %s-%s could not start: %s", name, build_id, e)
            return None

    def _report(self, diskimage: Any, formats: list[str], record: ImageBuild,
                result: dib.DibResult | None, ok: bool) -> None:
        stats = statsmod.get_stats()
        name = diskimage.name
        with stats.pipeline() as pipe:
            if ok:
                for fmt, image_file in files.find_build_files(
                        self.builder.config.images_dir, name, str(record.id)).items():
                    if fmt in formats:
                        pipe.gauge(metrics.DIB_IMAGE_SIZE.key(image=name, format=fmt),
                                   files.allocated_size(image_file.path))
            rc = 1
            if result is not None and not (result.timed_out or result.cancelled):
                rc = result.returncode if result.returncode is not None else 1
            if result is not None:
                pipe.timing(metrics.DIB_IMAGE_DURATION.key(image=name),
                            int(result.duration * 1000))
            pipe.gauge(metrics.DIB_IMAGE_RC.key(image=name), rc)
            pipe.gauge(metrics.DIB_IMAGE_LAST_BUILD.key(image=name), int(time.time()))
