"""Which endpoints a ``Balancer`` may pick from, before health and the picker have a say.

Two steps, both pure functions of an answer:

1. ``usable()``: ready endpoints that are not terminating. When there are none, the
   terminating endpoints that still serve (a rollout's last pods draining), as
   kube-proxy falls back to them. Each address once.
2. ``Topology.layers()``: those endpoints as layers from most to least local (same
   node, same zone, all), following the caller's preference. The balancer takes the
   first layer with an endpoint that is not ejected, so traffic stays local while a
   local endpoint can take it and spills over when none can.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._exceptions import ConfigurationError, NoReadyEndpoints
from ._models import Endpoint, Resolution, distinct

PREFER_SAME_ZONE = "PreferSameZone"
PREFER_SAME_NODE = "PreferSameNode"
#: Kubernetes' first name for PreferSameZone (``trafficDistribution``, 1.31-1.32).
PREFER_CLOSE = "PreferClose"
PREFERENCES = (PREFER_SAME_ZONE, PREFER_SAME_NODE, PREFER_CLOSE)

Layers = tuple[tuple[Endpoint, ...], ...]


def usable(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """Ready, not terminating; else terminating but serving; else nothing."""
    endpoints = tuple(endpoints)
    ready = distinct(ep for ep in endpoints if ep.ready and not ep.terminating)
    if ready:
        return ready
    return distinct(ep for ep in endpoints if ep.terminating and ep.serving)


def _why_none(endpoints: tuple[Endpoint, ...]) -> str:
    if not endpoints:
        return "it has no endpoints"
    terminating = sum(1 for ep in endpoints if ep.terminating)
    not_ready = len(endpoints) - terminating
    parts = []
    if not_ready:
        parts.append(f"{not_ready} not ready")
    if terminating:
        parts.append(f"{terminating} terminating and not serving")
    return f"of {len(endpoints)} endpoints, " + ", ".join(parts)


def no_ready(endpoints: tuple[Endpoint, ...], resolution: Resolution | None) -> NoReadyEndpoints:
    """The error for an answer with nothing usable, saying what its endpoints were."""
    why = _why_none(endpoints)
    if resolution is None:
        return NoReadyEndpoints(f"no ready endpoint to pick from: {why}")
    return NoReadyEndpoints(
        f"{resolution.service} has no ready endpoint to pick from: {why}",
        service=resolution.service,
    )


def _optional_str(value: object, where: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{where} must be a str or None, not {value!r}")


@attrs.frozen(kw_only=True)
class Topology:
    """Where the caller runs, and whether to prefer endpoints near it.

    What `Balancer.topology` holds, made from the balancer's ``zone``, ``node`` and
    ``preference``. An endpoint whose zone or node is unknown is never local; with no
    ``zone`` or ``node`` given, nothing is.

    Attributes:
        zone: The caller's zone, or None when unknown.
        node: The caller's node name, or None when unknown.
        preference: ``"PreferSameZone"`` (``"PreferClose"`` is the same),
            ``"PreferSameNode"`` (then the same zone, then all), or None: follow
            each Service's ``trafficDistribution``.

    Raises:
        ConfigurationError: ``zone`` or ``node`` is not a str, or ``preference`` is
            not one of the names above.
    """

    zone: str | None = None
    node: str | None = None
    preference: str | None = None

    def __attrs_post_init__(self) -> None:
        _optional_str(self.zone, "Balancer.zone")
        _optional_str(self.node, "Balancer.node")
        if self.preference is not None and self.preference not in PREFERENCES:
            raise ConfigurationError(
                f"Balancer.preference must be one of {', '.join(PREFERENCES)} or None, "
                f"not {self.preference!r}"
            )

    def layers(self, usable: tuple[Endpoint, ...], resolution: Resolution | None) -> Layers:
        """``usable`` as layers from most to least preferred; the last is ``usable``.

        The one place topology is decided, as kube-proxy decides it. The caller's
        ``preference``, else the Service's ``trafficDistribution`` (on
        ``resolution``), says whether to prefer near endpoints. Near is read from the
        EndpointSlice hints when every usable endpoint has them (an endpoint hinted
        for the caller's zone or node serves it), else from the endpoints' own zone
        and node: kube-proxy too ignores hints unless all endpoints carry them.

        Args:
            usable: The usable endpoints of an answer.
            resolution: The answer they come from (for its Service's
                ``trafficDistribution``), or None for a bare list.

        Returns:
            tuple[tuple[Endpoint, ...], ...]: The layers, none empty (one when no
            preference applies).
        """
        preference = self.preference
        if preference is None and resolution is not None:
            wanted = resolution.traffic_distribution
            preference = wanted if wanted in PREFERENCES else None
        if preference is None or not usable:
            return (usable,)
        layers: list[tuple[Endpoint, ...]] = []
        node, zone = self.node, self.zone
        if preference == PREFER_SAME_NODE and node is not None:
            if all(ep.node_hints for ep in usable):
                layers.append(tuple(ep for ep in usable if node in ep.node_hints))
            else:
                layers.append(tuple(ep for ep in usable if ep.node == node))
        if zone is not None:
            if all(ep.zone_hints for ep in usable):
                layers.append(tuple(ep for ep in usable if zone in ep.zone_hints))
            else:
                layers.append(tuple(ep for ep in usable if ep.zone == zone))
        layers.append(usable)
        # Drop empty layers and those the same as the next (they add nothing).
        kept = [
            layer
            for i, layer in enumerate(layers)
            if layer and (i + 1 == len(layers) or layer != layers[i + 1])
        ]
        return tuple(kept)


def candidate_layers(
    endpoints: tuple[Endpoint, ...], topology: Topology, resolution: Resolution | None
) -> Layers:
    """The candidate rules and the topology step, in order; NoReadyEndpoints when
    nothing is usable."""
    found = usable(endpoints)
    if not found:
        raise no_ready(endpoints, resolution)
    return topology.layers(found, resolution)
