"""Creating and deleting the Kubernetes objects of a node, one call a step.

A creation is a :class:`K8sCreate`: its ``step`` names the next thing to
do (``namespace``, ``serviceaccount``, ``secret``, ``token``, ``role``,
``rolebinding``, ``pod``, ``running``...) and each ``advance()`` makes
that one call (two at the very end) and moves on.  Every create accepts
"already exists" as success, so a step may be repeated safely, whether
because its answer was lost or because a launcher that took the node over
resumed the launch from the node record.  The few values a later step
needs (when the wait for the token or the pod began) are kept in
``op.data``; the token itself is never stored there: it is read again
from its secret when the launch resumes past that step.

Waits have the same bounds as upstream's: 30 s for the token controller
to fill the token secret and 300 s for a pod to run, measured from
wall-clock times kept in ``op.data`` so a resumed launch keeps them.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from kubernetes.client.exceptions import ApiException

from nodepool.driver.adapter import (
    META_NODE_ID,
    META_PROVIDER,
    CreateOperation,
    DeleteOperation,
    Instance,
    LaunchSpec,
)
from nodepool.driver.k8s_common import bodies, errors
from nodepool.driver.k8s_common.config import K8sLabel
from nodepool.exceptions import LaunchError, LaunchNodepoolException, QuotaException

if TYPE_CHECKING:
    from nodepool.driver.k8s_common.adapter import K8sAdapter

log = logging.getLogger("nodepool.driver.k8s")

# Seconds the token controller gets to fill a token secret.
TOKEN_TIMEOUT = 30.0
# Seconds a pod gets to reach Running.
POD_START_TIMEOUT = 300.0
# How often one call is tried again after a passing error (connection,
# timeout, 429, 5xx) before the attempt fails.
TRANSIENT_RETRIES = 3

OPENSHIFT_PROJECTS = ("project.openshift.io", "v1", "projects")
OPENSHIFT_PROJECT_REQUESTS = ("project.openshift.io", "v1", "projectrequests")


def pod_problem(pod: Any) -> str:
    """Why a pod is not running, in the cluster's words."""
    status = pod.status
    if status is None:
        return "no status yet"
    for container in status.container_statuses or []:
        state = container.state
        if state is None:
            continue
        for detail in (state.waiting, state.terminated):
            if detail is not None and detail.reason:
                text = f"{container.name}: {detail.reason}"
                return f"{text} ({detail.message})" if detail.message else text
    for condition in status.conditions or []:
        if condition.status != "True" and condition.reason:
            text = f"{condition.type}: {condition.reason}"
            return f"{text} ({condition.message})" if condition.message else text
    return status.reason or status.message or "no reason given"


