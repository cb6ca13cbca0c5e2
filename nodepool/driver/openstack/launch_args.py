"""What a server create asks Nova for, from a label and a launch.

Pure functions over configuration: the adapter looks up the cloud's ids
(flavor, image, networks) and hands them in.  Nova metadata is where Zuul's
Ansible inventory and operators' own tooling find out what a server is, and
where nodepool finds its own servers again (the ``nodepool_*`` tags, which
nothing configurable may override).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from nodepool.driver.request_format import format_with_request


def server_metadata(*, provider_name: str, image_name: str, label: Any,
                    tags: dict[str, str], request: Any,
                    log: logging.Logger | logging.LoggerAdapter) -> dict[str, str]:
    """The metadata of a new server, lowest precedence first: ``groups``
    (``<provider>,<image>,<label>``, which Ansible inventories turn into
    groups), the label's ``instance-properties``, its
    ``dynamic-instance-properties`` formatted with the request, and
    nodepool's own ``tags``.  A dynamic property that does not format is
    logged and left out rather than failing the launch."""
    meta = {"groups": ",".join([provider_name, image_name, label.name])}
    for key, value in (label.instance_properties or {}).items():
        meta[str(key)] = str(value)
    for key, fmt in (label.dynamic_instance_properties or {}).items():
        try:
            meta[str(key)] = format_with_request(fmt, request)
        except Exception:
            log.exception("Could not format dynamic instance property %s (%r); "
                          "leaving it out", key, fmt)
    meta.update(tags)
    return meta


def server_create_args(*, spec: Any, provider_name: str, flavor_id: str, image_id: str,
                       network_ids: list[str]) -> dict[str, Any]:
    """Keyword arguments for openstacksdk's ``compute.create_server``."""
    label = spec.label
    args: dict[str, Any] = {
        "name": spec.hostname,
        "flavor_id": flavor_id,
        # Nova (2.37+) requires networks; "auto" means the cloud's default.
        "networks": [{"uuid": n} for n in network_ids] or "auto",
        "metadata": server_metadata(
            provider_name=provider_name, image_name=label.image.name, label=label,
            tags=spec.metadata, request=spec.request, log=spec.log),
    }
    if label.boot_from_volume:
        # The volume goes with the server: nothing is left to leak.
        args["block_device_mapping"] = [{
            "boot_index": 0, "uuid": image_id, "source_type": "image",
            "destination_type": "volume", "volume_size": label.volume_size,
            "delete_on_termination": True}]
    else:
        args["image_id"] = image_id
    if spec.az:
        args["availability_zone"] = spec.az
    if label.key_name:
        args["key_name"] = label.key_name
    if label.pool.security_groups:
        args["security_groups"] = [{"name": g} for g in label.pool.security_groups]
    if label.userdata:
        args["user_data"] = base64.b64encode(label.userdata.encode()).decode()
    if label.image.config_drive is not None:
        args["config_drive"] = label.image.config_drive
    return args
