"""The Redis broker's Lua scripts: each write is one atomic call. Key layout: ``redis.py``.

- ``PUBLISH``: idempotency key check, schema check and merge, field limit, channel limit, append,
  counters, retention (time, values, bytes), the rollup tiers merged, and the key recorded: a retry
  after a timeout finds its key and stores nothing.
- ``HOLD``: the same checks, then the points go to the channel's reorder window (a hash of
  entries and a sorted set of their due times), bounded in bytes across the Redis.
- ``RELEASE``: takes the entries a release computed (in Python, :func:`livedata.core.window.release`)
  out of the window and appends their points (rollups merged as in ``PUBLISH``), or answers
  ``retry`` when another release took them first: held points are published exactly once, by
  whichever server gets there.
- ``DELETE``: a channel and everything it holds (tiers and reorder window too).
- ``LEASE``: generator leases.

Every script that writes starts from the same Lua functions (``_LIB``); argument layouts are in
each script's comment. ``PUBLISH`` and ``RELEASE`` share ``ARGV[1..15]`` (the append):

``1`` channel, ``2`` a new epoch token, ``3`` channel limit, ``4`` now (ms), ``5`` retention (ms),
``6`` retention (values), ``7`` retention (payload bytes, 0: none), ``8`` field limit (0: none),
``9`` ``1`` when the channel counts in the channel limit (``0``: a generated channel, kept in the
generated set instead), ``10``/``11`` the batch's min/max time, ``12`` rows, ``13`` the payload,
``14`` values, ``15`` the rollups: a msgpack ``[[width, retention, [[bucket, {key: aggregate}],
...]], ...]`` per tier (``core/rollup.py``), or empty.
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
-- schema hash `fk` (order|type|def) and the held fields `hk` (type|def), and the field limit
-- `maxf` (schema and held fields count; 0: none). Returns the indexes of the fields new to the
-- schema, or a 'schema' / 'fields' reply.
local function check(fk, hk, at, nf, maxf)
  local new, fresh, seen_ = {}, {}, {}
  for i = 0, nf - 1 do
    local key, typ = ARGV[at + 3 * i], ARGV[at + 1 + 3 * i]
    local have = redis.call('HGET', fk, key)
    local htype = nil
    local held = nil
    if have then
      htype = string.match(have, '^%d+|(%a+)|')
    else
      held = redis.call('HGET', hk, key)
      if held then htype = string.match(held, '^(%a+)|') end
    end
    if htype and htype ~= typ then return nil, {'schema', key, htype, typ} end
    if not have and not seen_[key] then
      seen_[key] = true
      new[#new + 1] = i
      if not held then fresh[#fresh + 1] = i end
    end
  end
  if maxf > 0 and #fresh > 0 then
    local have = redis.call('HLEN', fk) + redis.call('HLEN', hk)
    if have + #fresh > maxf then
      local first = fresh[math.max(1, maxf - have + 1)]
      return nil, {'fields', tostring(have), tostring(#fresh), ARGV[at + 3 * first]}
    end
  end
  return new, nil
end

-- The channel's epoch, creating the channel (nil: the channel limit). Generated channels
-- (`counted` false) do not count in the limit and are kept in `greg` too.
local function channel(meta, reg, greg, name, token, limit, counted)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    if counted and redis.call('SCARD', reg) - redis.call('SCARD', greg) >= tonumber(limit) then return nil end
    epoch = token
    redis.call('HSET', meta, 'epoch', epoch, 'n', '0', 'lms', '0', 'cells', '0', 'bytes', '0')
    redis.call('SADD', reg, name)
    if not counted then redis.call('SADD', greg, name) end
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

-- Append one entry (ARGV[10..14]: t0, t1, rows, payload, values) and trim by time, values and
-- payload bytes (ARGV[4..7]); returns its ID and count.
local function append(meta, sk, ik, epoch, defs)
  local t0s, t1s, rows, payload, values = ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14]
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
  local nowv = tonumber(ARGV[4])
  local wi = math.floor(nowv / 10000)
  local mwi = tonumber(redis.call('HGET', meta, 'wi') or '-1')
  if mwi == wi then
    redis.call('HINCRBY', meta, 'wc', k)
  elseif mwi == wi - 1 then
    redis.call('HSET', meta, 'wi', wi, 'pc', redis.call('HGET', meta, 'wc') or '0', 'wc', k)
  else
    redis.call('HSET', meta, 'wi', wi, 'pc', '0', 'wc', k)
  end
  local size = #payload
  redis.call('RPUSH', ik, id .. ' ' .. nstr .. ' ' .. rows .. ' ' .. values .. ' ' .. t1s .. ' ' .. size)
  local cells = tonumber(redis.call('HGET', meta, 'cells') or '0') + tonumber(values)
  local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0') + size
  local cutoff = nowv - tonumber(ARGV[5])
  local rp = tonumber(ARGV[6])
  local rbytes = tonumber(ARGV[7])
  if rbytes <= 0 then rbytes = math.huge end
  local trimmed = false
  while redis.call('LLEN', ik) > 1 do
    local first = redis.call('LINDEX', ik, 0)
    local _, _, fc, ft1, fb = string.find(first, '^%S+ %d+ %d+ (%d+) (%-?%d+) ?(%d*)$')
    fc = tonumber(fc)
    fb = tonumber(fb) or 0
    if tonumber(ft1) < cutoff or cells - fc >= rp or bytes - fb >= rbytes then
      redis.call('LPOP', ik)
      cells = cells - fc
      bytes = bytes - fb
      trimmed = true
    else
      break
    end
  end
  redis.call('HSET', meta, 'cells', string.format('%.0f', cells), 'bytes', string.format('%.0f', bytes))
  if trimmed then
    local first = redis.call('LINDEX', ik, 0)
    redis.call('XTRIM', sk, 'MINID', string.match(first, '^%S+'))
  end
  return id, nstr
end

local function merge(a, b)
  if a[1] == 0 then return b end
  a[1] = a[1] + b[1]
  a[2] = a[2] + b[2]
  if b[3] < a[3] or (b[3] == a[3] and b[4] < a[4]) then a[3] = b[3]; a[4] = b[4] end
  if b[5] > a[5] or (b[5] == a[5] and b[6] < a[6]) then a[5] = b[5]; a[6] = b[6] end
  if b[8] < a[8] then a[7] = b[7]; a[8] = b[8] end
  if b[10] >= a[10] then a[9] = b[9]; a[10] = b[10] end
  return a
end

-- Merge the rollups (ARGV[15]) into the tiers: tier i's hash (bucket -> msgpack {field order as a
-- string: aggregate}) is KEYS[k0 + 2 * (i - 1)], its sorted set of buckets the key after it.
local function roll(fk, k0)
  local raw = ARGV[15]
  if not raw or raw == '' then return end
  local orders = {}
  local function order_of(key)
    local o = orders[key]
    if o == nil then
      local row = redis.call('HGET', fk, key)
      o = row and string.match(row, '^(%d+)|') or false
      orders[key] = o
    end
    return o
  end
  local now = tonumber(ARGV[4])
  for ti, tier in ipairs(cmsgpack.unpack(raw)) do
    local width, keep, parts = tier[1], tier[2], tier[3]
    local hk, zk = KEYS[k0 + 2 * (ti - 1)], KEYS[k0 + 2 * (ti - 1) + 1]
    local cutoff = now - keep
    for _, part in ipairs(parts) do
      local bucket = part[1]
      if bucket + width > cutoff then
        local bs = string.format('%.0f', bucket)
        local row_raw = redis.call('HGET', hk, bs)
        local row = {}
        if row_raw then row = cmsgpack.unpack(row_raw) end
        for key, agg in pairs(part[2]) do
          local o = order_of(key)
          if o then
            local have = row[o]
            if have then row[o] = merge(have, agg) else row[o] = agg end
          end
        end
        redis.call('HSET', hk, bs, cmsgpack.pack(row))
        if not row_raw then redis.call('ZADD', zk, bucket, bs) end
      end
    end
    local oldest = redis.call('ZRANGE', zk, 0, 0, 'WITHSCORES')
    if oldest[2] and tonumber(oldest[2]) + width <= cutoff then
      local gone = redis.call('ZRANGEBYSCORE', zk, '-inf', string.format('%.0f', cutoff - width))
      for i = 1, #gone, 500 do
        redis.call('HDEL', hk, unpack(gone, i, math.min(i + 499, #gone)))
      end
      redis.call('ZREMRANGEBYSCORE', zk, '-inf', string.format('%.0f', cutoff - width))
    end
  end
end
"""

