"""The operator's API calls as RBAC sees them, and the RBAC the chart grants it.

``operator_calls`` reads the emulator's request log (kmock's, plus the namespace
list/watch the harness serves itself) and keeps the requests that carry the
kubeconfig's token, i.e. those of kopf and of the operator's own client; the
tests playing the user and the controllers send none. Each becomes a ``Call``
with the attributes the API server's authorizer decides on: verb, API group,
resource, subresource, namespace and name, derived from the HTTP method, path
and query as the API server does (``RequestInfoFactory``): GET on a collection
is ``list``, with ``watch=true`` it is ``watch``, on a named object ``get``;
POST ``create``, PUT ``update``, PATCH ``patch``; DELETE on a named object
``delete``, on a collection ``deletecollection``. Paths outside a resource
(``/api``, ``/apis/<group>/<version>``, ``/version``) are non-resource URLs.

``chart_rbac`` renders the chart with ``helm template`` for one mode and
collects the rules bound to the operator's ServiceAccount: a ClusterRole
(through a ClusterRoleBinding) applies everywhere, a Role (through a
RoleBinding) only in its namespace. Kubernetes' default ``system:discovery``
role, bound to every authenticated user, is added for the discovery URLs.

``justified_verbs`` reads the ``# needed: <verbs> -- <reason>`` comments of
``templates/operator-rbac.yaml`` (the convention is in docs/operator.md):
verbs granted although no test scenario exercises them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from tests.chart.tools import CHART, CI_VALUES, by_kind, render
from tests.operator.harness import OPERATOR_TOKEN

RBAC_TEMPLATE = CHART / "templates" / "operator-rbac.yaml"
WATCHED_NAMESPACE = "docs"  # the namespace of the operator scenarios (conftest.NAMESPACE)
CLUSTER_WIDE = "cluster-wide (operator.watchNamespaces empty)"
NAMESPACED = f"namespaced (operator.watchNamespaces=[{WATCHED_NAMESPACE}])"
MODE_SETS = {CLUSTER_WIDE: [], NAMESPACED: [f"operator.watchNamespaces={{{WATCHED_NAMESPACE}}}"]}

# RequestInfoFactory: the verb an HTTP method means before list/watch/deletecollection.
_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
# Kubernetes' bootstrap ClusterRole system:discovery, bound to system:authenticated.
_DISCOVERY_URLS = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
)
_NEEDED = re.compile(r"#\s*needed:\s*(?P<verbs>[a-z][a-z, ]*?)\s+--\s+(?P<reason>\S.*)$")


@dataclass(frozen=True, order=True)
class Call:
    """One request in the terms RBAC decides on."""

    verb: str
    group: str
    resource: str  # with "/subresource"; empty for a non-resource URL
    namespace: str  # empty: cluster-scoped or across all namespaces
    name: str
    path: str  # the URL path (all a non-resource URL is)

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    def __str__(self) -> str:
        if not self.is_resource:
            return f"{self.verb} {self.path} (non-resource URL)"
        where = f"namespace {self.namespace}" if self.namespace else "cluster scope"
        name = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{name} in {where}"


def parse_call(method: str, path: str, query: Mapping[str, str]) -> Call:
    """The RBAC attributes of one HTTP request, as the API server derives them."""
    verb = _VERBS.get(method.upper(), method.lower())
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = []
    if not rest:  # /api, /apis/<group>/<version>, /version, ...: discovery
        return Call(method.lower(), "", "", "", "", path)
    if rest[0] == "watch":  # the deprecated /watch/ prefix
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if verb == "get" and not name:
        verb = "watch" if query.get("watch") in {"true", "1"} else "list"
    if verb == "delete" and not name:
        verb = "deletecollection"
    return Call(verb, group, resource, namespace, name, path)


def _bearer(headers: Mapping[str, str]) -> str:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), "")


def operator_calls(log: Iterable[Any]) -> list[Call]:
    """The operator's requests in an emulator's log (kmock requests), as ``Call``s."""
    return [
        parse_call(request.method.value, request.url.path, request.params)
        for request in log
        if _bearer(request.headers) == f"Bearer {OPERATOR_TOKEN}"
    ]


@dataclass(frozen=True)
class Rule:
    """One PolicyRule."""

    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str]
    urls: tuple[str, ...]

    @classmethod
    def from_manifest(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            groups=frozenset(rule.get("apiGroups") or ()),
            resources=frozenset(rule.get("resources") or ()),
            verbs=frozenset(rule.get("verbs") or ()),
            names=frozenset(rule.get("resourceNames") or ()),
            urls=tuple(rule.get("nonResourceURLs") or ()),
        )

    def allows(self, call: Call) -> bool:
        if not ({"*", call.verb} & self.verbs):
            return False
        if not call.is_resource:
            return any(
                call.path == url or (url.endswith("*") and call.path.startswith(url[:-1]))
                for url in self.urls
            )
        base, _, sub = call.resource.partition("/")
        wanted = {"*", call.resource} | ({f"*/{sub}"} if sub else set())
        return (
            bool({"*", call.group} & self.groups)
            and bool(wanted & self.resources)
            and (not self.names or call.name in self.names)
        )

    def grants(self) -> list[tuple[str, str, str]]:
        """(group, resource, verb) of every resource permission."""
        return sorted(itertools.product(self.groups, self.resources, self.verbs))


@dataclass(frozen=True)
class Grant:
    """The rules of one role as bound to the operator: everywhere, or in one namespace."""

    source: str
    namespace: str | None  # None: a ClusterRoleBinding
    rules: tuple[Rule, ...]
    from_chart: bool = True

    def allows(self, call: Call) -> bool:
        in_scope = self.namespace is None or (call.is_resource and call.namespace == self.namespace)
        return in_scope and any(rule.allows(call) for rule in self.rules)


@dataclass(frozen=True)
class RuleSet:
    """What the operator's ServiceAccount may do in one mode of the chart."""

    mode: str
    grants: tuple[Grant, ...]

    def allows(self, call: Call) -> bool:
        return any(grant.allows(call) for grant in self.grants)

    def denied(self, calls: Iterable[Call]) -> list[Call]:
        return sorted({call for call in calls if not self.allows(call)})

    def unused(
        self, calls: Iterable[Call], justified: Mapping[tuple[str, str, str], str]
    ) -> list[str]:
        """Granted (group, resource, verb) no call used, unless a comment says why it is needed."""
        calls = list(calls)
        missing = []
        for grant in self.grants:
            if not grant.from_chart:
                continue
            for rule in grant.rules:
                for group, resource, verb in rule.grants():
                    used = any(
                        (call.verb, call.group, call.resource) == (verb, group, resource)
                        and grant.allows(call)
                        for call in calls
                    )
                    if not used and (group, resource, verb) not in justified:
                        missing.append(f"{grant.source}: {verb} {group or 'core'}/{resource}")
        return missing

    def __str__(self) -> str:
        lines = [f"RBAC of the chart, {self.mode}:"]
        for grant in self.grants:
            lines.append(f"  {grant.source}")
            for rule in grant.rules:
                what = sorted(rule.resources) or list(rule.urls)
                lines.append(f"    {sorted(rule.groups)} {what}: {sorted(rule.verbs)}")
        return "\n".join(lines)


