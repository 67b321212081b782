"""The Lua scripts of attempts: due retries back into their queue, and an engine's liveness keys kept to its own.

A job that waits for its next attempt sits in its context's retry set (``Pmoi:retry:<ctx>``, scored by
when it is due); ``RETRY_DUE`` moves the due ones into the queue. An engine refreshes and clears a job's
heartbeat only while the heartbeat is its own (``BEAT``, ``LET_GO``): once the watchdog gave the job to a
new attempt on another engine, the old engine, come back, leaves the new attempt's keys alone.
A retry's write is refused while the job's cancel flag is set (``COMPARE_AND_SET_UNLESS_KEY``).
``moi.queue.retries``, ``moi.compute.engine`` and ``moi.storage.store`` call them; the comments say what each
takes and returns.
"""

from moi.core.lua import COMPARE_AND_SET, MAX_PRIORITY

# The key names a script builds from a context or an id: each given as the text before and after it.
RETRY_TEMPLATES = ("info", "channel", "retry", "queue", "held", "fair_clock", "wakeup", "wake")

# Due retries into their queue. A job's place is at its priority, at the turn of that priority's fair clock
# (the latest turn taken there, see moi.core.lua ENQUEUE): it waited its turn once already, and waits no
# backlog again. A job no longer Queued (cancelled, removed meanwhile) is dropped; one a pause covers (its
# context, or a group of its chain) is stored Paused in the held set instead, as ENQUEUE would store it.
# Engines waiting for work get wakeup tokens and dispatchers an announcement, as for new jobs.
# KEYS: the set of contexts with a retry set, the paused set, the submission sequence.
# ARGV: now (epoch seconds), most per context, ttl, the pause token prefixes of a context and of a group,
# then for each of RETRY_TEMPLATES the text before and after its id or context, then the contexts to look
# at (none: every context of the set). Returns how many jobs went back into a queue.
RETRY_DUE = """
local now, most, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local names, template = {NAMES}, {}
for i, name in ipairs(names) do template[name] = {ARGV[4 + 2 * i], ARGV[5 + 2 * i]} end
local function key(name, middle) return template[name][1] .. middle .. template[name][2] end
local function ttl_of(info)  -- a service job's own ttl, when it is one Redis takes (as TAKE reads it)
  local own = info['ttl']
  if type(own) == 'number' and own >= 1 and own <= 1e12 and own == math.floor(own) then return own end
  return ttl
end
-- A key's text; '' for none, or for a key of another type (a hash written behind moi's back): that one
-- entry is dropped, never the whole call (redis.pcall answers WRONGTYPE with an error reply, not an error).
local function text_of(name)
  local text = redis.pcall('GET', name)
  if type(text) == 'string' then return text end
  return ''
end
local function paused(ctx, info)
  if redis.call('SCARD', KEYS[2]) == 0 then return false end
  if redis.call('SISMEMBER', KEYS[2], ARGV[4] .. ctx) == 1 then return true end
  local group = info['parent']
  for _ = 1, 64 do  -- up the chain of groups, to the owner's
    if type(group) ~= 'string' then return false end
    if redis.call('SISMEMBER', KEYS[2], ARGV[5] .. group) == 1 then return true end
    local ok, node = pcall(cjson.decode, text_of(key('info', group)))
    if not ok or type(node) ~= 'table' then return false end
    group = node['parent']
  end
  return false
end
local function held(ctx, id, info, score)  -- stored Paused in the held set; false if it cannot be written
  info['status'], info['revision'] = 'Paused', info['revision'] + 1
  local encoded, doc = pcall(cjson.encode, info)
  if not encoded then return false end  -- TAKE fails it, saying why
  redis.call('SET', key('info', id), doc, 'EX', ttl_of(info))
  redis.call('PUBLISH', key('channel', id), cjson.encode({update = {id}}))
  redis.call('ZADD', key('held', ctx), score, id)
  return true
end
local function back(ctx, id)  -- whether the job went back into its queue
  local ok, info = pcall(cjson.decode, text_of(key('info', id)))
  if not ok or type(info) ~= 'table' or info['status'] ~= 'Queued' or type(info['revision']) ~= 'number' then
    return false
  end
  local priority = math.max(-PRIORITY_TOP, math.min(PRIORITY_TOP, math.floor(tonumber(info['priority']) or 0)))
  local clock = redis.call('GET', key('fair_clock', ctx) .. priority) or redis.call('GET', KEYS[3])
  local score = (PRIORITY_TOP - priority) * 4294967296 + (tonumber(clock or '') or 0)
  if paused(ctx, info) and held(ctx, id, info, score) then return false end
  redis.call('ZADD', key('queue', ctx), score, id)
  return true
end
local contexts = {}
for i = 6 + 2 * #names, #ARGV do contexts[#contexts + 1] = ARGV[i] end
if #contexts == 0 then contexts = redis.call('SMEMBERS', KEYS[1]) end
local moved = 0
for _, ctx in ipairs(contexts) do
  local retry = key('retry', ctx)
  local due = redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, most)
  local queued = 0
  for _, id in ipairs(due) do
    if back(ctx, id) then queued = queued + 1 end
  end
  if #due > 0 then redis.call('ZREM', retry, unpack(due)) end
  if queued > 0 then
    local wakeup = key('wakeup', ctx)
    for _ = 1, math.min(queued, 64) do redis.call('RPUSH', wakeup, '1') end
    redis.call('LTRIM', wakeup, -64, -1)
    redis.call('EXPIRE', wakeup, 60)
    redis.call('PUBLISH', key('wake', ctx), queued)
  end
  moved = moved + queued
  if redis.call('EXISTS', retry) == 0 then redis.call('SREM', KEYS[1], ctx) end
end
return moved
""".replace("PRIORITY_TOP", str(MAX_PRIORITY)).replace(
    "{NAMES}", "{" + ", ".join(f"'{name}'" for name in RETRY_TEMPLATES) + "}"
)

