"""The route tree: which receiver takes an alert and how alerts are grouped.

As in Alertmanager, an alert walks down from the root: the first child
whose matchers it meets takes it (and its children are tried in turn),
unless that child says ``continue``, in which case later siblings may take
it too. A node with no matching child takes the alert itself. Settings a
node leaves out are inherited from its parent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from verger.config.alerting import TIERS, Route
from verger.monitor.alerting.matchers import (
    Matcher,
    equal_matchers,
    matches_all,
    regex_matchers,
)

GROUP_BY = ("alertname", "environment")
# Short, because the alerts of one cause fire in the same evaluation: a page
# should not wait longer than it takes to gather them.
GROUP_WAIT = 2.0
GROUP_INTERVAL = 300.0
REPEAT_INTERVAL = 4 * 3600.0
TIER_REPEAT = {"critical": 3600.0, "medium": 86400.0}
"""A page is repeated every hour while it fires; a ticket needs no reminder for a day."""
FALLBACK = {"critical": ("email", "ticket"), "high": ("page", "ticket")}
"""Where a tier goes when its own receiver is not configured: a more urgent one first."""


@dataclass(frozen=True)
class RouteNode:
    """One node of the tree, with every setting resolved against its parents."""

    path: str
    matchers: tuple[Matcher, ...]
    receiver: str | None
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    keep_going: bool = False
    children: tuple[RouteNode, ...] = field(default=())

    def route(self, labels: Mapping[str, str]) -> list[RouteNode]:
        """The nodes that take an alert with ``labels``, starting at this one."""
        if not matches_all(self.matchers, labels):
            return []
        taken: list[RouteNode] = []
        for child in self.children:
            found = child.route(labels)
            if found:
                taken.extend(found)
                if not child.keep_going:
                    break
        return taken or [self]

    def group_key(self, labels: Mapping[str, str]) -> str:
        """The identity of the group an alert joins here, stable across restarts."""
        values = ",".join(f'{name}="{labels.get(name, "")}"' for name in self.group_by)
        return f"{self.path}:{{{values}}}"

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        return {name: labels[name] for name in self.group_by if name in labels}


def build_tree(route: Route | None, receivers: Mapping[str, object]) -> RouteNode:
    """The tree from the config's ``route:``, or the tiers' default tree.

    A ``route:`` that names neither a receiver nor child routes only sets
    timings and grouping: the tiers' default children are put under it.
    """
    tiers = default_route(list(receivers))
    if route is None:
        route = tiers
    elif route.receiver is None and not route.routes:
        route = route.model_copy(
            update={"receiver": tiers.receiver, "routes": tiers.routes}
        )
    return _node(route, "0", None)


def default_route(receivers: list[str]) -> Route:
    """Critical to ``page``, high to ``email``, medium to ``ticket``, when they exist.

    A tier whose receiver is missing goes to the next one listed in
    ``FALLBACK`` that exists; anything left goes to the first receiver.
    """
    children = []
    for severity, name in TIERS.items():
        choices = (name, *FALLBACK.get(severity, ()))
        target = next((choice for choice in choices if choice in receivers), None)
        if target is not None:
            route = Route(match={"severity": severity}, receiver=target)
            repeat = TIER_REPEAT.get(severity)
            if repeat is not None:
                route = route.model_copy(update={"repeat_interval": repeat})
            children.append(route)
    root = receivers[0] if receivers else None
    return Route(receiver=root, routes=children)


def _node(route: Route, path: str, parent: RouteNode | None) -> RouteNode:
    inherited = parent or RouteNode(
        path="",
        matchers=(),
        receiver=None,
        group_by=GROUP_BY,
        group_wait=GROUP_WAIT,
        group_interval=GROUP_INTERVAL,
        repeat_interval=REPEAT_INTERVAL,
    )
    node = RouteNode(
        path=path,
        matchers=equal_matchers(route.match) + regex_matchers(route.match_re),
        receiver=route.receiver or inherited.receiver,
        group_by=tuple(route.group_by)
        if route.group_by is not None
        else inherited.group_by,
        group_wait=_pick(route.group_wait, inherited.group_wait),
        group_interval=_pick(route.group_interval, inherited.group_interval),
        repeat_interval=_pick(route.repeat_interval, inherited.repeat_interval),
        keep_going=route.keep_going,
    )
    children = tuple(
        _node(child, f"{path}.{index}", node)
        for index, child in enumerate(route.routes)
    )
    return replace(node, children=children)


def _pick(value: float | None, inherited: float) -> float:
    return inherited if value is None else value
