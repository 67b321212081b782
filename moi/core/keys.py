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
    P<id>:call            string  a queued job's call (function and arguments), kept for relaunch
    P<id>:value           string  a job's return value or exception, when JSON cannot hold it
    Pmoi:queue:<ctx>      zset    ids of the jobs waiting for a context, by priority then order
    Pmoi:seq              string  the order of submission, shared by every context's queue
    Pmoi:fair:clock:<ctx>:<priority> string  the latest turn taken at that priority of that queue (fair share:
                          see moi.core.lua ENQUEUE); one per priority, so a take at one does not move another's
    Pmoi:fair:last:<owner>:<ctx>:<priority> string  the turn of that user's (group id's) last job queued there
    Pmoi:wake:<ctx>       channel announces new jobs in that queue (to dispatchers)
    Pmoi:wakeup:<ctx>     list    tokens that wake engines waiting for work in that queue
    Pmoi:dispatcher:<ctx> string  which process dispatches for that context (a lease)
    Pmoi:online:<ctx>     string  JSON: that context's cluster as its dispatcher last saw it
    Pmoi:active:<owner>   set     ids of the unfinished jobs of a user (their group id), for limits
    Pmoi:paused           set     paused scopes: context:<name>, group:<id> (a user is their group)
    Pmoi:held:<ctx>       zset    paused jobs of a context, with the scores they had in its queue
    Pmoi:retry:<ctx>      zset    jobs of a context waiting Queued for their next attempt, by when it is due
                          (epoch seconds); moi.queue.retries moves the due ones into the queue
    Pmoi:retrying         set     contexts whose retry zset may hold jobs (the watchdog's pass looks at these)
    Pmoi:index:<owner>    zset    ids of a user's jobs (their group id), by order of submission: the API's listing
    Pmoi:index            zset    ids of every user's jobs, the same way (an admin's listing)
    Pmoi:tokens           hash    token id -> JSON: user, admin and code flags, name, expiry, its secret's SHA-256
    Pmoi:tokens:used      hash    API token id -> when it was last used (epoch seconds; written at most once a minute)
    Pmoi:tokens:revoked   channel ids of tokens just revoked: every server closes their open sockets
    Pmoi:accounts         hash    login name -> JSON: its password's argon2 hash, admin flag, when made (moi user add)
    Pmoi:session:<id>     string  JSON: a page login's user, admin flag, when made; expires with the login
    Pmoi:sessions:<user>  zset    ids of a user's sessions by expiry (moi user logout ends them all)
    Pmoi:sessions:ended   channel ids of sessions just ended: every server closes their open sockets
    Pmoi:login:failed:<scope> string  attempts in a row: an account from an address (pair:IP|NAME), an address (addr:IP)
    Pmoi:login:wait:<scope> string  set while that scope's logins are refused; expires when they may try again
    Pmoi:oidc:state:<sha256> string JSON: an OpenID login under way (its nonce, PKCE verifier, redirect URI,
                          next page), under the SHA-256 of its state; expires in minutes, taken once by its callback
    Pmoi:oidc:started:<m> string  OpenID logins started in minute m (since the epoch): a cap on pending states
    Pmoi:code:uids        hash    user -> the uid their code runs as over the web (see moi.compute.sandbox)
    Pmoi:code:uids:next   string  how many uids of [security] code_uids have been given out
    Pmoi:services         hash    service name -> JSON definition of a service loaded from YAML
    Pmoi:services:unloadable hash  a service's entry (module:Class, a script's path:Class, a YAML name) -> JSON:
                          why it could not be loaded, where and when (see moi.services.unloadable)
    Pmoi:due:<step>       zset    service jobs due for a retention step (archive, expire), by due time
    Pmoi:mail             list    JSON mails waiting to be sent (job id, to whom); Pmoi:mail:failed counts losses
    Pmoi:loops            hash    per loop (moi.storage.loops): items it failed on; <loop>:restarts; <loop>:last
    Pmoi:tally            hash    "<status>|<service>" -> jobs that ended so (kept by the ending writes, for /metrics)
    Pmoi:tally:<span>     hash    a histogram of job durations (span: wait, run) -> count per bucket, and "sum"
    Pmoi:tally:minute:<m> hash    status -> jobs that ended in that minute (m: minutes since the epoch); kept 2 hours
    Pmoi:workers:<ctx>    hash    engine label ("host:pid") -> JSON: its engine id, host, pid, when seen, lost
    Pmoi:workers:done:<ctx> hash  engine label -> jobs it has run
    Pmoi:engines:wanted:<ctx> string  how many engines a context should have (operations page, moi.compute.scaling)
    Pmoi:engines:retiring:<ctx> set   labels of its engines to stop once idle: they take no more jobs
    Pmoi:scheduled:<ctx>  hash    id of a scheduler context's job handed to its batch scheduler, not yet ended ->
                          its scheduler id ("" while it is being submitted; a removed job's is cancelled from here)
                          (its poller's worklist: a restart resumes from it; see moi.compute.schedulers)
    Pmoi:scheduler:<ctx>  string  JSON: that scheduler context as its poller last saw it (reachable, counts, error)
    Pmoi:anonymous:link:<id> string  SHA-256 (hex) of the secret of an anonymous job's results link; lives as the job
    Pmoi:anonymous:rate:<address>:<hour> string  anonymous submissions from one address (IPv6: its /64) that hour
    Pmoi:anonymous:mailed:<sha256 of address>:<day> string  anonymous links mailed to one address that day
"""

import uuid
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

    def call(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}:call"

    def value(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}:value"

    def queue(self, context: str) -> str:
        return f"{self.prefix}moi:queue:{context}"

    @property
    def seq(self) -> str:
        return f"{self.prefix}moi:seq"

    def fair_clock(self, context: str, priority: int | None = None) -> str:
        """The clock of one priority; without one, what the Lua scripts add a priority to."""
        return f"{self.prefix}moi:fair:clock:{context}:{'' if priority is None else priority}"

    def fair_last(self, context: str, owner: str, priority: int | None = None) -> str:
        """An owner's last turn at one priority; without one, what the Lua scripts add a priority to."""
        return f"{self.prefix}moi:fair:last:{owner}:{context}:{'' if priority is None else priority}"

    def wake(self, context: str) -> str:
        return f"{self.prefix}moi:wake:{context}"

    def wakeup(self, context: str) -> str:
        return f"{self.prefix}moi:wakeup:{context}"

    def dispatcher(self, context: str) -> str:
        return f"{self.prefix}moi:dispatcher:{context}"

    def online(self, context: str) -> str:
        return f"{self.prefix}moi:online:{context}"

    def scheduled(self, context: str) -> str:
        return f"{self.prefix}moi:scheduled:{context}"

    def scheduler_seen(self, context: str) -> str:
        return f"{self.prefix}moi:scheduler:{context}"

    @property
    def paused(self) -> str:
        return f"{self.prefix}moi:paused"

    def held(self, context: str) -> str:
        return f"{self.prefix}moi:held:{context}"

    def retry(self, context: str) -> str:
        return f"{self.prefix}moi:retry:{context}"

    @property
    def retrying(self) -> str:
        return f"{self.prefix}moi:retrying"

    def index(self, owner: str) -> str:
        return f"{self.prefix}moi:index:{owner}"

    @property
    def index_all(self) -> str:
        return f"{self.prefix}moi:index"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}moi:tokens"

    @property
    def tokens_used(self) -> str:
        return f"{self.prefix}moi:tokens:used"

    @property
    def tokens_revoked(self) -> str:
        return f"{self.prefix}moi:tokens:revoked"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}moi:accounts"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}moi:session:{session_id}"

    def user_sessions(self, user: str) -> str:
        return f"{self.prefix}moi:sessions:{user}"

    @property
    def sessions_ended(self) -> str:
        return f"{self.prefix}moi:sessions:ended"

    def login_failed(self, scope: str) -> str:
        return f"{self.prefix}moi:login:failed:{scope}"

    def login_wait(self, scope: str) -> str:
        return f"{self.prefix}moi:login:wait:{scope}"

    def oidc_state(self, digest: str) -> str:
        return f"{self.prefix}moi:oidc:state:{digest}"

    def oidc_started(self, minute: int) -> str:
        return f"{self.prefix}moi:oidc:started:{minute}"

    def oidc_started_by(self, scope: str, minute: int) -> str:
        return f"{self.prefix}moi:oidc:started:{scope}:{minute}"

    @property
    def code_uids(self) -> str:
        return f"{self.prefix}moi:code:uids"

    @property
    def code_uids_next(self) -> str:
        return f"{self.prefix}moi:code:uids:next"

    @property
    def services(self) -> str:
        return f"{self.prefix}moi:services"

    @property
    def services_unloadable(self) -> str:
        return f"{self.prefix}moi:services:unloadable"

    def due(self, step: str) -> str:
        return f"{self.prefix}moi:due:{step}"

    @property
    def mail(self) -> str:
        return f"{self.prefix}moi:mail"

    @property
    def mail_failed(self) -> str:
        return f"{self.prefix}moi:mail:failed"

    @property
    def tally(self) -> str:
        return f"{self.prefix}moi:tally"

    def histogram(self, span: str) -> str:
        return f"{self.prefix}moi:tally:{span}"

    def minute(self, minute: int) -> str:
        return f"{self.prefix}moi:tally:minute:{minute}"

    def workers(self, context: str) -> str:
        return f"{self.prefix}moi:workers:{context}"

    def workers_done(self, context: str) -> str:
        return f"{self.prefix}moi:workers:done:{context}"

    @property
    def loops(self) -> str:
        return f"{self.prefix}moi:loops"

    def engines_wanted(self, context: str) -> str:
        return f"{self.prefix}moi:engines:wanted:{context}"

    def engines_retiring(self, context: str) -> str:
        return f"{self.prefix}moi:engines:retiring:{context}"

    def active(self, owner: str) -> str:
        return f"{self.prefix}moi:active:{owner}"

    def anonymous_link(self, job_id: str) -> str:
        return f"{self.prefix}moi:anonymous:link:{job_id}"

    def anonymous_rate(self, address: str, hour: int) -> str:
        return f"{self.prefix}moi:anonymous:rate:{address}:{hour}"

    def anonymous_mailed(self, address_digest: str, day: int) -> str:
        return f"{self.prefix}moi:anonymous:mailed:{address_digest}:{day}"

    def node_of_channel(self, channel: str) -> str:
        """The id a channel name belongs to (inverse of ``channel``)."""
        return channel[len(self.prefix) : -len(":pubsub")]


