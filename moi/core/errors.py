"""The one exception hierarchy of moi.

    MoiError
    ├── ConfigError
    │   └── UnknownContext
    ├── RedisUnavailable
    ├── RedisRefused
    ├── BadDocument
    ├── ClusterUnavailable
    │   └── SchedulerUnavailable
    ├── SchedulerRefused
    ├── UnknownId
    │   ├── UnknownKey
    │   └── NotInGroup
    ├── NotAGroup
    ├── InvalidId
    ├── IdTaken
    ├── InvalidUserName
    ├── InvalidCode
    ├── InvalidPriority
    │   └── PriorityAboveCeiling
    ├── InvalidValue
    ├── QuotaExceeded
    ├── CommandFailed
    ├── CodeRefused
    ├── CodeFailed
    ├── JobCancelled
    │   ├── JobTimeLimit
    │   └── JobSuperseded
    ├── JobSoftTimeLimit
    ├── JobFailed
    ├── WrongState
    ├── JobFilesError
    │   ├── PathRefused
    │   ├── NoSuchFile
    │   ├── InputRefused
    │   └── FetchFailed
    ├── BadRequest
    │   └── RootRemoval
    ├── NotLoopback
    ├── RuntimeStartError
    ├── UnsafeStateDir
    ├── UnknownToken
    ├── AccountError
    ├── InvalidExpiry
    └── ServiceError
        ├── UnknownService
        ├── ServiceDefinitionError
        ├── ValidationFailed
        ├── StepFailed
        └── MoveFailed

Every message is one line a user can act on; the CLI prints it as it is.
"""

from moi.core.redact import masked_url, printable


class MoiError(Exception):
    """Root of every error moi raises on purpose."""


class ConfigError(MoiError):
    """The configuration is missing, unreadable or contradictory."""


class UnknownContext(ConfigError):
    """A context name that is not configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"Unknown context: {name!r}; known contexts: {', '.join(sorted(known)) or 'none'}")
        self.name, self.known = name, known


class RedisUnavailable(MoiError):
    """Redis cannot be reached. The message shows the URL with its password masked."""

    def __init__(self, url: str, reason: object = "") -> None:
        detail = f" ({printable(str(reason))})" if reason else ""
        super().__init__(f"Redis is unreachable at {masked_url(url)}{detail}; start it or set MOI_REDIS_URL")
        self.url = url


class RedisRefused(MoiError):
    """Redis answered, but refused a command (WRONGTYPE, NOAUTH, ...): not an outage."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"Redis at {masked_url(url)} refused a command: {printable(str(reason))}")
        self.url = url


class BadDocument(MoiError):
    """A key in Redis that holds something moi did not write: not JSON, not an info object, wrong type."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"Key {printable(key)} holds a bad document: {problem}; fix or delete that key")
        self.key, self.problem = key, problem


class ClusterUnavailable(MoiError):
    """No ipyparallel controller (or no engine) answers for a context."""


class SchedulerUnavailable(ClusterUnavailable):
    """A scheduler context's cluster cannot be reached (SSH refused, an unknown host key, its commands missing)."""


class SchedulerRefused(MoiError):
    """A batch scheduler refused a job (a partition that does not exist ...): its own message."""


class UnknownId(MoiError):
    """An id that names no job or group in Redis."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"Unknown job id: {node_id}")
        self.node_id = node_id


class UnknownKey(UnknownId):
    """A user name or group id that moi does not know."""

    def __init__(self, key: str) -> None:
        MoiError.__init__(self, f"Unknown key: {key}")
        self.node_id = key


class NotInGroup(UnknownId):
    """An id outside the tree a user may see; says no more than UnknownId would."""

    def __init__(self, node_id: str) -> None:
        MoiError.__init__(self, f"Unknown job id: {node_id}; not among your jobs")
        self.node_id = node_id


class NotAGroup(MoiError):
    """A key given as a group (a user name or group id) that names something else: a job, a hash, a set."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(f"{printable(key)} is {what}, not a group; give a user name or a group id")
        self.key, self.what = key, what


class InvalidId(MoiError):
    """A string that cannot be a job id."""

    def __init__(self, text: str) -> None:
        super().__init__(f"Not a job id: {text!r}; job ids look like 0c1ce595-4f6d-4fcb-b872-90118f6b1cd9")


