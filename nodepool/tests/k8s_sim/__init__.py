"""A simulated Kubernetes / OpenShift API server speaking real REST on 127.0.0.1.

The kubernetes, openshift and openshiftpods drivers are tested with the
real ``kubernetes`` Python client pointed at this simulator through a
kubeconfig, so every call a driver makes crosses a real socket and is
(de)serialized by the client exactly as against a real cluster.  Nothing is
mocked.  Start one with::

    with SimulatedKubernetes() as sim:            # or openshift=True
        sim.write_kubeconfig(path)
        api = kubernetes.config.new_client_from_config(config_file=path,
                                                       context="sim-context")

or use the ``k8s_sim`` / ``openshift_sim`` pytest fixtures (fixtures.py).

Scope (what a real API server does that the simulator does too):

* Transport: plain HTTP by default, HTTPS with ``tls=True`` (certificate
  for 127.0.0.1 signed by the cluster CA, which is also the kubeconfig's
  ``certificate-authority-data``).  Every request needs a bearer token
  (the kubeconfig's admin token, or any filled service-account token):
  401 ``Status`` otherwise.  ``/version``, ``/api``, ``/api/v1``, ``/apis``
  and ``/apis/<group>[/<version>]`` discovery, as the dynamic client needs.
* Core v1 ``namespaces``, ``pods``, ``serviceaccounts``, ``secrets``,
  ``configmaps``, ``resourcequotas``; ``rbac.authorization.k8s.io/v1``
  ``roles`` and ``rolebindings``; with ``openshift=True`` also
  ``project.openshift.io/v1`` ``projectrequests`` and ``projects`` (a view
  of namespaces) and ``authorization.openshift.io/v1`` ``rolebindings`` (a
  view of RBAC rolebindings, with ``userNames``/``groupNames``).
* Verbs: create, get, list (label and field selectors, ``limit`` /
  ``continue``), watch (streamed events, resourceVersion resume, 410 when
  too old), update, patch (JSON, merge and strategic merge for named
  lists), delete (``propagationPolicy``, ``gracePeriodSeconds``,
  preconditions; the deleted object or a ``Status`` as the real store
  returns), deletecollection, ``dryRun=All``.
* Metadata: ``uid``, ``creationTimestamp``, a global ``resourceVersion``
  bumped on every write (optimistic concurrency on update: 409 Conflict),
  ``generateName``.  Errors are ``Status`` objects with the real reason and
  code: 404 NotFound, 409 AlreadyExists, 422 Invalid with field causes,
  400 BadRequest, 403 Forbidden, 405, 410, 500.
* Decoding: bodies are decoded against the OpenAPI models the kubernetes
  client ships: unknown fields are dropped with a ``Warning`` header
  (``fieldValidation`` Warn, the default), refused with 400 under
  ``fieldValidation=Strict``, silently dropped under Ignore; wrong JSON
  types are 400; resource quantities are stored canonical (``cpu: 2`` ->
  ``"2"``, ``1024Mi`` -> ``"1Gi"``).
* Controllers and admission (see controllers.py): default service accounts
  and ``kube-root-ca.crt`` per namespace; namespace deletion through a
  Terminating phase that removes everything inside; the token controller
  filling ``kubernetes.io/service-account-token`` secrets (JWT ``token``,
  PEM ``ca.crt``) after a delay, and legacy auto-created SA token secrets
  when enabled (OpenShift default); pods Pending -> Running with node, pod
  IP and container statuses; service-account and ResourceQuota admission.

Not simulated: authorization (every valid token may do everything),
subresources (``pods/log``, ``pods/exec``, ``/status``), server-side
apply, other kinds (services, deployments, nodes...), aggregated discovery,
protobuf.  Pod and host IPs (10.244.x.x, 10.0.0.10) are labels only:
nothing listens there.

Tests turn knobs and inspect state through :class:`SimulatedKubernetes`
(fault injection: refusals per verb and resource, quota, pod fates, token
and termination delays, latency, failing requests; call counts per verb and
resource), never through the API.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodepool.tests.k8s_sim.cluster import POD_FATES, SimulatedKubernetes

__all__ = ["POD_FATES", "SimulatedKubernetes"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that the pytest fixtures module (imported
    # by every test session's conftest) does not load the kubernetes client.
    if name in __all__:
        from nodepool.tests.k8s_sim import cluster
        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
