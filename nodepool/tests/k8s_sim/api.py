"""The REST semantics: routing, the verbs, discovery, and the OpenShift extras.

:func:`handle` turns one HTTP request into a response (or a
:class:`WatchPlan` the HTTP layer streams).  It runs with the state lock
held, so every request sees and leaves a consistent cluster.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from nodepool.tests.k8s_sim import controllers, resources, schema, validation
from nodepool.tests.k8s_sim.errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    forbidden_error,
    internal_error,
    invalid,
    invalid_error,
    not_found,
    success_status,
    unsupported,
)
from nodepool.tests.k8s_sim.resources import (
    PROJECT_GROUP,
    PROJECT_REQUESTS,
    PROJECTS,
    ResourceType,
)
from nodepool.tests.k8s_sim.selectors import field_matcher, label_matcher
from nodepool.tests.k8s_sim.state import ClusterState, Obj

# The Kubernetes release whose API the simulator speaks; the schema comes
# from the kubernetes client generated for the same release.
SERVER_VERSION = {
    "major": "1", "minor": "37", "gitVersion": "v1.37.0-sim",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
    "platform": "linux/amd64",
}
ADMIN_USER = "sim-admin"
STATUS_SUBRESOURCE = ("pods", "namespaces", "resourcequotas")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class WatchPlan:
    """A watch to stream: events of ``rtype`` after ``since`` matching the filters."""

    rtype: ResourceType
    namespace: str | None
    labels: Any
    fields: Any
    since: int | None  # None: start with ADDED events for what exists now
    timeout: float


def json_response(status: int, body: Any, warnings: list[str] | None = None) -> Response:
    # RFC 7234 warn-text is a quoted string: escape backslashes and quotes.
    headers = [("Warning", '299 - "{}"'.format(w.replace("\\", "\\\\").replace('"', '\\"')))
               for w in warnings or []]
    return Response(status, body, headers)


def _not_found_path() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


def _method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource",
                    details={})


def _load_json(req: Request) -> tuple[Any, list[str]]:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out
    if not req.body:
        raise bad_request("the body of the request was in an unknown format - accepted "
                          "media types include: application/json, application/yaml")
    try:
        return json.loads(req.body, object_pairs_hook=pairs), duplicates
    except ValueError as e:
        raise bad_request(f"error decoding request body: {e}") from e


class Api:
    """The API server's request handling for one cluster."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.resources = resources.served(state.openshift)

    # -- routing ---------------------------------------------------------------------

    def handle(self, req: Request) -> Response | WatchPlan:
        state = self.state
        state.tick()
        parts = [p for p in req.path.split("/") if p]
        if req.method == "GET" and parts in (["version"], ["api"], ["apis"], ["api", "v1"]) \
                or (req.method == "GET" and parts[:1] == ["apis"] and len(parts) in (2, 3)):
            state.calls[("get", "discovery")] += 1
            return self.discovery(parts)
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _not_found_path()
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and resources.find(
                self.resources, group, version, rest[2]) is not None:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise _not_found_path()
        rtype = resources.find(self.resources, group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        if rtype is None or len(rest) > 2 or (rtype.namespaced is False and namespace) \
                or (rtype.namespaced and name is not None and namespace is None):
            raise _not_found_path()
        verb = self._verb(req, name)
        if verb not in rtype.verbs:
            raise _method_not_allowed()
        state.calls[(verb, rtype.key)] += 1
        if verb in ("list", "watch"):
            self._refuse(verb, rtype, "", namespace or "")
            return self.list_or_watch(rtype, namespace, req, verb)
        if verb == "get":
            assert name is not None
            self._refuse(verb, rtype, name, namespace or "")
            return json_response(200, self.view(rtype, self._existing(rtype, namespace, name)))
        if verb == "create":
            assert namespace is not None or not rtype.namespaced
            return self.create(rtype, namespace or "", req)
        if verb in ("update", "patch"):
            assert name is not None
            return self.update(rtype, namespace or "", name, req, verb)
        if verb == "delete":
            assert name is not None
            return self.delete(rtype, namespace or "", name, req)
        return self.delete_collection(rtype, namespace, req)

    @staticmethod
    def _verb(req: Request, name: str | None) -> str:
        if req.method == "GET":
            if name:
                return "get"
            return "watch" if req.arg("watch") in ("true", "1") else "list"
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        verb = verbs.get(req.method)
        if verb is None or (verb == "create") != (name is None):
            if verb == "delete" and name is None:
                return "deletecollection"
            raise _method_not_allowed()
        return verb

    def _refuse(self, verb: str, rtype: ResourceType, name: str, namespace: str) -> None:
        refusal = self.state.take_refusal(verb, rtype.key)
        if refusal is None:
            return
        if refusal.quota:
            raise forbidden_error(rtype.plural, rtype.group, name,
                                  "exceeded quota: sim-quota, requested: count/"
                                  f"{rtype.key}=1, used: count/{rtype.key}=10, limited: "
                                  f"count/{rtype.key}=10")
        if refusal.status == 409:
            raise already_exists(rtype.plural, rtype.group, name)
        if refusal.status == 500:
            raise internal_error(refusal.message or "injected failure from the simulator")
        if refusal.status == 403:
            where = f' in the namespace "{namespace}"' if namespace else ""
            raise ApiError(403, refusal.message or (
                f'{resources_label(rtype, name, verb)} is forbidden: User "{ADMIN_USER}" '
                f'cannot {verb} resource "{rtype.plural}" in API group "{rtype.group}"{where}'),
                details={"name": name, "group": rtype.group, "kind": rtype.plural}
                if verb != "create" else {"group": rtype.group, "kind": rtype.plural})
        raise ApiError(refusal.status, refusal.message or "injected failure from the simulator")

    # -- reads -----------------------------------------------------------------------

    def view(self, rtype: ResourceType, stored: Obj) -> Obj:
        obj = rtype.view(stored)
        if rtype.key == "resourcequotas":
            controllers.quota_view(self.state, obj)
        return obj

    def _existing(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.state.get(rtype.storage_key, namespace or "", name)
        if obj is None:
            raise not_found(rtype.plural, rtype.group, name)
        return obj

    def list_or_watch(self, rtype: ResourceType, namespace: str | None, req: Request,
                      verb: str) -> Response | WatchPlan:
        labels = label_matcher(req.arg("labelSelector"))
        fields = field_matcher(req.arg("fieldSelector"), rtype.field_getters)
        if verb == "watch":
            rv = req.arg("resourceVersion")
            since: int | None = None
            if rv not in (None, "", "0"):
                try:
                    since = int(rv)  # type: ignore[arg-type]
                except ValueError as e:
                    raise bad_request(f"invalid resource version: {rv}") from e
            timeout = float(req.arg("timeoutSeconds") or 1800)
            return WatchPlan(rtype, namespace, labels, fields, since, timeout)
        if rtype.key == PROJECT_REQUESTS:
            # OpenShift answers this list with a Status: "you may request projects".
            return json_response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                       "status": "Success"})
        items = [self.view(rtype, o) for o in self.state.items(rtype.storage_key, namespace)]
        items = [o for o in items
                 if labels(o["metadata"].get("labels") or {}) and fields(o)]
        meta: Obj = {"resourceVersion": str(self.state.rv)}
        items = self._paginate(items, req, meta)
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return json_response(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                                   "metadata": meta, "items": items})

    @staticmethod
    def _paginate(items: list[Obj], req: Request, meta: Obj) -> list[Obj]:
        token = req.arg("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))
            except ValueError as e:
                raise bad_request(f"continue key is not valid: {e}") from e
            items = [o for o in items
                     if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start]
        limit = int(req.arg("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                [last.get("namespace", ""), last["name"]]).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return items

    # -- writes ----------------------------------------------------------------------

    def _decode(self, rtype: ResourceType, req: Request) -> tuple[Obj, list[str]]:
        body, duplicates = _load_json(req)
        if not isinstance(body, dict):
            raise bad_request(f"{rtype.kind} in version \"{rtype.version}\" cannot be handled "
                              f"as a {rtype.kind}: json: cannot unmarshal array into Go value "
                              f"of type struct")
        validation.body_kind(body, rtype.kind, rtype.api_version)
        decoded = schema.decode(body, rtype.model, rtype.kind, rtype.version, duplicates)
        warnings = schema.apply_field_validation(decoded, req.arg("fieldValidation"))
        obj = decoded.obj
        obj.setdefault("metadata", {})
        return obj, warnings

    def create(self, rtype: ResourceType, namespace: str, req: Request) -> Response:
        state = self.state
        obj, warnings = self._decode(rtype, req)
        meta = obj["metadata"]
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "selfLink", "managedFields", "generation"):
            meta.pop(key, None)
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + controllers.random_suffix()
        name = meta.get("name", "")
        self._refuse("create", rtype, name, namespace)
        if rtype.key in STATUS_SUBRESOURCE:
            obj.pop("status", None)
        if rtype.namespaced:
            controllers.namespace_usable(state, namespace, rtype.plural, rtype.group, name)
        if rtype.key == PROJECT_REQUESTS:
            return self._project_request(rtype, obj, warnings, req)
        self._default(rtype, obj)
        causes = validation.metadata(obj, rtype.name_rule, rtype.namespaced)
        if not causes:
            causes = rtype.validate(obj)
        if causes:
            raise invalid_error(rtype.kind, rtype.group, name, causes)
        if rtype.key == "pods":
            controllers.pod_admit(state, obj)
        stored = rtype.to_storage(obj) if rtype.to_storage else obj
        if state.get(rtype.storage_key, namespace if rtype.namespaced else "", name):
            raise already_exists(rtype.plural, rtype.group, name)
        if req.arg("dryRun") == "All":
            controllers.stamp(stored)
            return json_response(201, self.view(rtype, stored), warnings)
        controllers.create_object(state, rtype.storage_key, stored)
        return json_response(201, self.view(rtype, stored), warnings)

    @staticmethod
    def _default(rtype: ResourceType, obj: Obj) -> None:
        if rtype.key == "namespaces":
            controllers.namespace_defaults(obj)
        elif rtype.key == "pods":
            controllers.pod_defaults(obj)
        elif rtype.key == "secrets":
            controllers.secret_defaults(obj)
        elif rtype.key.startswith("rolebindings."):
            for subject in obj.get("subjects") or []:
                if subject.get("kind") in ("User", "Group") and not subject.get("apiGroup"):
                    subject["apiGroup"] = validation.RBAC_GROUP

    def _project_request(self, rtype: ResourceType, request: Obj, warnings: list[str],
                         req: Request) -> Response:
        """Create a project the way OpenShift's default project template does: a
        namespace with the requester and display-name annotations (the
        request's own labels are not carried over) and an admin binding."""
        state = self.state
        name = request["metadata"].get("name", "")
        causes = validation.metadata(request, "label", False)
        if name.startswith(("openshift-", "kube-")) or name in ("openshift", "kubernetes",
                                                                 "default"):
            causes.append(invalid("metadata.name", name,
                                  "cannot request a project with a reserved name"))
        if causes:
            raise invalid_error("ProjectRequest", PROJECT_GROUP, name, causes)
        if state.get("namespaces", "", name) is not None:
            raise already_exists("projects", PROJECT_GROUP, name)
        ns: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name,
            "annotations": {"openshift.io/description": request.get("description", ""),
                            "openshift.io/display-name": request.get("displayName", ""),
                            "openshift.io/requester": ADMIN_USER}}}
        controllers.namespace_defaults(ns)
        project = resources.find(self.resources, PROJECT_GROUP, "v1", "projects")
        assert project is not None
        if req.arg("dryRun") == "All":
            controllers.stamp(ns)
            return json_response(201, self.view(project, ns), warnings)
        controllers.create_object(state, "namespaces", ns)
        controllers.create_object(state, f"rolebindings.{validation.RBAC_GROUP}", {
            "apiVersion": f"{validation.RBAC_GROUP}/v1", "kind": "RoleBinding",
            "metadata": {"name": "admin", "namespace": name},
            "roleRef": {"apiGroup": validation.RBAC_GROUP, "kind": "ClusterRole",
                        "name": "admin"},
            "subjects": [{"apiGroup": validation.RBAC_GROUP, "kind": "User",
                          "name": ADMIN_USER}]})
        return json_response(201, self.view(project, ns), warnings)

    def update(self, rtype: ResourceType, namespace: str, name: str, req: Request,
               verb: str) -> Response:
        state = self.state
        current = self._existing(rtype, namespace, name)
        self._refuse(verb, rtype, name, namespace)
        if verb == "patch":
            body = self._patched(rtype, current, req)
            req = Request(req.method, req.path, req.query, req.headers,
                          json.dumps(body).encode())
        obj, warnings = self._decode(rtype, req)
        meta = obj["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the "
                              f"name on the URL ({name})")
        if rtype.namespaced and meta.get("namespace", namespace) != namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        old = self.view(rtype, current)
        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"][
                "resourceVersion"]:
            raise conflict(rtype.plural, rtype.group, name)
        for key in ("uid", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "generateName"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["name"] = name
        if rtype.namespaced:
            meta["namespace"] = namespace
        if rtype.key in STATUS_SUBRESOURCE:
            obj["status"] = old.get("status", {})
        causes = validation.metadata(obj, rtype.name_rule, rtype.namespaced)
        causes += self._immutable(rtype, old, obj)
        if not causes:
            causes = rtype.validate(obj)
        if causes:
            raise invalid_error(rtype.kind, rtype.group, name, causes)
        stored = rtype.to_storage(obj) if rtype.to_storage else obj
        if req.arg("dryRun") == "All":
            return json_response(200, self.view(rtype, stored), warnings)
        state.put(rtype.storage_key, stored, "MODIFIED")
        return json_response(200, self.view(rtype, stored), warnings)

    def _immutable(self, rtype: ResourceType, old: Obj, new: Obj) -> list[Any]:
        if rtype.key == "namespaces":
            new["spec"] = old.get("spec", {})
            new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
                old["metadata"]["name"]
        if rtype.key == "pods":
            spec = copy.deepcopy(new.get("spec") or {})
            wanted = copy.deepcopy(old["spec"])
            for key in ("containers", "initContainers"):
                for c_new, c_old in zip(spec.get(key, []), wanted.get(key, []), strict=False):
                    c_old["image"] = c_new.get("image")
            wanted["activeDeadlineSeconds"] = spec.get("activeDeadlineSeconds")
            spec.setdefault("activeDeadlineSeconds", None)
            probe = {"metadata": {}, "spec": spec}
            controllers.pod_defaults(probe)
            spec = probe["spec"]
            spec["nodeName"] = old["spec"].get("nodeName")
            if old["spec"].get("nodeName") is None:
                spec.pop("nodeName")
            if spec != wanted:
                return [forbidden(
                    "spec", "pod updates may not change fields other than "
                    "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to "
                    "be set to 1 if it was previously negative)")]
            if spec.get("activeDeadlineSeconds") is None:
                spec.pop("activeDeadlineSeconds", None)
            new["spec"] = spec
        if rtype.key.startswith("rolebindings.") and rtype.group == validation.RBAC_GROUP:
            if new.get("roleRef") != old.get("roleRef"):
                return [invalid("roleRef", new.get("roleRef"), "cannot change roleRef")]
        return []

    def _patched(self, rtype: ResourceType, current: Obj, req: Request) -> Obj:
        content_type = req.headers.get("content-type", "").split(";")[0].strip()
        patch, _ = _load_json(req)
        target = self.view(rtype, current)
        if content_type == "application/json-patch+json":
            return _json_patch(target, patch)
        if content_type == "application/merge-patch+json":
            return _merge_patch(target, patch, strategic=False)
        if content_type == "application/strategic-merge-patch+json":
            if rtype.group not in ("", validation.RBAC_GROUP):
                raise ApiError(415, "strategic merge patch is not supported for "
                                    f"{rtype.key}; use a merge patch")
            return _merge_patch(target, patch, strategic=True)
        raise ApiError(415, f"the server does not support the media type {content_type!r} "
                            "(the simulator has no server-side apply)")

    def delete(self, rtype: ResourceType, namespace: str, name: str, req: Request) -> Response:
        current = self._existing(rtype, namespace, name)
        self._refuse("delete", rtype, name, namespace)
        options = self._delete_options(req)
        pre = options.get("preconditions") or {}
        meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(rtype.plural, rtype.group, name)
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rtype.plural, rtype.group, name)
        dry_run = req.arg("dryRun") == "All" or options.get("dryRun") == ["All"]
        if dry_run:
            return json_response(200, self.view(rtype, current))
        return json_response(200, self._delete_one(rtype, current, options))

    def _delete_one(self, rtype: ResourceType, current: Obj, options: Obj) -> Obj:
        state = self.state
        meta = current["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        if rtype.key == "namespaces":
            return self.view(rtype, controllers.namespace_delete(state, current))
        if rtype.key == PROJECTS:
            controllers.namespace_delete(state, current)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        if rtype.key == "pods":
            return self.view(rtype, controllers.pod_delete(
                state, current, options.get("gracePeriodSeconds")))
        removed = state.remove(rtype.storage_key, namespace, name)
        assert removed is not None
        if rtype.key == "serviceaccounts":
            controllers.serviceaccount_deleted(state, removed)
        if rtype.returns_deleted_object:
            return self.view(rtype, removed)
        return success_status(rtype.plural, rtype.group, name, meta["uid"])

    def _delete_options(self, req: Request) -> Obj:
        options: Obj = {}
        if req.body:
            body, _ = _load_json(req)
            if isinstance(body, dict):
                options = schema.decode(body, "V1DeleteOptions", "DeleteOptions", "v1").obj
        for arg, key in (("gracePeriodSeconds", "gracePeriodSeconds"),
                         ("propagationPolicy", "propagationPolicy")):
            value = req.arg(arg)
            if value is not None:
                options[key] = int(value) if key == "gracePeriodSeconds" else value
        policy = options.get("propagationPolicy")
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            raise invalid_error("DeleteOptions", "", "", [unsupported(
                "propagationPolicy", policy, ["Foreground", "Background", "Orphan", "nil"])])
        return options

    def delete_collection(self, rtype: ResourceType, namespace: str | None,
                          req: Request) -> Response:
        self._refuse("deletecollection", rtype, "", namespace or "")
        labels = label_matcher(req.arg("labelSelector"))
        fields = field_matcher(req.arg("fieldSelector"), rtype.field_getters)
        options = self._delete_options(req)
        deleted = []
        for stored in self.state.items(rtype.storage_key, namespace):
            obj = self.view(rtype, stored)
            if labels(obj["metadata"].get("labels") or {}) and fields(obj):
                result = self._delete_one(rtype, stored, options)
                deleted.append(result if result.get("kind") != "Status" else obj)
        return json_response(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                                   "metadata": {"resourceVersion": str(self.state.rv)},
                                   "items": deleted})

    # -- discovery -------------------------------------------------------------------

    def discovery(self, parts: list[str]) -> Response:
        groups = resources.group_versions(self.resources)
        if parts == ["version"]:
            return json_response(200, SERVER_VERSION)
        if parts == ["api"]:
            address = self.state.server_url.split("://", 1)[-1]
            return json_response(200, {"kind": "APIVersions", "versions": ["v1"],
                                       "serverAddressByClientCIDRs": [
                                           {"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": address}]})
        if parts == ["api", "v1"]:
            return json_response(200, self._resource_list("", "v1"))
        if parts == ["apis"]:
            return json_response(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                       "groups": [self._group(g, v) for g, v in groups.items()]})
        group = parts[1]
        if group not in groups:
            raise _not_found_path()
        if len(parts) == 2:
            return json_response(200, {"kind": "APIGroup", "apiVersion": "v1",
                                       **self._group(group, groups[group])})
        if parts[2] not in groups[group]:
            raise _not_found_path()
        return json_response(200, self._resource_list(group, parts[2]))

    @staticmethod
    def _group(group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _resource_list(self, group: str, version: str) -> Obj:
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [resources.discovery_entry(r) for r in self.resources
                              if r.group == group and r.version == version]}


