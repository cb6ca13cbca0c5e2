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
import re
import string
from typing import Any

# A format field reaching for a private attribute ("{request.__class__}")
# could walk from the request into the whole process; refuse those.
_PRIVATE_FIELD = re.compile(r"(^|\.)_")


class RequestView:
    """The parts of a node request a ``dynamic-instance-properties`` format
    string may use: ``{request.id}``, ``.labels``, ``.requestor``,
    ``.requestor_data``, ``.relative_priority``, ``.event_id``,
    ``.created_time`` and ``.tenant_name``."""

    def __init__(self, request: Any) -> None:
        self.id = getattr(request, "id", None)
        self.labels = list(getattr(request, "node_types", None) or [])
        self.requestor = getattr(request, "requestor", None)
        self.requestor_data = getattr(request, "requestor_data", None)
        self.relative_priority = getattr(request, "relative_priority", None)
        self.event_id = getattr(request, "event_id", None)
        self.created_time = getattr(request, "created_time", None)
        self.tenant_name = getattr(request, "tenant_name", None)


class _SafeFormatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if _PRIVATE_FIELD.search(field_name):
            raise ValueError(f"field {field_name!r} names a private attribute")
        return super().get_field(field_name, args, kwargs)


_formatter = _SafeFormatter()


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
    view = RequestView(request)
    for key, fmt in (label.dynamic_instance_properties or {}).items():
        try:
            meta[str(key)] = _formatter.format(str(fmt), request=view)
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
