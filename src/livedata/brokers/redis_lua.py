"""The Redis broker's Lua scripts: each write is one atomic call. Key layout: ``redis.py``.

- ``PUBLISH``: idempotency key check, schema check and merge, channel limit, append, counters,
  retention, and the key recorded: a retry after a timeout finds its key and stores nothing.
- ``HOLD``: the same checks, then the points go to the channel's reorder window (a hash of
  entries and a sorted set of their due times), bounded in bytes across the Redis.
- ``RELEASE``: takes the entries a release computed (in Python, :func:`livedata.core.window.release`)
  out of the window and appends their points, or answers ``retry`` when another release took them
  first: held points are published exactly once, by whichever server gets there.
- ``DELETE``: a channel and everything it holds.
- ``LEASE``: generator leases.

Every script that writes starts from the same Lua functions (``_LIB``); argument layouts are in
each script's comment.
"""

_LIB = r"""
-- The idempotency key: nil when free, else a reply that ends the script.
local function seen(kk, digest)
  if digest == '' then return nil end
  local have = redis.call('GET', kk)
  if not have then return nil end
  if have == digest then return {'dup'} end
  return {'conflict'}
end

-- Fields (ARGV from `at`, three per field: key, type, JSON definition) checked against the
-- schema hash `fk` (order|type|def) and the held fields `hk` (type|def). Returns the indexes of
-- the new ones, or a 'schema' reply.
local function check(fk, hk, at, nf)
  local new, seen_ = {}, {}
  for i = 0, nf - 1 do
    local key, typ = ARGV[at + 3 * i], ARGV[at + 1 + 3 * i]
    local have = redis.call('HGET', fk, key)
    local htype = nil
    if have then
      htype = string.match(have, '^%d+|(%a+)|')
    else
      local held = redis.call('HGET', hk, key)
      if held then htype = string.match(held, '^(%a+)|') end
    end
    if htype and htype ~= typ then return nil, {'schema', key, htype, typ} end
    if not have and not seen_[key] then
      seen_[key] = true
      new[#new + 1] = i
    end
  end
  return new, nil
end

-- The channel's epoch, creating the channel (nil: the channel limit).
local function channel(meta, reg, name, token, limit)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    if redis.call('SCARD', reg) >= tonumber(limit) then return nil end
    epoch = token
    redis.call('HSET', meta, 'epoch', epoch, 'n', '0', 'lms', '0', 'cells', '0')
    redis.call('SADD', reg, name)
  end
  return epoch
end

-- Add the new fields (indexes from check) to the schema; returns their JSON definitions.
local function add_fields(fk, hk, new, at)
  local order = redis.call('HLEN', fk)
  local defs = {}
  for j, i in ipairs(new) do
    local key, def = ARGV[at + 3 * i], ARGV[at + 2 + 3 * i]
    redis.call('HSET', fk, key, string.format('%d', order + j - 1) .. '|' .. ARGV[at + 1 + 3 * i] .. '|' .. def)
    redis.call('HDEL', hk, key)
    defs[j] = def
  end
  return defs
end

-- Append one entry (t0, t1, rows, payload, values) and trim; returns its ID and count.
local function append(meta, sk, ik, epoch, defs, now, ret_ms, ret_values, t0s, t1s, rows, payload, values)
  local k = tonumber(rows)
  local t0, t1 = tonumber(t0s), tonumber(t1s)
  local ms = tonumber(redis.call('HGET', meta, 'lms'))
  if t1 > ms then ms = t1 end
  local hwm = redis.call('HGET', meta, 'max')
  local n = tonumber(redis.call('HGET', meta, 'n')) + k
  local nstr = string.format('%.0f', n)
  local newjson = ''
  if #defs > 0 then newjson = '[' .. table.concat(defs, ',') .. ']' end
  local msstr = string.format('%.0f', ms)
  local id = redis.call('XADD', sk, msstr .. '-*', 'd', payload, 't0', t0s, 't1', t1s, 'hwm', hwm or '',
    'n', nstr, 'e', epoch, 'new', newjson)
  local mx = t1s
  if hwm and tonumber(hwm) >= t1 then mx = hwm end
  redis.call('HSET', meta, 'n', nstr, 'lms', msstr, 'hid', id, 'max', mx)
  if hwm and t0 < tonumber(hwm) then redis.call('HSET', meta, 'late', id) end
  local nowv = tonumber(now)
  local wi = math.floor(nowv / 10000)
  local mwi = tonumber(redis.call('HGET', meta, 'wi') or '-1')
  if mwi == wi then
    redis.call('HINCRBY', meta, 'wc', k)
  elseif mwi == wi - 1 then
    redis.call('HSET', meta, 'wi', wi, 'pc', redis.call('HGET', meta, 'wc') or '0', 'wc', k)
  else
    redis.call('HSET', meta, 'wi', wi, 'pc', '0', 'wc', k)
  end
  redis.call('RPUSH', ik, id .. ' ' .. nstr .. ' ' .. rows .. ' ' .. values .. ' ' .. t1s)
  local cells = tonumber(redis.call('HGET', meta, 'cells') or '0') + tonumber(values)
  local cutoff = nowv - tonumber(ret_ms)
  local rp = tonumber(ret_values)
  local trimmed = false
  while redis.call('LLEN', ik) > 1 do
    local first = redis.call('LINDEX', ik, 0)
    local _, _, fc, ft1 = string.find(first, '^%S+ %d+ %d+ (%d+) (%-?%d+)$')
    fc = tonumber(fc)
    if tonumber(ft1) < cutoff or cells - fc >= rp then
      redis.call('LPOP', ik)
      cells = cells - fc
      trimmed = true
    else
      break
    end
  end
  redis.call('HSET', meta, 'cells', string.format('%.0f', cells))
  if trimmed then
    local first = redis.call('LINDEX', ik, 0)
    redis.call('XTRIM', sk, 'MINID', string.match(first, '^%S+'))
  end
  return id, nstr
end
"""

