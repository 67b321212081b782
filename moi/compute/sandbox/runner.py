"""The program of a sandboxed Python child, as source text: the child cannot import moi.

``moi.compute.sandbox.child`` passes ``RUNNER`` with ``-I -c``: it reads the job (source, context,
parent) from stdin and writes JSON lines on its stdout: status texts, then the result
(or its repr) or the traceback.
"""

# The child's whole program: stdlib only (the child cannot import moi), and plain enough for any Python 3.
RUNNER = r"""
import json, os, signal, sys, traceback
# SIGTERM ends it, as by default: the first process of a pid namespace would ignore it otherwise.
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
job = json.loads(sys.stdin.read())
channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
nowhere = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(nowhere, fd)

def send(message):
    channel.write(message + "\n")
    channel.flush()

def status_update(text):
    send(json.dumps({"status": str(text)}))

def outcome():
    namespace = {}
    try:
        exec(compile(job["source"], "<moi-cmd>", "exec"), namespace)
        value = namespace["moi_cmd"](status_update=status_update, moi_update_status=status_update,
                                     moi_context=job["context"], moi_parent_id=job["parent"])
    except BaseException as error:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
            tb = tb.tb_next
        return json.dumps({"error": "".join(traceback.format_exception(type(error), error, tb))})
    try:
        return json.dumps({"result": value}, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except Exception as error:
            text = "<unrepresentable %s: %r>" % (type(value).__name__, error)
        return json.dumps({"repr": text})

send(outcome())
os._exit(0)
"""
