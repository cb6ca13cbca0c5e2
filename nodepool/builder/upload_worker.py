"""UploadWorker: uploads the newest ready build of each image to every
provider that lists it.

One uploader per build and provider (the ``providers/<p>/images/lock``
lock); several workers upload to different providers in parallel.  Only
the builder holding the build's files can upload it.  An upload is tried a
few times before its record is marked failed; the pair is then tried
again, with a fresh record, after the builder's retry delay.
"""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import NoNodeError

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.builder import files
from nodepool.builder.worker import BuilderWorker
from nodepool.driver import ProviderConfig, ProviderDiskImage
from nodepool.driver.adapter import META_BUILD_ID, META_PROVIDER, META_UPLOAD_ID
from nodepool.exceptions import NotFound
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import ImageBuild, ImageUpload

if TYPE_CHECKING:
    from nodepool.config import DiskImage

META_IMAGE_NAME = "nodepool_image_name"
DEFAULT_NAME_FORMAT = "{image_name}-{timestamp}"
HOOK_TIMEOUT = 3600


def provider_diskimage(provider_config: ProviderConfig, image: str
                       ) -> ProviderDiskImage | None:
    """The provider's own settings for a diskimage (pause, meta), if any."""
    return provider_config.diskimages.get(image)


def cloud_image_name(provider_config: ProviderConfig, image: str, upload_id: str,
                     timestamp: int) -> str:
    """The provider's ``image-name-format`` filled in (upstream's fields:
    ``image_name``, ``upload_id``, ``timestamp``)."""
    fmt = provider_config.image_name_format or DEFAULT_NAME_FORMAT
    try:
        return fmt.format(image_name=image, upload_id=upload_id, timestamp=str(timestamp))
    except (KeyError, IndexError, ValueError):
        return DEFAULT_NAME_FORMAT.format(image_name=image, timestamp=timestamp)


def upload_metadata(diskimage: DiskImage | None, provider_image: ProviderDiskImage | None,
                    provider: str, image: str, build_id: str,
                    upload_id: str) -> dict[str, Any]:
    """The diskimage's ``metadata``, the provider's ``meta`` over it, and
    our tags, which let leak cleanup find an image whose record is gone."""
    meta: dict[str, Any] = dict(diskimage.metadata if diskimage is not None else {})
    meta.update(provider_image.meta if provider_image is not None else {})
    meta[META_BUILD_ID] = str(build_id)
    meta[META_UPLOAD_ID] = str(upload_id)
    meta[META_IMAGE_NAME] = str(image)
    meta[META_PROVIDER] = str(provider)
    return meta


def failed_check(upload: ImageUpload) -> bool:
    """Whether the upload failed its check before service.  Its build is
    not uploaded to that provider again (the check would fail the same
    way): a new build is, or this one once an operator removes the failed
    upload (``nodepool image-delete``)."""
    return upload.state == models.FAILED and upload.validation_state == models.VALIDATION_FAILED