def resources_label(rtype: ResourceType, name: str, verb: str) -> str:
    plural = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    return plural if verb == "create" or not name else f'{plural} "{name}"'


# -- patch formats ------------------------------------------------------------------------

def _merge_patch(target: Any, patch: Any, strategic: bool) -> Any:
    """RFC 7386 merge patch; ``strategic`` also merges lists of named objects
    (containers, volumes, env...) by ``name``, the merge key of most of them."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif (strategic and isinstance(value, list) and isinstance(out.get(key), list)
              and all(isinstance(v, dict) and "name" in v for v in value + out[key])):
            merged = {item["name"]: item for item in out[key]}
            order = [item["name"] for item in out[key]]
            for item in value:
                if item.get("$patch") == "delete":
                    merged.pop(item["name"], None)
                    continue
                if item["name"] not in merged:
                    order.append(item["name"])
                merged[item["name"]] = _merge_patch(merged.get(item["name"], {}), item, True)
            out[key] = [merged[n] for n in order if n in merged]
        else:
            out[key] = _merge_patch(out.get(key), value, strategic)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch(target: Obj, operations: Any) -> Obj:
    """RFC 6902 (add, remove, replace, test, copy, move)."""
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)

    def parent(tokens: list[str]) -> tuple[Any, str]:
        node: Any = doc
        for token in tokens[:-1]:
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node, tokens[-1]

    def get(path: str) -> Any:
        node: Any = doc
        for token in _pointer(path):
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def add(path: str, value: Any) -> None:
        node, last = parent(_pointer(path))
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[last] = value

    def remove(path: str) -> Any:
        node, last = parent(_pointer(path))
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    try:
        for op in operations:
            kind, path = op.get("op"), op.get("path", "")
            if kind == "add":
                add(path, op["value"])
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, op["value"])
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, f"the server rejected our request due to an error in "
                                        f"our request: testing value {path} failed")
            elif kind == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            elif kind == "move":
                add(path, remove(op["from"]))
            else:
                raise bad_request(f"Unexpected kind: {kind}")
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, f"the server rejected our request due to an error in our "
                            f"request: {e}") from e
    return doc
