"""nodepool-builder: builds diskimages with diskimage-builder, uploads them
to the providers that use them, and deletes old builds and uploads.

``NodePoolBuilder`` (:mod:`nodepool.builder.builder`) owns the
configuration, the ZooKeeper session and the providers, and runs
``BuildWorker``\\ s, ``UploadWorker``\\ s and a ``CleanupWorker``, each in its
own module.  Builders coordinate only through ZooKeeper locks, so any
number of them can share the work.
"""

from nodepool.builder.build_worker import BuildWorker
from nodepool.builder.builder import NodePoolBuilder, read_builder_id
from nodepool.builder.cleanup import CleanupWorker
from nodepool.builder.upload_worker import UploadWorker

__all__ = ["BuildWorker", "CleanupWorker", "NodePoolBuilder", "UploadWorker",
           "read_builder_id"]