PUBLISH = _LIB + r"""
-- KEYS: 1 meta, 2 schema, 3 stream, 4 index, 5 channel set, 6 generated set, 7 held fields,
-- 8 idempotency key, then two per rollup tier (hash, sorted set) from 9.
-- ARGV: 1..15 the append (module docstring), 16 request digest ('' = no key), 17 key ttl (ms),
-- 18 field count, then (key, type, JSON definition) per field from 19.
-- Returns {'ok', id, n, epoch}, {'dup', head id, n, epoch}, {'conflict'}, {'schema', key, have,
-- got}, {'fields', have, new, key} or {'limit'}.
local meta = KEYS[1]
local dup = seen(KEYS[8], ARGV[16])
if dup then
  if dup[1] == 'dup' then
    return {'dup', redis.call('HGET', meta, 'hid') or '', redis.call('HGET', meta, 'n') or '0',
      redis.call('HGET', meta, 'epoch') or ''}
  end
  return dup
end
local new, err = check(KEYS[2], KEYS[7], 19, tonumber(ARGV[18]), tonumber(ARGV[8]))
if err then return err end
local epoch = channel(meta, KEYS[5], KEYS[6], ARGV[1], ARGV[2], ARGV[3], ARGV[9] == '1')
if not epoch then return {'limit'} end
local defs = add_fields(KEYS[2], KEYS[7], new, 19)
local id, nstr = redis.call('HGET', meta, 'hid') or '', redis.call('HGET', meta, 'n')
if tonumber(ARGV[12]) > 0 then
  id, nstr = append(meta, KEYS[3], KEYS[4], epoch, defs)
  roll(KEYS[2], 9)
end
if ARGV[16] ~= '' then redis.call('SET', KEYS[8], ARGV[16], 'PX', ARGV[17]) end
return {'ok', id, nstr, epoch}
"""

