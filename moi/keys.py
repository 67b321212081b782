"""Every Redis key and pub/sub channel name moi uses, in one place.

Layout (``P`` is the optional key prefix, so two applications can share one
Redis; pub/sub channels are not per-database, so they carry it too):

    P<id>                 string  the JSON info object of a job or group
    P<group>:jobs         set     ids of the direct children of a group
    P<id>:pubsub          channel announcements about that node
    Puser-id-map          hash    user name -> group id and group id -> user name
    P<id>:heartbeat       string  "host:pid" of the engine running a job; short TTL
    P<id>:cancel          string  set when cancellation of a running job is requested
    Pmoi:running          set     ids of jobs an engine has taken (heartbeat watched)
    Pmoi:queued           hash    job id -> JSON of the cluster it waits in
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

    def heartbeat(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}:heartbeat"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}:cancel"

    @property
    def running(self) -> str:
        return f"{self.prefix}moi:running"

    @property
    def queued(self) -> str:
        return f"{self.prefix}moi:queued"

    def node_of_channel(self, channel: str) -> str:
        """The id a channel name belongs to (inverse of ``channel``)."""
        return channel[len(self.prefix) : -len(":pubsub")]