# Names a login may never take: the no-user group's name, moi's own keys, and what would read as a node.
NO_USER = "no-user"
RESERVED_PREFIX = "moi:"
# The owner of anonymous jobs (moi.services.anonymous): a reserved name, so no login can ever be it.
ANONYMOUS_OWNER = f"{RESERVED_PREFIX}anonymous"
MAX_USER_NAME = 200


def user_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a login name, or None when it can.

    User names and group ids are kept apart: a group id is a uuid, and a user
    name never is one, so a name can only ever reach its own group (through
    ``user-id-map``), never another user's by aliasing that group's id.
    """
    if not name or not name.strip():
        return "it is empty"
    if len(name) > MAX_USER_NAME:
        return f"it is longer than {MAX_USER_NAME} characters"
    if not name.isprintable():
        return "it holds control characters"
    if name == NO_USER or name.startswith(RESERVED_PREFIX) or name in _RESERVED_KEYS:
        return "it is a name moi reserves for itself"
    if name.startswith('"'):
        return "it starts with a double quote, which the original moi's cookies used for quoting"
    if ":" in name:
        return "it holds ':', which moi uses in its key names"
    if _looks_like_id(name):
        return "it looks like a job or group id"
    return None


_RESERVED_KEYS = frozenset({"user-id-map"})


def _looks_like_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