HOLD = _LIB + r"""
-- KEYS: 1 meta, 2 schema, 3 channel set, 4 generated set, 5 held fields, 6 held entries (hash),
-- 7 their due times (zset), 8 channels holding (zset, by earliest due time), 9 held bytes
-- (counter), 10 idempotency key
-- ARGV: 1 channel, 2 new epoch token, 3 channel limit, 4 due (ms), 5 entry payload, 6 bytes,
-- 7 bound (bytes), 8 request digest, 9 key ttl (ms), 10 field limit, 11 counted, 12 field count,
-- fields from 13.
-- Returns {'ok', epoch}, {'dup'}, {'conflict'}, {'schema', ...}, {'fields', ...}, {'limit'} or
-- {'full', used}.
local meta = KEYS[1]
local dup = seen(KEYS[10], ARGV[8])
if dup then return dup end
local new, err = check(KEYS[2], KEYS[5], 13, tonumber(ARGV[12]), tonumber(ARGV[10]))
if err then return err end
local used = tonumber(redis.call('GET', KEYS[9]) or '0')
local size = tonumber(ARGV[6])
if used + size > tonumber(ARGV[7]) then return {'full', string.format('%.0f', used)} end
local epoch = channel(meta, KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[11] == '1')
if not epoch then return {'limit'} end
for _, i in ipairs(new) do
  local key = ARGV[13 + 3 * i]
  if redis.call('HEXISTS', KEYS[5], key) == 0 then
    redis.call('HSET', KEYS[5], key, ARGV[14 + 3 * i] .. '|' .. ARGV[15 + 3 * i])
  end
end
local id = redis.call('HINCRBY', meta, 'hseq', 1)
redis.call('HSET', KEYS[6], id, ARGV[5])
redis.call('ZADD', KEYS[7], ARGV[4], id)
redis.call('HINCRBY', meta, 'hb', size)
redis.call('INCRBY', KEYS[9], size)
redis.call('ZADD', KEYS[8], 'LT', ARGV[4], ARGV[1])
if ARGV[8] ~= '' then redis.call('SET', KEYS[10], ARGV[8], 'PX', ARGV[9]) end
return {'ok', epoch}
"""