class UploadWorker(BuilderWorker):
    kind = "UploadWorker"

    def work(self) -> None:
        pairs = self.builder.upload_pairs()
        if not pairs:
            return
        # Each worker starts at a different pair so they spread over the
        # providers instead of queueing on the same lock.
        start = self.index % len(pairs)
        for provider_name, image in pairs[start:] + pairs[:start]:
            if not self.running:
                return
            try:
                self.consider(provider_name, image)
            except Exception:
                self.log.exception("Error checking upload of image %s to %s", image,
                                   provider_name)

    def consider(self, provider_name: str, image: str) -> None:
        entry = self.builder.providers.get(provider_name)
        if entry is None:
            return
        pc, provider = entry
        pdi = provider_diskimage(pc, image)
        paused = pdi is not None and pdi.pause
        self.builder.status.set_upload_paused(image, provider_name, paused)
        if paused:
            return
        fmt = self.builder.upload_formats.get((provider_name, image))
        if not fmt:
            return
        # A first look in the cache; what matters is checked again in
        # ZooKeeper under the lock.
        cache = self.builder.image_cache
        ready = sorted((b for b in cache.builds(image) if b.state == models.READY),
                       key=lambda b: b.state_time, reverse=True)
        if not ready:
            return
        build = ready[0]
        if fmt not in build.formats:
            return
        image_file = files.find_build_files(self.builder.config.images_dir, image,
                                            build.id).get(fmt)
        if image_file is None:
            # Built elsewhere (or pruned): the builder with the files uploads it.
            return
        if any(u.build_id == build.id and (u.state == models.READY or failed_check(u))
               for u in cache.uploads(image, provider_name)):
            return
        zk = self.builder.zk
        if self._failed_lately(image, build.id, provider_name):
            return
        try:
            lock = zk.lock_image_uploads(image, build.id, provider_name, blocking=False)
        except ZKLockException:
            return
        try:
            # Again under the lock: the upload that held it may just have
            # failed (or succeeded).
            if self._failed_lately(image, build.id, provider_name):
                return
            if any(u.state == models.READY or failed_check(u)
                   for u in zk.get_uploads(image, build.id, provider_name)):
                return
            newest = zk.get_builds(image, [models.READY])
            if not newest or newest[0].id != build.id:
                return
            current = newest[0]
            with self.builder.status.uploading(image, provider_name):
                self.upload(pc, provider, current, image_file, fmt)
        finally:
            zk.unlock(lock)

    def _failed_lately(self, image: str, build_id: str, provider_name: str) -> bool:
        failed_at = self.builder.upload_failures.get((image, build_id, provider_name))
        return failed_at is not None and time.time() - failed_at < self.builder.retry_delay

    def upload(self, pc: Any, provider: Any, build: ImageBuild,
               image_file: files.DibImageFile, fmt: str) -> ImageUpload:
        """Upload one build to one provider (its uploads lock is held)."""
        builder = self.builder
        zk = builder.zk
        image = str(build.image_name)
        build_id = str(build.id)
        record = ImageUpload(build_id, pc.name, image)
        record.state = models.UPLOADING
        record.format = fmt
        record.username = build.username
        record.python_path = build.python_path
        record.shell_type = build.shell_type
        upload_id = zk.store_upload(image, build_id, pc.name, record)
        generation = builder.zk_client.session_generation
        start = time.time()
        external_name = cloud_image_name(pc, image, upload_id, int(start))
        pdi = provider_diskimage(pc, image)
        metadata = upload_metadata(builder.config.diskimages.get(image), pdi, pc.name,
                                   image, build_id, upload_id)
        self.log.info("Uploading build %s-%s (%s) to %s as %s", image, build_id,
                      image_file.path, pc.name, external_name)
        external_id = self._upload_with_retries(
            provider, pc, image, build_id, external_name=external_name,
            filename=image_file.path, fmt=fmt, metadata=metadata,
            md5=image_file.md5, sha256=image_file.sha256, provider_image=pdi)
        hook = pc.post_upload_hook
        if external_id is not None and hook:
            if not self._run_hook(hook, pc.name, external_id, image_file.path):
                self._delete_cloud_image(provider, pc.name, external_id)
                external_id = None
        if builder.zk_client.session_generation != generation:
            self.log.error("Upload %s of %s-%s to %s lost its ZooKeeper session; "
                           "removing the uploaded image", upload_id, image, build.id,
                           pc.name)
            if external_id is not None:
                self._delete_cloud_image(provider, pc.name, external_id)
            external_id = None
        record.state = models.READY if external_id is not None else models.FAILED
        diskimage = builder.config.diskimages.get(image)
        if record.state == models.READY and diskimage is not None and diskimage.validation:
            # In the same write as ``ready``: no launcher of ours ever
            # sees the upload ready without the check it must pass first.
            record.validation = {"state": models.VALIDATION_PENDING, "time": time.time()}
        key = (image, build.id, pc.name)
        if record.state == models.FAILED:
            # Before the record says so: another upload worker that sees
            # the failed record must also see the retry delay.
            builder.upload_failures[key] = time.time()
        record.state_time = time.time()
        record.external_id = external_id
        record.external_name = external_name if external_id is not None else None
        try:
            zk.store_upload(image, build.id, pc.name, record)
        except NoNodeError:
            self.log.warning("The record of upload %s of %s-%s to %s vanished; removing "
                             "the uploaded image", upload_id, image, build.id, pc.name)
            if external_id is not None:
                self._delete_cloud_image(provider, pc.name, external_id)
            record.state = models.FAILED
            builder.upload_failures[key] = time.time()
        if record.state == models.READY:
            self.log.info("Build %s-%s is ready in %s as %s (%s)%s", image, build.id,
                          pc.name, external_name, external_id,
                          "; a launcher checks it before it serves requests"
                          if record.validation else "")
            builder.upload_failures.pop(key, None)
            stats = statsmod.get_stats()
            stat_key = metrics.IMAGE_UPLOAD.key(image=image, provider=pc.name)
            stats.timing(stat_key, int((time.time() - start) * 1000))
            stats.incr(stat_key)
            # Older uploads may now be beyond the two kept.
            builder.wake_cleanup()
        else:
            builder.wake_cleanup()
        return record

    def _upload_with_retries(self, provider: Any, pc: Any, image: str, build_id: str, *,
                             external_name: str, filename: str, fmt: str,
                             metadata: dict[str, Any], md5: str | None,
                             sha256: str | None, provider_image: Any) -> str | None:
        attempts = max(1, self.builder.upload_attempts)
        for attempt in range(1, attempts + 1):
            try:
                return provider.upload_image(
                    image_name=external_name, filename=filename, image_format=fmt,
                    metadata=metadata, md5=md5, sha256=sha256,
                    provider_image=provider_image,
                    timeout=pc.image_upload_timeout)
            except Exception:
                self.log.exception("Upload of %s-%s to %s failed (attempt %d of %d)",
                                   image, build_id, pc.name, attempt, attempts)
            if attempt < attempts:
                time.sleep(self.builder.upload_attempt_delay * attempt)
                if not self.running:
                    break
        return None

    def _run_hook(self, hook: str, provider_name: str, external_id: str,
                  filename: str) -> bool:
        cmd = [hook, provider_name, str(external_id), filename]
        self.log.info("Running post-upload hook %s", cmd)
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=HOOK_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            self.log.error("Post-upload hook %s could not run: %s; deleting the uploaded "
                           "image", hook, e)
            return False
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            self.log.error("Post-upload hook %s failed with exit code %s; deleting the "
                           "uploaded image\nstdout:\n%s\nstderr:\n%s", hook,
                           proc.returncode, out, err)
            return False
        self.log.info("Post-upload hook succeeded\nstdout:\n%s\nstderr:\n%s", out, err)
        return True

    def _delete_cloud_image(self, provider: Any, provider_name: str,
                            external_id: str) -> None:
        try:
            provider.delete_image(external_id)
        except NotFound:
            pass
        except Exception:
            # Its tags let leak cleanup delete it later.
            self.log.exception("Could not delete image %s from %s", external_id,
                               provider_name)
