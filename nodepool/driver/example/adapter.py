"""The example cloud's adapter: nodepool's calls as example-cloud requests.

The example cloud's API (JSON over HTTP)::

    GET    /v1/limits          {"instances": 20, "cores": 100}
    GET    /v1/flavors         [{"name": "small", "cores": 2, "ram": 2048}]
    GET    /v1/servers         [{"id", "name", "status", "ip", "flavor", "metadata"}]
    POST   /v1/servers         {"name", "flavor", "image", "metadata"} -> 202 server
    DELETE /v1/servers/<id>    204, or 404 if there is no such server

A server is ``BUILDING``, then ``ACTIVE`` (or ``ERROR``); a create over
the account's limits is refused with 403 ``{"error": "quota ..."}``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import requests

from nodepool.driver.adapter import (
    META_PROVIDER,
    Adapter,
    CreateOperation,
    DeleteOperation,
    Instance,
    LaunchSpec,
    Resource,
)
from nodepool.driver.listing import SharedListing
from nodepool.driver.quota import QuotaInformation
from nodepool.exceptions import (
    LaunchStatusException,
    NotFound,
    QuotaException,
    RuntimeConfigurationException,
)

# Every call gives up after this long: a cloud that stops answering must
# not hold a step.
API_TIMEOUT = 30


class ExampleCreate(CreateOperation):
    """Steps: ``start`` (ask for the server), ``booting`` (until the shared
    listing shows it ACTIVE)."""

    def __init__(self, adapter: ExampleAdapter, spec: LaunchSpec, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter
        self.spec = spec

    def advance(self) -> Instance | None:
        if self.step == "start":
            server = self.adapter.call("POST", "/v1/servers", json={
                "name": self.spec.hostname, "flavor": self.spec.label.flavor,
                "image": self.spec.label.cloud_image.external_name,
                "metadata": self.spec.metadata})
            # Known as soon as the cloud names it: stored at once, so a
            # failed or interrupted launch can still delete it.
            self.external_id = server["id"]
            self.step = "booting"
            self.data["requested"] = time.time()
            return None
        servers, listed_at = self.adapter.servers.get()
        server = servers.get(self.external_id)
        if server is None:
            # A listing older than our request may not show it yet.
            if listed_at > self.data["requested"]:
                raise LaunchStatusException(f"server {self.external_id} vanished")
            return None
        self.status = server["status"]
        if server["status"] == "ERROR":
            raise LaunchStatusException(f"server {self.external_id} went to ERROR")
        if server["status"] != "ACTIVE":
            return None
        return self.adapter.instance(server)


class ExampleDelete(DeleteOperation):
    """Steps: ``start`` (ask for the delete), ``deleting`` (until a listing
    made after the request no longer shows the server)."""

    def __init__(self, adapter: ExampleAdapter, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter

    def advance(self) -> bool:
        if self.step == "start":
            try:
                self.adapter.call("DELETE", f"/v1/servers/{self.external_id}")
            except NotFound:
                return True
            self.step = "deleting"
            self.data["requested"] = time.time()
            return False
        servers, listed_at = self.adapter.servers.get()
        return listed_at > self.data["requested"] and self.external_id not in servers


class ExampleAdapter(Adapter):
    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self.log = logging.getLogger(f"nodepool.driver.example.{provider_config.name}")
        self.session = requests.Session()
        self._lock = threading.Lock()
        self._flavors: dict[str, dict] = {}
        # One listing serves every launch and delete waiting on the cloud.
        # Its time is wall-clock here so that it compares with the times
        # operations store (a resumed operation may come from another
        # process).
        self.servers: SharedListing[dict] = SharedListing(
            lambda: self.call("GET", "/v1/servers"), lambda s: s["id"], self.poll_interval,
            clock=time.time)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; the project exception for a failure."""
        response = self.session.request(method, self.provider.endpoint + path,
                                        timeout=API_TIMEOUT, **kwargs)
        if response.status_code == 404:
            raise NotFound(f"{method} {path}: not found")
        if response.status_code == 403 and "quota" in response.text:
            raise QuotaException(response.json().get("error", response.text))
        response.raise_for_status()
        return response.json() if response.content else None

    def stop(self) -> None:
        self.session.close()

    # Servers ------------------------------------------------------------

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> CreateOperation:
        progress = progress or {}
        return ExampleCreate(self, spec, step=progress.get("step", "start"),
                             data=progress.get("data"), external_id=external_id)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> DeleteOperation:
        progress = progress or {}
        return ExampleDelete(self, step=progress.get("step", "start"),
                             data=progress.get("data"), external_id=external_id)

    def instance(self, server: dict) -> Instance:
        return Instance(
            external_id=server["id"], metadata=dict(server.get("metadata") or {}),
            interface_ip=server.get("ip"), public_ipv4=server.get("ip"),
            cloud="example", quota=self._flavor_quota(server["flavor"]))

    def list_instances(self) -> list[Instance]:
        return [self.instance(s) for s in self.servers.get()[0].values()]

    # Leaks ----------------------------------------------------------------

    def list_resources(self) -> list[Resource]:
        # The cloud as it is now (the leak sweep's rule): a listing
        # requested from now on, shared with launches waiting meanwhile.
        servers, _ = self.servers.get(requested_after=time.time())
        return [Resource("instance", s["id"], dict(s.get("metadata") or {}), s["name"])
                for s in servers.values() if META_PROVIDER in (s.get("metadata") or {})]

    def delete_resource(self, resource: Resource) -> None:
        try:
            self.call("DELETE", f"/v1/servers/{resource.id}")
        except NotFound:
            pass

    # Quota ----------------------------------------------------------------

    def get_quota_limits(self) -> QuotaInformation:
        return QuotaInformation(self.call("GET", "/v1/limits"))

    def _flavor_quota(self, name: str) -> QuotaInformation:
        with self._lock:
            if name not in self._flavors:
                # Flavors rarely change: look them up once per name.
                self._flavors.update({f["name"]: f for f in self.call("GET", "/v1/flavors")})
            flavor = self._flavors.get(name)
        if flavor is None:
            raise RuntimeConfigurationException(
                f"flavor {name!r} does not exist in {self.provider.endpoint}")
        return QuotaInformation(instances=1, cores=flavor["cores"], ram=flavor["ram"])

    def get_quota_for_label(self, label: Any) -> QuotaInformation:
        return self._flavor_quota(label.flavor)