RELEASE = _LIB + r"""
-- KEYS: 1 meta, 2 schema, 3 stream, 4 index, 5 channel set, 6 generated set, 7 held fields,
-- 8 held entries, 9 due times, 10 channels holding, 11 held bytes, then two per rollup tier from 12.
-- ARGV: 1..15 the append (module docstring), 16 bytes released, 17 entries taken whole (g),
-- 18 entries taken in part (p), 19 field count (f), then fields (3 each) from 20, then g ids,
-- then p (id, payload) pairs.
-- Returns {'ok', id, n, epoch}, {'retry'} (another release took them) or {'schema', ...}.
local meta = KEYS[1]
local nf, g, p = tonumber(ARGV[19]), tonumber(ARGV[17]), tonumber(ARGV[18])
local at = 20 + 3 * nf
for j = 0, g - 1 do
  if redis.call('HEXISTS', KEYS[8], ARGV[at + j]) == 0 then return {'retry'} end
end
for j = 0, p - 1 do
  if redis.call('HEXISTS', KEYS[8], ARGV[at + g + 2 * j]) == 0 then return {'retry'} end
end
-- held fields were counted in the field limit when held: no limit here
local new, err = check(KEYS[2], KEYS[7], 20, nf, 0)
if err then return err end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'retry'} end
for j = 0, g - 1 do
  redis.call('HDEL', KEYS[8], ARGV[at + j])
  redis.call('ZREM', KEYS[9], ARGV[at + j])
end
for j = 0, p - 1 do
  redis.call('HSET', KEYS[8], ARGV[at + g + 2 * j], ARGV[at + g + 2 * j + 1])
end
local size = tonumber(ARGV[16])
redis.call('HINCRBY', meta, 'hb', -size)
redis.call('DECRBY', KEYS[11], size)
local defs = add_fields(KEYS[2], KEYS[7], new, 20)
local id, nstr = append(meta, KEYS[3], KEYS[4], epoch, defs)
roll(KEYS[2], 12)
local first = redis.call('ZRANGE', KEYS[9], 0, 0, 'WITHSCORES')
if #first == 0 then
  redis.call('ZREM', KEYS[10], ARGV[1])
  redis.call('DEL', KEYS[7], KEYS[8], KEYS[9])
  redis.call('HDEL', meta, 'hb')
else
  redis.call('ZADD', KEYS[10], first[2], ARGV[1])
end
return {'ok', id, nstr, epoch}
"""

DELETE = r"""
-- KEYS: 1 meta, 2 schema, 3 stream, 4 index, 5 held fields, 6 held entries, 7 due times,
-- 8 channel set, 9 channels holding, 10 held bytes, 11 generated set, then the rollup tiers' keys.
-- ARGV: 1 channel. Returns 1 when something was deleted.
local hb = tonumber(redis.call('HGET', KEYS[1], 'hb') or '0')
if hb ~= 0 then redis.call('DECRBY', KEYS[10], hb) end
redis.call('ZREM', KEYS[9], ARGV[1])
local deleted = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
for i = 12, #KEYS do redis.call('DEL', KEYS[i]) end
local removed = redis.call('SREM', KEYS[8], ARGV[1])
redis.call('SREM', KEYS[11], ARGV[1])
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