class K8sCreate(CreateOperation):
    """Creating the objects of one node, a call per ``advance()``.

    Subclasses implement ``_step_<name>`` methods; each makes one call and
    either moves on with :meth:`_goto`, waits (returns None), or returns
    the finished :class:`Instance`.
    """

    FIRST: ClassVar[str] = ""

    def __init__(self, adapter: K8sAdapter, spec: LaunchSpec,
                 progress: dict[str, Any] | None = None, external_id: Any = None) -> None:
        progress = progress or {}
        super().__init__(progress.get("step") or self.FIRST, progress.get("data"), external_id)
        self.adapter = adapter
        self.conn = adapter.conn
        self.spec = spec
        self.label: K8sLabel = spec.label
        self.log = spec.log
        self.node_id: str = spec.metadata[META_NODE_ID]
        # What the current step does, for messages.
        self.doing = ""

    # The step runner ----------------------------------------------------------------

    def advance(self) -> Instance | None:
        self.poll_after = None
        step = getattr(self, f"_step_{self.step}", None)
        if step is None:
            raise LaunchNodepoolException(
                f"the node record names an unknown launch step {self.step!r}")
        try:
            result = step()
        except LaunchError:
            raise
        except Exception as e:
            if not errors.is_api_error(e):
                raise
            self._api_failed(e)
            return None
        self.data.pop("failures", None)
        return result

    def _api_failed(self, error: Exception) -> None:
        """Raise what ``error`` means for the launch, or (a passing
        problem, not too often yet) return to try the step again."""
        text = errors.message(error)
        if errors.is_quota(error):
            raise QuotaException(f"{self.doing}: {text}") from error
        if errors.is_transient(error):
            failures = int(self.data.get("failures", 0)) + 1
            if failures <= TRANSIENT_RETRIES:
                self.data["failures"] = failures
                self.log.warning("%s: %s; trying again (%d/%d)", self.doing, text,
                                 failures, TRANSIENT_RETRIES)
                self.poll_after = self.adapter.poll_interval * failures
                return
        raise errors.ApiCallError(f"{self.doing} failed: {text}{errors.hint(error)}") from error

    def _goto(self, step: str) -> None:
        self.step = step
        self.poll_after = 0.0

    def create_once(self, call: Any, *args: Any) -> bool:
        """Make a create call; False if the object existed already (an
        earlier try of the same step got through)."""
        try:
            call(*args, _request_timeout=self.conn.timeout)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    # Shared pieces ------------------------------------------------------------------

    def object_labels(self) -> dict[str, Any]:
        return bodies.object_labels(self.label, self.spec.metadata, self.spec.request,
                                    self.log)

    def is_ours(self, tags: dict[str, Any] | None) -> bool:
        """Whether an object that already exists was made for this node
        (by an earlier try), judged by its tags."""
        tags = tags or {}
        return (tags.get(META_NODE_ID) == self.node_id
                and tags.get(META_PROVIDER) == self.spec.metadata[META_PROVIDER])

    def adopt(self, what: str, tags: dict[str, Any] | None) -> None:
        """Continue with ``what``, which exists already, if it is ours."""
        if not self.is_ours(tags):
            raise LaunchNodepoolException(
                f"{what} already exists and was not made for node {self.node_id} "
                f"(its labels: {tags or {}}); remove it, or rename the pool")
        self.log.info("Continuing with %s, made by an earlier try", what)

    def instance(self, *, resource: dict[str, Any], connection_type: str,
                 interface_ip: str | None = None, host_id: str | None = None) -> Instance:
        """The finished node, as upstream records it."""
        return Instance(
            external_id=self.external_id,
            metadata=dict(self.spec.metadata),
            interface_ip=interface_ip,
            cloud=self.adapter.provider.context,
            host_id=host_id,
            python_path=self.label.python_path,
            shell_type=self.label.shell_type,
            connection_type=connection_type,
            connection_port=resource,
            # Reached through the API server, never over SSH.
            host_keys=[],
            quota=self.label.quota())

    # Pods -----------------------------------------------------------------------------

    @property
    def pod_namespace(self) -> str:
        raise NotImplementedError

    @property
    def pod_name(self) -> str:
        raise NotImplementedError

    def pod_created(self) -> None:
        """Called once the pod exists (created now or earlier)."""

    def pod_exists(self) -> None:
        """The pod exists already: continue with it if it is ours."""

    def _step_pod(self) -> None:
        namespace, name = self.pod_namespace, self.pod_name
        self.doing = f"creating pod {name} in {namespace}"
        body = bodies.pod(name, self.label, self.object_labels())
        if not self.create_once(self.conn.core.create_namespaced_pod, namespace, body):
            self.pod_exists()
        self.pod_created()
        self.data["pod_since"] = time.time()
        self._goto("running")

    def _step_running(self) -> Instance | None:
        namespace, name = self.pod_namespace, self.pod_name
        self.doing = f"reading pod {name} in {namespace}"
        pod = self.conn.core.read_namespaced_pod(name, namespace,
                                                 _request_timeout=self.conn.timeout)
        phase = pod.status.phase if pod.status is not None else None
        self.status = phase
        if phase == "Running":
            return self.finish(pod)
        if phase in ("Failed", "Succeeded"):
            raise LaunchNodepoolException(
                f"pod {name} in {namespace} stopped ({phase}: {pod_problem(pod)})")
        waited = time.time() - float(self.data.get("pod_since") or time.time())
        if waited > POD_START_TIMEOUT:
            raise LaunchNodepoolException(
                f"pod {name} in {namespace} failed to initialize within "
                f"{POD_START_TIMEOUT:g} s ({phase}: {pod_problem(pod)})")
        return None

    def finish(self, pod: Any) -> Instance:
        """The Instance of a node whose objects are all ready (``pod`` is
        the running pod, or None for a namespace or project node)."""
        raise NotImplementedError


