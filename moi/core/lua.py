"""The Lua scripts through which moi changes the tree in Redis: each one atomic step, one round trip.

``moi.storage.store`` is their one caller (``ENSURE_GROUP`` is called by ``moi.storage.groups``, a part of
its Store); the comments say what each takes and returns.
"""

# A stored document's revision; nil for anything that is not an info object, which then
# goes back to Python as "changed meanwhile", where moi.core.info.parse says what is wrong with it.
# moi.core.info.dumps writes it first, where it is read without decoding the document (5 us of 6).
_REVISION_OF = """
local function revision_of(text)
  local leading = string.match(text, '^{"revision":(%d+)[,}]')
  if leading then return tonumber(leading) end
  local decoded, revision = pcall(function() return cjson.decode(text)['revision'] end)
  if decoded then return revision end
  return nil
end
"""

# A key's time to live made at least ``ttl``, never shorter: a group outlives the longest-kept job in it
# (a service job's retention may be longer than the blanket ttl). A key with none gets one.
_EXTEND = """
local function extend(key, ttl)
  if redis.call('TTL', key) < tonumber(ttl) then redis.call('EXPIRE', key, ttl) end
end
"""

# Set the info object only if nobody changed it since we read it.
# Returns 1 (set and published), -1 (no such node) or the current document.
# ARGV[6:] are optional commands that go with the change (and only with it), each
# as its length then its words: an engine's heartbeat registration rides along.
_SET_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if revision_of(current) ~= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
local i = 6
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""
COMPARE_AND_SET = _REVISION_OF + _SET_IF_UNCHANGED

# The same, refused (0, nothing written) while the node is in the set KEYS[2]; ARGV[1] is its id there,
# and the rest is COMPARE_AND_SET's. A cancel uses it: a queued job an engine has taken is not cancelled
# as queued (its engine may be starting it), but asked of that engine.
COMPARE_AND_SET_UNLESS = (
    _REVISION_OF
    + """
if redis.call('SISMEMBER', KEYS[2], table.remove(ARGV, 1)) == 1 then return 0 end
"""
    + _SET_IF_UNCHANGED
)

# The compare-and-set above for many nodes in one call (a batch of jobs on one engine).
# KEYS: info keys.  ARGV: ttl, then per key: revision, document, channel, message.
# Returns per key what COMPARE_AND_SET returns; a key may come more than once.
COMPARE_AND_SET_MANY = (
    _REVISION_OF
    + """
local ttl = ARGV[1]
local out, lost = {}, {}
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local current = redis.call('GET', key)
  if not current then
    out[i] = -1
  elseif lost[key] or revision_of(current) ~= tonumber(ARGV[at]) then
    lost[key] = true  -- a later change of this node was built on the lost one
    out[i] = current
  else
    redis.call('SET', key, ARGV[at + 1], 'EX', ttl)
    redis.call('PUBLISH', ARGV[at + 2], ARGV[at + 3])
    out[i] = 1
  end
end
local i = 2 + #KEYS * 4  -- then commands that go along, as in COMPARE_AND_SET
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return out
"""
)

# New nodes stored under a group and announced, in one call; 0 if the group is gone.
# KEYS: group info, group children.  ARGV: ttl, group channel, add message, key prefix, then id, document pairs.
ADD_UNDER = (
    _EXTEND
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
-- A script is not rolled back: refuse a children set of the wrong type before writing anything.
local held = redis.call('TYPE', KEYS[2])['ok']
if held ~= 'set' and held ~= 'none' then return redis.error_reply('WRONGTYPE ' .. KEYS[2]) end
local ttl, prefix = ARGV[1], ARGV[4]
for i = 5, #ARGV, 2 do
  redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'EX', ttl)
  redis.call('SADD', KEYS[2], ARGV[i])
end
extend(KEYS[2], ttl)
extend(KEYS[1], ttl)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
)

