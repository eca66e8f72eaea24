"""The bus of one process: an event goes straight to the subscribers, in the same call."""

from __future__ import annotations

from collections.abc import Callable

from chatd.core.events import RoomEvent


class LocalBus:
    """
    :class:`chatd.core.ports.Bus` within one process (the default): ``publish``
    calls each subscriber at once, so a room's events reach its fan-out in
    the order they were published and the batching stays in
    ``chatd.broadcast``, once per reactor turn.
    """

    __slots__ = ("_receivers",)

    def __init__(self) -> None:
        self._receivers: tuple[Callable[[RoomEvent], None], ...] = ()

    def subscribe(self, receiver: Callable[[RoomEvent], None]) -> None:
        self._receivers += (receiver,)

    def publish(self, event: RoomEvent) -> None:
        for receiver in self._receivers:
            receiver(event)