# COMPARE_AND_SET (moi.core.lua), refused (0, nothing written) while the key KEYS[2] exists. An attempt's
# write that queues its job again uses it with the job's cancel flag: a cancel asked while the attempt failed
# is not lost with the flag that write deletes (the engine then records the job Cancelled).
COMPARE_AND_SET_UNLESS_KEY = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n" + COMPARE_AND_SET

# An engine's heartbeat for its jobs, and a look at their cancel flags, in one call. A heartbeat that holds
# another engine's label belongs to a newer attempt (the watchdog queued the job again, another engine took
# it): it is left alone. A missing one is set again (its key expired while Redis was away, or restarted).
# A job whose info is gone (removed as it ran, with no cancel first) is stopped as a cancelled one is: it would
# otherwise run on, its engine taken, with nothing left to record its end in.
# KEYS: per job, its heartbeat, its cancel flag and its info.  ARGV: engine label, heartbeat ttl.
# Returns per job: 1 when its cancel is requested or its info is gone, 0 when not, -1 when a newer attempt holds it.
BEAT = """
local out = {}
for i = 1, #KEYS, 3 do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    out[#out + 1] = -1
  elseif redis.call('EXISTS', KEYS[i + 2]) == 0 then
    out[#out + 1] = 1  -- its info is gone (the job removed while it ran): stopped as a cancelled job is
  else
    redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2])
    out[#out + 1] = redis.call('EXISTS', KEYS[i + 1])
  end
end
return out
"""

# An engine lets go of jobs whose final write was not its own: their heartbeat, cancel flag and place in the
# running set go, but only where the heartbeat still holds this engine's label (a newer attempt's stay; a job
# whose heartbeat expired stays in the running set for the watchdog, which drops it once it has finished).
# KEYS: the running set, then per job its heartbeat and its cancel flag.  ARGV: engine label, then the job ids.
# Returns how many it let go of.
LET_GO = """
local count = 0
for k = 2, #ARGV do
  local heartbeat, cancel = KEYS[2 * k - 2], KEYS[2 * k - 1]
  if redis.call('GET', heartbeat) == ARGV[1] then
    redis.call('DEL', heartbeat, cancel)
    redis.call('SREM', KEYS[1], ARGV[k])
    count = count + 1
  end
end
return count
"""