# The group a key names, created when missing or expired; see Store.ensure_group for the rule.
# KEYS: user map.  ARGV: key, '1' if the key is a group id, new group id, new group info, ttl, key prefix.
# Returns {'ok', group id}, {'node', document} for a node that is not a group (the caller says
# what is wrong with it) or {'type', redis type} for a key that holds no document at all.
ENSURE_GROUP = """
local key, ttl, prefix = ARGV[1], ARGV[5], ARGV[6]
if ARGV[2] == '1' then
  local kind = redis.call('TYPE', prefix .. key)['ok']
  if kind == 'none' then
    redis.call('SET', prefix .. key, ARGV[4], 'EX', ttl)
    return {'ok', key}
  end
  if kind ~= 'string' then return {'type', kind} end
  local own = redis.call('GET', prefix .. key)
  local decoded, node = pcall(cjson.decode, own)
  if decoded and type(node) == 'table' and node['type'] == 'group' and node['id'] == key then
    redis.call('EXPIRE', prefix .. key, ttl)
    return {'ok', key}
  end
  return {'node', own}
end
local gid = redis.call('HGET', KEYS[1], key)
if gid and redis.call('EXISTS', prefix .. gid) == 1 then
  redis.call('EXPIRE', prefix .. gid, ttl)
  return {'ok', gid}
end
redis.call('SET', prefix .. ARGV[3], ARGV[4], 'EX', ttl)
redis.call('HSET', KEYS[1], key, ARGV[3], ARGV[3], key)
redis.call('EXPIRE', KEYS[1], ttl)
return {'ok', ARGV[3]}
"""

# Priorities run from -MAX_PRIORITY to MAX_PRIORITY; moi.queue.jobqueue checks them before they get here.
MAX_PRIORITY = 1000

# Queued jobs stored under a group, each with its call and its place in a context's queue; announced to
# the group, to the engines waiting for work (wakeup tokens) and to dispatchers. It counts the owner's
# unfinished jobs (a set of their ids, pruned of jobs that ended or expired when it matters) against
# the limits: from hog_size on, a job goes no higher than low (-1), below every other user's normal
# jobs; past hard_limit, nothing is written.
# A job in a paused scope (any of the scope tokens is in the paused set) is stored Paused, in the held set.
# KEYS: group info, group children, queue, sequence, wakeup list, the context's online key, owner's active set,
#       paused set, held set, owner's index, everyone's index, then, each to be followed by a priority (keys
#       of their own, one per priority): the queue's fair clock and the owner's last turn.
# ARGV: ttl, group channel, add message, key prefix, wake channel, the note for a cluster not seen online,
# hog_size, hard_limit (0: none), how many jobs to count against it (0: this call's; a batch counts all of
# its jobs with its first call), the number of scope tokens, the tokens, then per job: id, document, call,
# priority.
# Returns {1, whether the context's cluster was last seen online}, {0} if the group is gone, or
# {-1, unfinished jobs the owner has} when the hard limit refuses them. When the cluster was not seen
# online each job's info says so in its "waiting" field (TAKE clears it).
# A job's score is its priority (highest first), then its turn: (TOP - priority) * 2^32 + turn. Turns share
# the queue between users at one priority (start-time fair queuing): a job's turn is the later of that
# priority's clock (the latest turn TAKE took at that priority) and its owner's last turn there + 1. So a
# user's jobs keep their order, and a user with nothing waiting goes next, before the rest of another user's
# backlog: users alternate. Each priority has its own clock and last turns: a job taken at a higher priority
# (whose turn comes after its owner's backlog) does not move the clock of the normal jobs past that backlog.
# Before the first take at a priority its clock is the submission sequence, at or past every turn given so far.
ENQUEUE = (
    _EXTEND
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
for i, wanted in ipairs({'set', 'zset'}) do
  local held = redis.call('TYPE', KEYS[i + 1])['ok']
  if held ~= wanted and held ~= 'none' then return redis.error_reply('WRONGTYPE ' .. KEYS[i + 1]) end
end
local ttl, prefix = ARGV[1], ARGV[4]
local hog, hard, scopes = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[10])
local first = 11 + scopes
local count = (#ARGV - first + 1) / 4
local counted = math.max(tonumber(ARGV[9]), count)
local have = redis.call('SCARD', KEYS[7])
if hard > 0 and have + counted > hard then
  local ended = {Success = true, Failed = true, Cancelled = true, Archived = true, Expired = true}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[7])) do
    local ok, info = pcall(cjson.decode, redis.call('GET', prefix .. id) or '')
    if not ok or type(info) ~= 'table' or ended[info['status']] then redis.call('SREM', KEYS[7], id) end
  end
  have = redis.call('SCARD', KEYS[7])
  if have + counted > hard then return {-1, have} end
