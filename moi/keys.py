"""Every Redis key and pub/sub channel name moi uses, in one place.

Layout (``P`` is the optional key prefix, so two applications can share one
Redis; pub/sub channels are not per-database, so they carry it too):

    P<id>                 string  the JSON info object of a job or group
    P<group>:jobs         set     ids of the direct children of a group
    P<id>:pubsub          channel announcements about that node
    Puser-id-map          hash    user name -> group id and group id -> user name
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = ""

    def info(self, node_id: str) -> str:
        return f"{self.prefix}{node_id}"

    def children(self, group_id: str) -> str:
        return f"{self.prefix}{group_id}:jobs"

    def channel(self, node_id: str) -> str:
        return f"{self.prefix}{node_id}:pubsub"

    @property
    def user_map(self) -> str:
        return f"{self.prefix}user-id-map"

    def node_of_channel(self, channel: str) -> str:
        """The id a channel name belongs to (inverse of ``channel``)."""
        return channel[len(self.prefix) : -len(":pubsub")]