PUBLISH = _LIB + r"""
-- KEYS: meta, schema, stream, index, channel set, held fields, idempotency key
-- ARGV: 1 channel, 2 new epoch token, 3 channel limit, 4 now (ms), 5 retention (ms), 6 retention
-- (values), 7/8 min/max time, 9 rows, 10 payload, 11 values, 12 request digest ('' = no key),
-- 13 key ttl (ms), 14 field count, then (key, type, JSON definition) per field from 15.
-- Returns {'ok', id, n, epoch}, {'dup', head id, n, epoch}, {'conflict'}, {'schema', key, have,
-- got} or {'limit'}.
local meta = KEYS[1]
local dup = seen(KEYS[7], ARGV[12])
if dup then
  if dup[1] == 'dup' then
    return {'dup', redis.call('HGET', meta, 'hid') or '', redis.call('HGET', meta, 'n') or '0',
      redis.call('HGET', meta, 'epoch') or ''}
  end
  return dup
end
local new, err = check(KEYS[2], KEYS[6], 15, tonumber(ARGV[14]))
if err then return err end
local epoch = channel(meta, KEYS[5], ARGV[1], ARGV[2], ARGV[3])
if not epoch then return {'limit'} end
local defs = add_fields(KEYS[2], KEYS[6], new, 15)
local id, nstr = redis.call('HGET', meta, 'hid') or '', redis.call('HGET', meta, 'n')
if tonumber(ARGV[9]) > 0 then
  id, nstr = append(meta, KEYS[3], KEYS[4], epoch, defs, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9],
    ARGV[10], ARGV[11])
end
if ARGV[12] ~= '' then redis.call('SET', KEYS[7], ARGV[12], 'PX', ARGV[13]) end
return {'ok', id, nstr, epoch}
"""

