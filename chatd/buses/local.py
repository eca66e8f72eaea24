"""The bus of one process: an event goes straight to the subscribers, in the same call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chatd.core.events import RoomEvent
from chatd.core.ports import OnlineElsewhere

_NOBODY: Mapping[str, OnlineElsewhere] = {}


class LocalBus:
    """
    :class:`chatd.core.ports.Bus` within one process (the default): ``publish``
    calls each subscriber at once, so a room's events reach its fan-out in
    the order they were published and the batching stays in
    ``chatd.broadcast``, once per reactor turn.
    """

    __slots__ = ("_receivers", "publish")

    def __init__(self) -> None:
        self._receivers: tuple[Callable[[RoomEvent], None], ...] = ()
        #: Send ``event`` to every subscriber. With one subscriber (the state) it is that
        #: subscriber itself: one call less per line on the hot path.
        self.publish: Callable[[RoomEvent], None] = self._publish_all

    def subscribe(self, receiver: Callable[[RoomEvent], None]) -> None:
        self._receivers += (receiver,)
        self.publish = receiver if len(self._receivers) == 1 else self._publish_all

    def share(self, change: list[Any]) -> None:
        """A room change, for other nodes: there are none."""

    def elsewhere(self, room: str) -> list[str]:
        """The members of ``room`` on other nodes: there are none."""
        return []

    def online_elsewhere(self) -> Mapping[str, OnlineElsewhere]:
        """The users logged in on other nodes: there are none."""
        return _NOBODY

    def other_nodes(self) -> int:
        """How many other nodes there are: none."""
        return 0

    def _publish_all(self, event: RoomEvent) -> None:
        for receiver in self._receivers:
            receiver(event)
