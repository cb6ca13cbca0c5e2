"""CleanupWorker: deletes what is no longer wanted, in the clouds, in
ZooKeeper and on local disk.

Per image: the two newest ready builds are kept (none when the image was
removed from the configuration); per provider, the two newest ready
uploads.  For a diskimage whose uploads are checked before service
(``validation``), "ready" means in service: an upload awaiting its check
is kept only while it is newer than every upload in service (it may take
over), the build whose upload serves a provider is kept however many
newer builds there are (so the provider always has an image while the
newer ones wait or fail), and an upload that failed its check is kept,
for operators to see, until its build is no longer the newest.
Everything else goes: older builds and uploads, failed ones,
uploads to providers that no longer list the image, builds and uploads an
operator marked ``deleting`` (``nodepool dib-image-delete`` and
``image-delete``), and ``building``/``uploading`` records whose builder is
gone (nobody holds their lock).  An upload is deleted as ``deleting`` ->
cloud image deleted -> record removed, holding the upload's lock so only
one builder deletes it.  A build becomes ``deleting`` once all its uploads
are, which frees its local files at once; its record goes when its last
upload has.  Uploads to providers this builder does not manage are left to
a builder that does.

The cleanup worker also removes leaked cloud images (tagged with our build
and upload ids, no record, seen on two passes) of the providers this
builder uploads to: the builder owns images, so launchers leave them alone.
"""

from __future__ import annotations

import time
from typing import Any

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.builder import files
from nodepool.builder.build_worker import lock_names_build
from nodepool.builder.upload_worker import failed_check
from nodepool.builder.worker import BuilderWorker
from nodepool.exceptions import NotFound
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import ImageBuild, ImageUpload
from nodepool.zk.zookeeper import build_path

KEEP_BUILDS = 2
KEEP_UPLOADS = 2
# Builders serialise their leaked-image passes per provider, so a leaked
# image is deleted by one of them.


