"""What OpenStack limits allow and what servers and labels use.

Quota is counted in the resources Nova and Cinder enforce: ``instances``,
``cores``, ``ram`` (MB), and for boot-from-volume ``volumes`` and
``volume-gb``.  Missing volume numbers where no label boots from a volume
keep Cinder out of the picture (it may not even be deployed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodepool.driver.quota import QuotaInformation


def label_quota(label: Any, flavor: Any) -> QuotaInformation:
    """One node of ``label`` booted with ``flavor``."""
    quota = QuotaInformation(instances=1, cores=flavor.vcpus, ram=flavor.ram)
    if label.boot_from_volume:
        quota.add(QuotaInformation({"volumes": 1, "volume-gb": label.volume_size}))
    return quota


def server_quota(server: Any, flavors: Callable[[], list[Any]],
                 volume_sizes: dict[str, int]) -> QuotaInformation:
    """What a server in the cloud uses: its flavor (embedded in the server
    from compute microversion 2.47; before that looked up by id in
    ``flavors()``) and its attached volumes."""
    flavor = server.flavor
    vcpus, ram = getattr(flavor, "vcpus", None), getattr(flavor, "ram", None)
    if vcpus is None:
        known = {f.id: f for f in flavors()}.get(getattr(flavor, "id", None))
        vcpus, ram = (known.vcpus, known.ram) if known else (0, 0)
    quota = QuotaInformation(instances=1, cores=vcpus or 0, ram=ram or 0)
    attached = [v.id for v in server.attached_volumes or []]
    if attached:
        quota.add(QuotaInformation({
            "volumes": len(attached),
            "volume-gb": sum(volume_sizes.get(v, 0) for v in attached)}))
    return quota


def limits(compute: Any, volume: Any | None) -> QuotaInformation:
    """The project's limits from Nova's and (if given) Cinder's absolute
    limits; -1 means unlimited."""
    result = QuotaInformation.for_limits(
        instances=compute.instances, cores=compute.total_cores, ram=compute.total_ram)
    if volume is not None:
        result.add(QuotaInformation.for_limits(
            volumes=volume.max_total_volumes,
            **{"volume-gb": volume.max_total_volume_gigabytes}))
    return result