class IdTaken(MoiError):
    """A new node asked for an id another node has."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"Id {node_id} is taken by another job or group; leave the id out to get a new one")
        self.node_id = node_id


class InvalidUserName(MoiError):
    """A login or user name that moi refuses: it could alias a node or a reserved name."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"User name {printable(name)} is refused: {problem}")
        self.name, self.problem = name, problem


class InvalidCode(MoiError):
    """Python code given to run that does not compile."""


class InvalidPriority(MoiError):
    """A priority that is neither low, normal, high nor an integer in range."""

    def __init__(self, value: object, bound: int) -> None:
        super().__init__(
            f"Priority {printable(repr(value))} is refused: "
            f"give low, normal, high or an integer from {-bound} to {bound}"
        )


class PriorityAboveCeiling(InvalidPriority):
    """A priority above what a user may ask for (``[moi] max_user_priority``); admins are exempt."""

    def __init__(self, value: object, ceiling: int) -> None:
        MoiError.__init__(
            self, f"Priority {printable(repr(value))} is refused: a user's jobs go at priority {ceiling} at most"
        )


class InvalidValue(MoiError):
    """A value that Redis's Lua and JSON cannot hold as it is (see ``moi.core.values``); nothing was stored."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{printable(where, 80)} is refused: {why}")
        self.where, self.why = where, why


class QuotaExceeded(MoiError):
    """A submit refused: the user has as many unfinished jobs as the hard limit allows."""

    def __init__(self, user: str, unfinished: int, limit: int, asked: int = 1) -> None:
        advice = "wait for some to finish, or cancel some"
        if asked > 1:  # a batch: it may be too big on its own
            advice = f"a batch of {asked} would pass it; submit fewer, or wait for some to finish"
        super().__init__(f"User {printable(user)} has {unfinished} unfinished jobs and the limit is {limit}: {advice}")
        self.user, self.unfinished, self.limit = user, unfinished, limit


class CommandFailed(MoiError):
    """A shell command run by system_call exited non-zero."""

    def __init__(self, cmd: str, stdout: str, stderr: str, returncode: int) -> None:
        super().__init__(f"Failed to execute: {cmd}\nreturncode: {returncode}\nstdout: {stdout}\nstderr: {stderr}")
        self.cmd, self.stdout, self.stderr, self.returncode = cmd, stdout, stderr, returncode


class CodeRefused(MoiError):
    """Code over the web that may not, or cannot, run: no grant, or no sandbox configured (see moi.compute.sandbox)."""


class CodeFailed(MoiError):
    """Code run in the sandbox failed: its traceback as the child printed it (``result_format``
    "traceback"), or one line on why it could not run or gave no result ("text")."""

    def __init__(self, text: str, result_format: str = "text") -> None:
        super().__init__(text)
        self.result_format = result_format


class EngineRetiring(MoiError):
    """This engine is being removed from its cluster: it takes no more jobs."""

    def __init__(self, label: str) -> None:
        super().__init__(f"engine {label} is being removed; it takes no more jobs")


class JobCancelled(MoiError):
    """Raised inside a job whose cancellation was requested."""


class JobTimeLimit(JobCancelled):
    """Raised inside a job that ran past its time limit: it may catch it to clean up, briefly (see
    ``moi.compute.engine``: after a grace period the engine ends it)."""


class JobSuperseded(JobCancelled):
    """Raised inside an attempt that a newer attempt of its job replaced (its engine was taken for lost, and the
    job given to another): what it does is no longer recorded, so it stops as a cancelled job does."""


class JobSoftTimeLimit(MoiError):
    """Raised inside a job that ran past its soft time limit: a warning it may catch; its hard limit follows."""


class JobFailed(MoiError):
    """A job that failed, as its handle's ``get()`` reports it when its own exception cannot be."""

    def __init__(self, job_id: str, traceback: str) -> None:
        lines = [line for line in traceback.strip().splitlines() if line.strip()]
        super().__init__(f"Job {job_id} failed: {lines[-1].strip() if lines else 'no reason recorded'}")
        self.job_id, self.traceback = job_id, traceback


class WrongState(MoiError):
    """An action that does not fit the job's state: relaunching a running job, say."""

    def __init__(self, node_id: str, action: str, reason: str) -> None:
        super().__init__(f"Job {node_id} cannot be {action}: {reason}")
        self.node_id = node_id