def _bound_to(binding: Mapping[str, Any], account: Mapping[str, Any]) -> bool:
    meta = account["metadata"]
    return any(
        subject.get("kind") == "ServiceAccount"
        and subject.get("name") == meta["name"]
        and subject.get("namespace") == meta["namespace"]
        for subject in binding.get("subjects") or []
    )


def rule_set(objects: list[dict[str, Any]], mode: str) -> RuleSet:
    """The rules a rendered chart binds to the operator's ServiceAccount."""
    accounts = [
        obj
        for obj in by_kind(objects, "ServiceAccount")
        if obj["metadata"]["name"].endswith("-operator")
    ]
    assert len(accounts) == 1, "one operator ServiceAccount"
    account = accounts[0]
    roles = {
        (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]): obj
        for obj in by_kind(objects, "ClusterRole") + by_kind(objects, "Role")
    }
    grants = []
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        if not _bound_to(binding, account):
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        key = (ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{binding['kind']} {binding['metadata']['name']} binds no role"
        rules = tuple(Rule.from_manifest(rule) for rule in roles[key].get("rules") or [])
        where = f" in namespace {namespace}" if namespace else ""
        source = f"{ref['kind']} {ref['name']}{where}"
        grants.append(Grant(source=source, namespace=namespace, rules=rules))
    discovery = Rule(frozenset(), frozenset(), frozenset({"get"}), frozenset(), _DISCOVERY_URLS)
    grants.append(
        Grant(
            source="ClusterRole system:discovery (Kubernetes default, all authenticated users)",
            namespace=None,
            rules=(discovery,),
            from_chart=False,
        )
    )
    return RuleSet(mode=mode, grants=tuple(grants))


@cache
def chart_rbac(mode: str) -> RuleSet:
    """The operator's RBAC as ``helm template`` renders it in ``mode`` (cached per session)."""
    minimal = next(path for path in CI_VALUES if path.stem == "minimal-values")
    return rule_set(render(minimal, sets=MODE_SETS[mode]), mode)


def justified_verbs(source: str | None = None) -> dict[tuple[str, str, str], str]:
    """(group, resource, verb) -> reason, from the ``# needed:`` comments above each rule.

    A rule's comments are the comment lines right above its ``- apiGroups:`` line; a
    ``# needed: <verb>[, <verb>] -- <reason>`` line there justifies those verbs of that rule.
    """
    lines = (source if source is not None else RBAC_TEMPLATE.read_text()).splitlines()
    justified: dict[tuple[str, str, str], str] = {}
    for index, line in enumerate(lines):
        if not line.strip().startswith("- apiGroups:"):
            continue
        comments = list(
            itertools.takewhile(lambda text: text.strip().startswith("#"), reversed(lines[:index]))
        )
        end = next(i for i in range(index, len(lines)) if lines[i].strip().startswith("verbs:"))
        body = "\n".join(
            text.strip() if i == index else "  " + text.strip()
            for i, text in enumerate(lines[index : end + 1], index)
        )
        assert "{{" not in body, f"RBAC rule with template actions: {body}"
        rule = Rule.from_manifest(yaml.safe_load(body)[0])
        for comment in comments:
            if not re.match(r"#\s*needed\b", comment.strip()):
                continue
            match = _NEEDED.match(comment.strip())
            assert match, f"'{comment.strip()}' is not '# needed: <verb>[, <verb>] -- <reason>'"
            for verb in re.split(r"[,\s]+", match["verbs"].strip()):
                assert verb in rule.verbs, f"'{comment.strip()}' names {verb}, which the rule lacks"
                for group, resource in itertools.product(rule.groups, rule.resources):
                    justified[(group, resource, verb)] = match["reason"]
    return justified


def mode_of(watch_namespaces: tuple[str, ...]) -> str:
    """The chart mode matching an operator's ``WATCH_NAMESPACES``."""
    if not watch_namespaces:
        return CLUSTER_WIDE
    assert watch_namespaces == (WATCHED_NAMESPACE,), f"no chart mode renders {watch_namespaces}"
    return NAMESPACED


def assert_allowed(calls: Iterable[Call], mode: str) -> None:
    """Fail naming every call the chart's RBAC in ``mode`` does not allow."""
    rules = chart_rbac(mode)
    denied = rules.denied(calls)
    assert not denied, (
        "the operator made calls its RBAC does not allow:\n"
        + "\n".join(f"  {call}  ({call.path})" for call in denied)
        + f"\n{rules}"
    )