end
local online = redis.call('EXISTS', KEYS[6])
local paused = false
for i = 11, first - 1 do
  if redis.call('SISMEMBER', KEYS[8], ARGV[i]) == 1 then paused = true end
end
local seq = redis.call('INCRBY', KEYS[4], count) - count
local turns = {}  -- per priority: the turn the next job there gets
local function turn_at(priority)
  if not turns[priority] then
    local clock = tonumber(redis.call('GET', KEYS[12] .. priority) or '') or seq  -- not a number: as if unset
    turns[priority] = math.max(clock, (tonumber(redis.call('GET', KEYS[13] .. priority) or '') or -1) + 1)
  end
  turns[priority] = turns[priority] + 1
  return turns[priority] - 1
end
local tokens, ids, places, indexed = {}, {}, {}, {}
for i = first, #ARGV, 4 do
  local id, doc, priority = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 3])
  local hogging = hog > 0 and have >= hog
  if online == 0 or hogging or paused then
    local info = cjson.decode(doc)
    if online == 0 then info['waiting'] = ARGV[6] end
    if hogging then
      priority = math.min(priority, -1)
      info['priority'] = priority
    end
    if paused then info['status'] = 'Paused' end
    doc = cjson.encode(info)
  end
  redis.call('SET', prefix .. id, doc, 'EX', ttl)
  redis.call('SET', prefix .. id .. ':call', ARGV[i + 2], 'EX', ttl)
  have = have + 1
  seq = seq + 1
  ids[#ids + 1] = id
  places[#places + 1], places[#places + 2] = (PRIORITY_TOP - priority) * 4294967296 + turn_at(priority), id
  indexed[#indexed + 1], indexed[#indexed + 2] = seq, id
  if #tokens < 64 and not paused then tokens[#tokens + 1] = '1' end
end
redis.call('SADD', KEYS[2], unpack(ids))
redis.call('SADD', KEYS[7], unpack(ids))
redis.call('ZADD', paused and KEYS[9] or KEYS[3], unpack(places))
redis.call('ZADD', KEYS[10], unpack(indexed))  -- the owner's jobs, and everyone's, newest last (the API lists them)
redis.call('ZADD', KEYS[11], unpack(indexed))
for priority, turn in pairs(turns) do redis.call('SET', KEYS[13] .. priority, turn - 1, 'EX', ttl) end
extend(KEYS[10], ttl)
extend(KEYS[2], ttl)
extend(KEYS[1], ttl)
extend(KEYS[7], ttl)
redis.call('PUBLISH', ARGV[2], ARGV[3])
if #tokens > 0 then
  redis.call('RPUSH', KEYS[5], unpack(tokens))
  redis.call('LTRIM', KEYS[5], -64, -1)
  redis.call('EXPIRE', KEYS[5], 60)
  redis.call('PUBLISH', ARGV[5], count)
end
return {1, online}
""".replace("PRIORITY_TOP", str(MAX_PRIORITY))
)

# An engine takes the first job of a queue that is still Queued, and marks it Running in the same atomic
# step (the compare-and-set cancel relies on: a cancelled job is never taken), with its heartbeat and its
# place in the running set, so an engine that dies from here on leaves a job the watchdog fails.
# A batch's items come as a block: when the first job taken is an item of the batch named by ARGV[7]
# ("@<batch id>:"), the items of that batch that follow it in the queue are taken with it, ARGV[6] at most.
# Items are only registered here (heartbeat, running set), still Queued: their engine marks each Running
# as it starts it (moi.compute.batch_blocks), and a cancel of one is asked of that engine.
# An engine being retired (its label in its context's retiring set) takes nothing, and is told so.
# A queued job whose document this script cannot read (cjson refuses it: not JSON, a lone surrogate, another
# type of key) or write back (a number cjson has no JSON for, such as 1e999, read as inf) fails alone, its
# result one line, and its entry goes: it never stalls the take of every engine (moi.core.values keeps such values
# out; this is for what got into Redis anyway).
# The fair clock of the first job's priority is raised to its turn (never lowered: a job given back by RELEASE
# keeps its old, earlier turn), and no other priority's (see ENQUEUE).
# A scheduler context's poller (ARGV[9] "queued") takes a job as a batch item is taken: registered, still Queued,
# until its batch scheduler runs it (moi.compute.schedulers).
# KEYS: queue, running set, retiring set, tally, fair clock (to be followed by a priority).
# ARGV: key prefix, ttl, engine label, heartbeat ttl, date_start, most, batch, the owners' active sets' key
# without the owner, "queued" to leave the job Queued ("" otherwise).  Returns document, call, score for each
# job taken, false when the queue holds no job to run, or {'retiring'}.
TAKE = """
if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then return {'retiring'} end
local prefix, most, wanted = ARGV[1], tonumber(ARGV[6]), ARGV[7]
local function ttl_of(info)  -- a service job's own ttl, when it is one Redis takes
  local ttl = info['ttl']
  if type(ttl) == 'number' and ttl >= 1 and ttl <= 1e12 and ttl == math.floor(ttl) then return ttl end
  return ARGV[2]
end
local function fail(id, doc, info, why)
  local kept = {}
  if type(info) == 'table' then  -- every field cjson can write; the others are what it could not
    for key, value in pairs(info) do
      if type(key) == 'string' and pcall(cjson.encode, value) then kept[key] = value end
    end
  else  -- not JSON to cjson: the plain fields that tie it to its owner and group, read from the text
    for _, key in ipairs({'name', 'parent', 'owner', 'context', 'pubsub', 'service', 'date_created'}) do
      kept[key] = string.match(doc, '"' .. key .. '":"([^"\\\\]*)"')
    end
  end
  local revision = tonumber(string.match(doc, '^{"revision":(%d+)[,}]')) or tonumber(kept['revision']) or 0
  kept['id'], kept['type'], kept['status'], kept['revision'] = id, 'job', 'Failed', math.floor(revision) + 1
  kept['result'], kept['result_format'] = 'stored job cannot be read: ' .. tostring(why), 'text'
  kept['date_start'], kept['date_end'], kept['engine'], kept['waiting'] = cjson.null, ARGV[5], nil, nil
  if type(kept['date_created']) ~= 'string' then kept['date_created'] = ARGV[5] end
  if type(kept['name']) ~= 'string' then kept['name'] = 'unreadable job' end
  redis.call('SET', prefix .. id, cjson.encode(kept), 'EX', ttl_of(kept))
  redis.call('PUBLISH', prefix .. id .. ':pubsub', cjson.encode({update = {id}}))
  if type(kept['owner']) == 'string' then redis.call('SREM', ARGV[8] .. kept['owner'], id) end
  local service = type(kept['service']) == 'string' and kept['service'] or ''
  redis.call('HINCRBY', KEYS[4], 'Failed|' .. service, 1)  -- moi.storage.finished_counts's count
  return nil
end
-- A queued job's document and what cjson reads of it; nothing when it is gone, or failed here.
local function read(id)
  local doc = redis.pcall('GET', prefix .. id)
  if not doc then return nil end
  if type(doc) ~= 'string' then return fail(id, '', nil, doc['err']) end
  local ok, info = pcall(cjson.decode, doc)
  if not ok then return fail(id, doc, nil, info) end
  if type(info) ~= 'table' then return fail(id, doc, nil, 'it is not a JSON object') end
  return doc, info
end
local function start(id)
  local doc, info = read(id)
  if not info or info['status'] ~= 'Queued' then return nil end  -- gone, failed, or cancelled meanwhile
  if ARGV[9] == 'queued' then return doc end
  if type(info['revision']) ~= 'number' then return fail(id, doc, info, 'its revision is not a number') end
  info['status'] = info['starts_as'] or 'Running'  -- a service job may start in its preprocess hook
  info['date_start'] = ARGV[5]
  info['engine'] = ARGV[3]
  info['waiting'], info['retry_at'] = nil, nil  -- not waiting any more: neither for a cluster nor a retry
  info['revision'] = info['revision'] + 1
  local encoded, new = pcall(cjson.encode, info)
  if not encoded then return fail(id, doc, info, new) end
  redis.call('SET', prefix .. id, new, 'EX', ttl_of(info))  -- a service job's own ttl
  redis.call('PUBLISH', prefix .. id .. ':pubsub', cjson.encode({update = {id}}))
  return new
end
local out, taken = {}, {}
while #out == 0 do  -- entries of jobs no longer Queued (removed) are dropped: look further
  local head = redis.call('ZRANGE', KEYS[1], 0, most - 1, 'WITHSCORES')
  if #head == 0 then return false end
  local names = {}
  for i = 1, #head, 2 do names[#names + 1] = prefix .. head[i] .. ':call' end
  local calls = redis.call('MGET', unpack(names))
  local popped = {}
  for n = 1, #calls do
    local id, call = head[2 * n - 1], calls[n] or ''
    local batch = string.match(call, '^@[^:]+:')
    if #out > 0 and batch ~= wanted then break end
    popped[#popped + 1] = id
    local doc
    if batch then doc = read(id) else doc = start(id) end
    if doc then
      redis.call('SET', prefix .. id .. ':heartbeat', ARGV[3], 'EX', ARGV[4])
      taken[#taken + 1] = id
      out[#out + 1], out[#out + 2], out[#out + 3] = doc, call, head[2 * n]
      if batch ~= wanted then break end  -- a job of its own, or an item of a batch not asked for: alone
    end
  end
  redis.call('ZREM', KEYS[1], unpack(popped))
end
redis.call('SADD', KEYS[2], unpack(taken))
local score = tonumber(out[3])
local clock = KEYS[5] .. (PRIORITY_TOP - math.floor(score / 4294967296))  -- the clock of the taken job's priority
local turn = score % 4294967296
if turn > (tonumber(redis.call('GET', clock) or '') or -1) then redis.call('SET', clock, turn) end
return out
""".replace("PRIORITY_TOP", str(MAX_PRIORITY))

# An engine gives back the items of a block it took but has not started (the one it runs takes long):
# each goes back to its old place in the queue, unless a cancel was asked for meanwhile, which then ends
# it Cancelled. Only items still Queued, of the attempt taken ('' for none), by this engine (its heartbeat) are touched.
# KEYS: queue, running set, wakeup list, tally.  ARGV: key prefix, ttl, engine label, wake channel, date_end, the
# owners' active sets' key without the owner, then id, score, attempt triples.  Returns how many went back.
RELEASE = """
local prefix, back = ARGV[1], 0
for i = 7, #ARGV, 3 do
  local id = ARGV[i]
  local ok, info = pcall(cjson.decode, redis.call('GET', prefix .. id) or '')
  if ok and type(info) == 'table' and info['status'] == 'Queued' and info['attempt'] == tonumber(ARGV[i + 2])
      and redis.call('GET', prefix .. id .. ':heartbeat') == ARGV[3] then
    if redis.call('EXISTS', prefix .. id .. ':cancel') == 1 then
      info['status'], info['result'], info['result_format'] = 'Cancelled', 'Cancelled before it started', 'text'
      info['date_end'] = ARGV[5]
      info['revision'] = info['revision'] + 1
      redis.call('SET', prefix .. id, cjson.encode(info), 'EX', ARGV[2])
      redis.call('PUBLISH', prefix .. id .. ':pubsub', cjson.encode({update = {id}}))
      if info['owner'] then redis.call('SREM', ARGV[6] .. info['owner'], id) end
      redis.call('HINCRBY', KEYS[4], 'Cancelled|' .. (info['service'] or ''), 1)  -- moi.storage.finished_counts's count
    else
      redis.call('ZADD', KEYS[1], ARGV[i + 1], id)
      back = back + 1
    end
    redis.call('DEL', prefix .. id .. ':heartbeat', prefix .. id .. ':cancel')
    redis.call('SREM', KEYS[2], id)
  end
end
if back > 0 then
  for _ = 1, math.min(back, 64) do redis.call('RPUSH', KEYS[3], '1') end
  redis.call('LTRIM', KEYS[3], -64, -1)
  redis.call('EXPIRE', KEYS[3], 60)
  redis.call('PUBLISH', ARGV[4], back)
end
return back
"""
