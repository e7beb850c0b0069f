"""Redis names of a live room. Every key and channel of a room shares one hash tag.

``{<prefix>room:<id>}`` is the tag, so a room's keys live in one Redis Cluster
slot: a Lua script over one room is cluster-safe, and the room's channel can
move to sharded pub/sub without renaming anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoomKeys:
    prefix: str
    stream_id: int

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}room:{self.stream_id}}}"

    @property
    def state(self) -> str:
        """hash: seq (last applied), coins (stream), unsettled (creator)."""
        return f"{self.tag}:state"

    @property
    def hist(self) -> str:
        """Redis Stream of recent gifts, entry id ``<seq>-0``, field ``g`` = GiftEvent JSON."""
        return f"{self.tag}:hist"

    @property
    def top(self) -> str:
        """zset sender_id -> coins given in this stream."""
        return f"{self.tag}:top"

    @property
    def names(self) -> str:
        """hash sender_id -> display name."""
        return f"{self.tag}:names"

    @property
    def live(self) -> str:
        """pub/sub channel of committed gifts and the end of the stream."""
        return f"{self.tag}:live"

    @property
    def presence(self) -> str:
        """hash gateway_id -> "<viewers>:<expires_ms>" (owned by streams.presence)."""
        return f"{self.tag}:presence"


def stream_id_of_channel(prefix: str, channel: str) -> int | None:
    """The stream id of a ``…:live`` channel name, or None if it is not one of ours."""
    head = f"{{{prefix}room:"
    if not channel.startswith(head) or not channel.endswith("}:live"):
        return None
    raw = channel[len(head):-len("}:live")]
    return int(raw) if raw.isdigit() else None