HOLD = _LIB + r"""
-- KEYS: meta, schema, channel set, held fields, held entries (hash), their due times (zset),
-- channels holding (zset, by earliest due time), held bytes (counter), idempotency key
-- ARGV: 1 channel, 2 new epoch token, 3 channel limit, 4 due (ms), 5 entry payload, 6 bytes,
-- 7 bound (bytes), 8 request digest, 9 key ttl (ms), 10 field count, fields from 11.
-- Returns {'ok', epoch}, {'dup'}, {'conflict'}, {'schema', ...}, {'limit'} or {'full', used}.
local meta = KEYS[1]
local dup = seen(KEYS[9], ARGV[8])
if dup then return dup end
local new, err = check(KEYS[2], KEYS[4], 11, tonumber(ARGV[10]))
if err then return err end
local used = tonumber(redis.call('GET', KEYS[8]) or '0')
local size = tonumber(ARGV[6])
if used + size > tonumber(ARGV[7]) then return {'full', string.format('%.0f', used)} end
local epoch = channel(meta, KEYS[3], ARGV[1], ARGV[2], ARGV[3])
if not epoch then return {'limit'} end
for _, i in ipairs(new) do
  local key = ARGV[11 + 3 * i]
  if redis.call('HEXISTS', KEYS[4], key) == 0 then
    redis.call('HSET', KEYS[4], key, ARGV[12 + 3 * i] .. '|' .. ARGV[13 + 3 * i])
  end
end
local id = redis.call('HINCRBY', meta, 'hseq', 1)
redis.call('HSET', KEYS[5], id, ARGV[5])
redis.call('ZADD', KEYS[6], ARGV[4], id)
redis.call('HINCRBY', meta, 'hb', size)
redis.call('INCRBY', KEYS[8], size)
redis.call('ZADD', KEYS[7], 'LT', ARGV[4], ARGV[1])
if ARGV[8] ~= '' then redis.call('SET', KEYS[9], ARGV[8], 'PX', ARGV[9]) end
return {'ok', epoch}
"""

RELEASE = _LIB + r"""
-- KEYS: meta, schema, stream, index, channel set, held fields, held entries, due times, channels
-- holding, held bytes
-- ARGV: 1 channel, 2 new epoch token, 3 channel limit, 4 now (ms), 5 retention (ms), 6 retention
-- (values), 7/8 min/max time, 9 rows, 10 payload, 11 values, 12 bytes released, 13 entries taken
-- whole (g), 14 entries taken in part (p), 15 field count (f), then fields (3 each), then g ids,
-- then p (id, payload) pairs.
-- Returns {'ok', id, n, epoch}, {'retry'} (another release took them) or {'schema', ...}.
local meta = KEYS[1]
local nf, g, p = tonumber(ARGV[15]), tonumber(ARGV[13]), tonumber(ARGV[14])
local at = 16 + 3 * nf
for j = 0, g - 1 do
  if redis.call('HEXISTS', KEYS[7], ARGV[at + j]) == 0 then return {'retry'} end
end
for j = 0, p - 1 do
  if redis.call('HEXISTS', KEYS[7], ARGV[at + g + 2 * j]) == 0 then return {'retry'} end
end
local new, err = check(KEYS[2], KEYS[6], 16, nf)
if err then return err end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'retry'} end
for j = 0, g - 1 do
  redis.call('HDEL', KEYS[7], ARGV[at + j])
  redis.call('ZREM', KEYS[8], ARGV[at + j])
end
for j = 0, p - 1 do
  redis.call('HSET', KEYS[7], ARGV[at + g + 2 * j], ARGV[at + g + 2 * j + 1])
end
local size = tonumber(ARGV[12])
redis.call('HINCRBY', meta, 'hb', -size)
redis.call('DECRBY', KEYS[10], size)
local defs = add_fields(KEYS[2], KEYS[6], new, 16)
local id, nstr = append(meta, KEYS[3], KEYS[4], epoch, defs, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
  ARGV[9], ARGV[10], ARGV[11])
local first = redis.call('ZRANGE', KEYS[8], 0, 0, 'WITHSCORES')
if #first == 0 then
  redis.call('ZREM', KEYS[9], ARGV[1])
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8])
  redis.call('HDEL', meta, 'hb')
else
  redis.call('ZADD', KEYS[9], first[2], ARGV[1])
end
return {'ok', id, nstr, epoch}
"""

DELETE = r"""
-- KEYS: meta, schema, stream, index, held fields, held entries, due times, channel set, channels
-- holding, held bytes. ARGV: 1 channel. Returns 1 when something was deleted.
local hb = tonumber(redis.call('HGET', KEYS[1], 'hb') or '0')
if hb ~= 0 then redis.call('DECRBY', KEYS[10], hb) end
redis.call('ZREM', KEYS[9], ARGV[1])
local deleted = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local removed = redis.call('SREM', KEYS[8], ARGV[1])
if deleted + removed > 0 then return 1 end
return 0
"""

LEASE = r"""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