class EngineCountRefused(MoiError):
    """An engine added or removed past a context's bounds, or that moi cannot (or its launcher failed to) start."""


class JobFilesError(MoiError):
    """Something about a job's directory: a path, a file or an input."""


class PathRefused(JobFilesError):
    """A path that would leave the job's directory, or reach through a link."""

    def __init__(self, job_id: str, path: str, why: str) -> None:
        super().__init__(f"Path {printable(path)!r} is refused for job {printable(job_id)}: {why}")
        self.path = path


class NoSuchFile(JobFilesError):
    """No such file in a job's directory (or the job has no directory)."""

    def __init__(self, job_id: str, path: str) -> None:
        where = f"{printable(path)!r} in the files" if path else "files"
        super().__init__(f"No {where} of job {printable(job_id)}; `moi files --job-id {printable(job_id)}` lists them")
        self.path = path


class FilesNotRemoved(JobFilesError):
    """A job's directory that could not all be removed (a file in it that the OS refuses to remove)."""

    def __init__(self, job_id: str, error: OSError) -> None:
        why = printable(error.strerror or error) + (f" ({printable(error.filename)})" if error.filename else "")
        super().__init__(f"The files of job {printable(job_id)} could not all be removed: {why}")


class InputRefused(JobFilesError):
    """An input given at submit that cannot be copied in; nothing was stored."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"Input {printable(name)!r} is refused: {why}")
        self.name = name
        self.why = why


class FetchFailed(JobFilesError):
    """A URI that could not be fetched (an input, a resource) or written (outputs)."""

    def __init__(self, uri: str, why: str) -> None:
        super().__init__(f"{masked_url(uri)} could not be fetched or written: {printable(why)}")
        self.uri = uri


class BadRequest(MoiError):
    """A websocket frame the server cannot act on (not JSON, wrong shape, unknown verb)."""


class RootRemoval(BadRequest):
    """A request to remove a user's own top group."""

    def __init__(self, group_id: str) -> None:
        super().__init__(f"Cannot remove your own group {group_id}; remove its jobs instead")
        self.group_id = group_id


class NotLoopback(MoiError):
    """The development login asked to listen where others can reach it."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"refusing to serve the development login on {printable(address)}, which is not a loopback address; "
            "set [server] logins = password (MOI_LOGINS) and add accounts with `moi user add`, use 127.0.0.1, "
            "or --insecure-dev-login-anywhere if anyone who reaches it may log in as anyone"
        )
        self.address = address


class RuntimeStartError(MoiError):
    """The embedded local runtime could not be started."""


class UnsafeStateDir(MoiError):
    """A state directory (or a file in it) that another user owns or can write: never trusted."""


class ServiceError(MoiError):
    """Something about a service (a named job type, see ``moi.services``)."""


class UnknownService(ServiceError):
    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) or "none are registered"
        super().__init__(f"No service named {printable(name)!r} (known: {listed}); `moi services` lists them")
        self.name = name


class ServiceDefinitionError(ServiceError):
    """A service definition (a class, or a YAML document) moi cannot use; says where and why."""


class ValidationFailed(ServiceError):
    """A submitted input or parameter refused before anything was stored or queued."""

    def __init__(self, what: str, why: str, validator: str = "") -> None:
        super().__init__(f"{what} is refused{f' by validator {validator}' if validator else ''}: {why}")
        self.what = what
        self.validator = validator


class StepFailed(ServiceError):
    """A step of a service's chain that ended as failed: the job fails with this reason."""


class MoveFailed(ServiceError):
    """A job directory that could not move to the root of its next state; the data stays where it was."""


class UnknownToken(MoiError):
    def __init__(self, token_id: str) -> None:
        super().__init__(f"No API token {printable(token_id[:40])!r}; `moi token list` shows them")
        self.token_id = token_id


class AccountError(MoiError):
    """An account of the password login missing, taken, or a new password refused (its text never shown)."""


class InvalidExpiry(MoiError):
    """A token's lifetime that is not a positive duration."""

    def __init__(self, text: object) -> None:
        super().__init__(f"Expiry {printable(repr(text))[:60]} is refused: write a duration such as 12h, 30d or 2w")