class CleanupWorker(BuilderWorker):
    kind = "CleanupWorker"

    def __init__(self, builder: Any, index: int, interval: float) -> None:
        super().__init__(builder, index, interval)
        self._warned: set[tuple[str, str, str]] = set()

    def work(self) -> None:
        for task in (self.cleanup_images, self.cleanup_local_files,
                     self.cleanup_leaked_images, self.emit_stats):
            if not self.running:
                return
            try:
                task()
            except Exception:
                self.log.exception("Error in cleanup task %s", task.__name__)

    # ZooKeeper records and cloud images -------------------------------------

    def cleanup_images(self) -> None:
        for image in self.builder.zk.image_names():
            if not self.running:
                return
            try:
                self.cleanup_image(image)
            except Exception:
                self.log.exception("Error cleaning up image %s", image)

    def cleanup_image(self, image: str) -> None:
        zk = self.builder.zk
        config = self.builder.config
        builds = zk.get_builds(image)
        if not builds:
            return
        diskimage = config.diskimages.get(image)
        # An image gone from the configuration is one the operator removed;
        # one still configured but unused keeps its builds (another builder
        # may serve it).
        ready = [b.id for b in builds if b.state == models.READY]
        keep = set() if diskimage is None else set(ready[:KEEP_BUILDS])
        uploads = {b.id: self._uploads(image, b.id) for b in builds}
        if diskimage is not None and diskimage.validation is not None:
            keep |= self._serving_builds(builds, uploads)
        recent = self._recent_uploads(builds, uploads)
        newest = ready[0] if ready else None
        for build in builds:
            doomed = build.state in (models.DELETING, models.FAILED) or (
                build.state == models.READY and build.id not in keep)
            if build.state == models.BUILDING:
                if self.build_in_progress(image, build):
                    continue
                doomed = True
            for provider_uploads in uploads[build.id].values():
                for upload in provider_uploads:
                    if self._upload_unwanted(image, build, upload, doomed, recent,
                                             newest):
                        self.delete_upload(upload)
            if doomed:
                self._retire_build(image, build)

    def _uploads(self, image: str, build_id: str) -> dict[str, list[ImageUpload]]:
        zk = self.builder.zk
        return {p: zk.get_uploads(image, build_id, p)
                for p in zk.build_providers(image, build_id)}

    @staticmethod
    def _ready_uploads_by_provider(builds: list[ImageBuild],
                                   uploads: dict[str, dict[str, list[ImageUpload]]]
                                   ) -> dict[str, list[ImageUpload]]:
        """Per provider, the ready uploads of ready builds, newest first."""
        by_provider: dict[str, list[ImageUpload]] = {}
        for build in builds:
            if build.state != models.READY:
                continue
            for provider_name, provider_uploads in uploads[str(build.id)].items():
                by_provider.setdefault(provider_name, []).extend(
                    u for u in provider_uploads if u.state == models.READY)
        return {p: sorted(us, key=lambda u: u.state_time, reverse=True)
                for p, us in by_provider.items()}

    @classmethod
    def _recent_uploads(cls, builds: list[ImageBuild],
                        uploads: dict[str, dict[str, list[ImageUpload]]]
                        ) -> dict[str, set[str]]:
        """Per provider, the (build, upload) ids of the ready uploads of
        ready builds to keep: the newest in service, and those awaiting
        their check that are newer than all of these (one of them takes
        over once it passes).  Without checks, every ready upload is in
        service and this is simply the newest ready uploads."""
        out: dict[str, set[str]] = {}
        for provider_name, ready in cls._ready_uploads_by_provider(builds, uploads).items():
            serving = [u for u in ready if u.in_service][:KEEP_UPLOADS]
            since = serving[0].state_time if serving else float("-inf")
            waiting = [u for u in ready if u.awaiting_validation and u.state_time > since]
            out[provider_name] = {f"{u.build_id}/{u.id}" for u in serving + waiting}
        return out

    @classmethod
    def _serving_builds(cls, builds: list[ImageBuild],
                        uploads: dict[str, dict[str, list[ImageUpload]]]) -> set[str]:
        """The builds whose upload is the newest in service in some
        provider: kept while newer uploads there await or fail their
        check, however many newer builds there are."""
        out = set()
        for ready in cls._ready_uploads_by_provider(builds, uploads).values():
            serving = next((u for u in ready if u.in_service), None)
            if serving is not None:
                out.add(str(serving.build_id))
        return out

    def _upload_unwanted(self, image: str, build: ImageBuild, upload: ImageUpload,
                         doomed: bool, recent: dict[str, set[str]],
                         newest_build: str | None) -> bool:
        entry = self.builder.providers.get(upload.provider_name)
        if entry is None:
            if doomed and upload.state != models.DELETING:
                key = (image, str(build.id), str(upload.provider_name))
                if key not in self._warned:
                    self._warned.add(key)
                    self.log.warning(
                        "Build %s-%s has an upload in provider %s, which this builder "
                        "does not manage; a builder configured with that provider "
                        "deletes it", image, build.id, upload.provider_name)
            return False
        pc, _ = entry
        if (failed_check(upload) and not doomed and build.id == newest_build
                and image in pc.diskimage_names()):
            # Shown as failed (image-list, the status page) and keeping
            # the upload worker from uploading the same build again.
            return False
        if upload.state in (models.DELETING, models.FAILED):
            return True
        if upload.state == models.UPLOADING:
            return not self._upload_in_progress(upload)
        if doomed or image not in pc.diskimage_names():
            return True
        return f"{upload.build_id}/{upload.id}" not in recent.get(str(upload.provider_name), set())

    def _upload_in_progress(self, upload: ImageUpload) -> bool:
        """Whether an uploader holds the uploads lock of this build and
        provider (its record being ``uploading`` alone proves nothing: the
        uploader may have died)."""
        zk = self.builder.zk
        try:
            lock = zk.lock_image_uploads(upload.image_name, upload.build_id,
                                         upload.provider_name, blocking=False)
        except ZKLockException:
            return True
        try:
            current = zk.get_upload(upload.image_name, upload.build_id,
                                    upload.provider_name, upload.id)
            # Finished between our read and the lock: look again next pass.
            return current is not None and current.state != models.UPLOADING
        finally:
            zk.unlock(lock)

    def delete_upload(self, upload: ImageUpload) -> bool:
        """``deleting`` -> cloud image deleted -> record removed, all under
        the upload's lock.  False if it must wait for a later pass."""
        zk = self.builder.zk
        image, build_id, provider_name = upload.image_name, upload.build_id, \
            upload.provider_name
        try:
            lock = zk.lock_upload(image, build_id, provider_name, upload.id, blocking=False)
        except ZKLockException:
            return False
        try:
            current = zk.get_upload(image, build_id, provider_name, upload.id)
            if current is None:
                return True
            if current.state != models.DELETING:
                current.state = models.DELETING
                current.state_time = time.time()
                zk.store_upload(image, build_id, provider_name, current)
            if current.external_id:
                entry = self.builder.providers.get(provider_name)
                if entry is None:
                    return False
                self.log.info("Deleting image %s (%s) of build %s-%s from %s",
                              current.external_name, current.external_id, image,
                              build_id, provider_name)
                try:
                    entry[1].delete_image(current.external_id)
                except NotFound:
                    pass
                except Exception:
                    self.log.exception("Could not delete image %s from %s; retrying on "
                                       "the next pass", current.external_id, provider_name)
                    return False
            zk.delete_upload(image, build_id, provider_name, upload.id)
            self.log.info("Removed upload %s of build %s-%s in %s", upload.id, image,
                          build_id, provider_name)
            return True
        finally:
            zk.unlock(lock)

    def _retire_build(self, image: str, build: ImageBuild) -> None:
        """Mark a doomed build ``deleting`` once its uploads all are (its
        local files may go then), and remove it once none is left."""
        zk = self.builder.zk
        remaining = [u for us in self._uploads(image, str(build.id)).values() for u in us]
        if build.state != models.DELETING and all(
                u.state == models.DELETING for u in remaining):
            try:
                lock = zk.lock_build(image, build.id, blocking=False)
            except ZKLockException:
                return
            try:
                current = zk.get_build(image, build.id)
                if current is None:
                    return
                if current.state == models.BUILDING:
                    # Its builder came back; let it finish.
                    return
                current.state = models.DELETING
                current.state_time = time.time()
                zk.store_build(image, current)
                build.state = models.DELETING
                self.log.info("Deleting build %s-%s", image, build.id)
            finally:
                zk.unlock(lock)
        if build.state == models.DELETING or not remaining:
            files.remove_build_files(self.builder.config.images_dir, image, str(build.id))
        if not remaining and zk.delete_build(image, build.id):
            self.log.info("Removed build %s-%s", image, build.id)

    def build_in_progress(self, image: str, build: ImageBuild) -> bool:
        """Whether a ``building`` record belongs to a live build; a stale
        one (its builder died or lost its session) is marked failed."""
        zk = self.builder.zk
        try:
            lock = zk.lock_build(image, build.id, blocking=False)
        except ZKLockException:
            return True
        try:
            holder = zk.lock_holder(f"{build_path(image)}/lock")
            names = lock_names_build(holder, str(build.id))
            if names is None or names:
                # Being created right now, or an upstream builder holds the
                # image lock and we cannot tell which build it is making.
                return True
            current = zk.get_build(image, build.id)
            if current is None or current.state != models.BUILDING:
                return True
            self.log.warning("Build %s-%s (builder %s, id %s) is 'building' but its builder "
                             "no longer holds it; marking it failed", image, build.id,
                             current.builder, current.builder_id)
            current.state = models.FAILED
            current.state_time = time.time()
            zk.store_build(image, current)
            build.state = models.FAILED
            return False
        finally:
            zk.unlock(lock)

    # Local files ------------------------------------------------------------

    def cleanup_local_files(self) -> None:
        """Remove files of builds whose records are gone, failed or
        deleting; prune formats of ready builds (``delete-after-upload``)."""
        images_dir = self.builder.config.images_dir
        zk = self.builder.zk
        for image, build_id in sorted(files.local_builds(images_dir)):
            build = zk.get_build(image, build_id)
            if build is None or build.state in (models.DELETING, models.FAILED):
                files.remove_build_files(images_dir, image, build_id)
            elif build.state == models.READY:
                self.prune_formats(image, build_id)

    def prune_formats(self, image: str, build_id: str) -> None:
        diskimage = self.builder.config.diskimages.get(image)
        if diskimage is None or not diskimage.delete_after_upload:
            return
        keep = set(diskimage.keep_formats)
        zk = self.builder.zk
        for name, (pc, _) in self.builder.providers.items():
            if image not in pc.diskimage_names():
                continue
            if not zk.get_uploads(image, build_id, name, [models.READY]):
                keep.add(self.builder.upload_formats.get((name, image)))
        present = files.find_build_files(self.builder.config.images_dir, image, build_id)
        prune = [fmt for fmt in present if fmt not in keep]
        if prune:
            files.remove_build_files(self.builder.config.images_dir, image, build_id, prune)

    # Leaks ------------------------------------------------------------------

    def cleanup_leaked_images(self) -> None:
        zk = self.builder.zk
        for name, (_, provider) in list(self.builder.providers.items()):
            if not self.running:
                return
            lock = zk.leaked_image_cleanup_lock(name, self.builder.builder_id)
            try:
                if not lock.acquire(timeout=60):
                    continue
            except Exception:
                self.log.exception("Could not lock leaked-image cleanup of %s", name)
                continue
            try:
                counts = provider.cleanup_leaked_images()
                if counts:
                    self.log.info("Provider %s: deleted leaked %s", name, counts)
            except Exception:
                self.log.exception("Leaked-image cleanup of provider %s failed", name)
            finally:
                try:
                    lock.release()
                except Exception:
                    self.log.exception("Could not release leaked-image lock of %s", name)

    # Stats --------------------------------------------------------------

    def emit_stats(self) -> None:
        """Build request and worker state gauges (this worker runs even
        while builds and uploads take hours, so the gauges stay fresh)."""
        stats = statsmod.get_stats()
        zk = self.builder.zk
        host = self.builder.hostname
        status = self.builder.status
        total = 0
        # A complete picture: images and providers gone from ZooKeeper or
        # the configuration leave /metrics.
        with stats.pipeline(replace=(metrics.IMAGE_BUILD_REQUESTED,
                                     metrics.BUILDER_BUILD_STATE,
                                     metrics.BUILDER_UPLOAD_STATE)) as pipe:
            for image in zk.image_names():
                requested = 1 if zk.build_request_time(image) is not None else 0
                total += requested
                pipe.gauge(metrics.IMAGE_BUILD_REQUESTED.key(image=image), requested)
                pipe.gauge(metrics.BUILDER_BUILD_STATE.key(hostname=host, image=image),
                           status.build_state(image))
            for provider_name, image in self.builder.upload_pairs():
                pipe.gauge(metrics.BUILDER_UPLOAD_STATE.key(
                    hostname=host, image=image, provider=provider_name),
                    status.upload_state(image, provider_name))
            pipe.gauge(metrics.IMAGE_BUILD_REQUESTS.key(), total)
