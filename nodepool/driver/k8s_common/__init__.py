"""What the kubernetes, openshift and openshiftpods drivers share.

The three drivers hand out Kubernetes resources instead of servers: a
namespace (OpenShift: a project) with a service account whose token Zuul
uses, optionally with a pod in it (openshiftpods: only a pod, in a project
that already exists).  They have nothing to boot and no SSH host keys to
scan; a node record carries the credentials in ``connection_port``.

Each creation is a short sequence of API calls (namespace, service
account, token secret, wait for the token, role, role binding, pod, wait
for it to run), which maps onto the framework's step-driven
:class:`~nodepool.driver.adapter.CreateOperation`: one API call per
``advance()``, progress in ``op.step`` / ``op.data``, so a launcher that
takes a node over resumes where the dead one stopped.

Modules: :mod:`.config` (labels, pools, schemas), :mod:`.connection`
(kubeconfig context or in-cluster configuration), :mod:`.errors` (what an
API error means for a launch), :mod:`.bodies` (the objects we send),
:mod:`.steps` (the create and delete operations) and :mod:`.adapter`
(quota, listings and leak cleanup).
"""