class NamespacedCreate(K8sCreate):
    """A namespace (or project) of our own with a service account and its
    token, and for pod labels a pod in it."""

    # The step that grants the service account its access.
    ACCESS_STEP: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.namespace = f"{self.spec.pool.name}-{self.node_id}"
        # (token, base64 CA) once read.
        self._credentials: tuple[str, str] | None = None

    @property
    def pod_namespace(self) -> str:
        return self.namespace

    @property
    def pod_name(self) -> str:
        return self.label.name

    def access_granted(self) -> Instance | None:
        """After the access step: a pod next, or done."""
        if self.label.is_pod:
            self._goto("pod")
            return None
        return self.finish(None)

    def _step_serviceaccount(self) -> None:
        self.doing = f"creating service account {bodies.USER} in {self.namespace}"
        self.create_once(self.conn.core.create_namespaced_service_account, self.namespace,
                         bodies.service_account())
        self._goto("secret")

    def _step_secret(self) -> None:
        self.doing = f"creating token secret {bodies.USER} in {self.namespace}"
        self.create_once(self.conn.core.create_namespaced_secret, self.namespace,
                         bodies.token_secret())
        self.data["token_since"] = time.time()
        self._goto("token")

    def _step_token(self) -> None:
        self.doing = f"reading token secret {bodies.USER} in {self.namespace}"
        if self._read_credentials() is not None:
            self._goto(self.ACCESS_STEP)
            return None
        waited = time.time() - float(self.data.get("token_since") or time.time())
        if waited > TOKEN_TIMEOUT:
            raise LaunchNodepoolException(
                f"{self.namespace}: no token in secret {bodies.USER} after "
                f"{TOKEN_TIMEOUT:g} s (is the cluster's token controller running?)")
        self.status = "waiting for the service account token"
        return None

    def _read_credentials(self) -> tuple[str, str] | None:
        secret = self.conn.core.read_namespaced_secret(bodies.USER, self.namespace,
                                                       _request_timeout=self.conn.timeout)
        data: dict[str, Any] = secret.data or {}
        token, ca = data.get("token"), data.get("ca.crt")
        if not token or not ca:
            return None
        self._credentials = (base64.b64decode(token).decode("utf-8"), ca)
        return self._credentials

    def credentials(self) -> tuple[str, str]:
        """The service account's token and the base64 PEM of the cluster
        CA (read again if this process did not read them)."""
        if self._credentials is None:
            self.doing = f"reading token secret {bodies.USER} in {self.namespace}"
            if self._read_credentials() is None:
                raise LaunchNodepoolException(
                    f"{self.namespace}: the token of secret {bodies.USER} is gone")
        assert self._credentials is not None
        return self._credentials

    def access(self, pod: Any) -> dict[str, Any]:
        """What Zuul's executor needs to reach the namespace (and pod)."""
        token, ca = self.credentials()
        host, verified = self.conn.server()
        resource: dict[str, Any] = {"namespace": self.namespace, "host": host,
                                    "skiptls": not verified, "token": token,
                                    "user": bodies.USER}
        if verified:
            resource["ca_crt"] = ca
        if pod is not None:
            resource["pod"] = self.pod_name
        return resource


class K8sDelete(DeleteOperation):
    """Deleting one object and waiting until it is gone: ``delete``, then
    ``wait``.  "Not found" at either step means done."""

    def __init__(self, adapter: K8sAdapter, external_id: Any,
                 progress: dict[str, Any] | None = None) -> None:
        progress = progress or {}
        super().__init__(progress.get("step") or "delete", progress.get("data"), external_id)
        self.adapter = adapter

    def delete_call(self) -> None:
        raise NotImplementedError

    def read_call(self) -> None:
        raise NotImplementedError

    def advance(self) -> bool:
        call = self.delete_call if self.step == "delete" else self.read_call
        try:
            call()
        except Exception as e:
            if errors.status(e) == 404:
                return True
            if not errors.is_transient(e):
                raise
            log.warning("Deleting %s: %s; trying again", self.external_id, errors.message(e))
            return False
        if self.step == "delete":
            self.step = "wait"
        self.status = "deleting"
        return False
