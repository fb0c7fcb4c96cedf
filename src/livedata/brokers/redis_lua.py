"""The Redis broker's Lua scripts: publish (schema check and merge, channel limit, append,
counters, retention) and generator leases, each one atomic call. Key layout: ``redis.py``.

``_PUBLISH`` arguments (``KEYS``: meta, schema, stream, index, channel set, generated-channel set):
``ARGV[1]`` channel, ``[2]`` a new epoch token, ``[3]`` channel limit, ``[4]`` now (ms), ``[5]``
retention (ms), ``[6]`` retention (values), ``[7]``/``[8]`` the batch's min/max time, ``[9]`` rows,
``[10]`` the payload, ``[11]`` values, ``[12]`` field count, then (key, type, JSON definition) per field,
then retention (payload bytes, 0: none), the field limit (0: none) and ``1`` when the channel counts
in the channel limit (``0``: a generated channel, kept in the generated set instead), then the
rollups (below).
Returns ``{'ok', id, n, epoch}``, ``{'schema', key, have, got}``, ``{'fields', have, new, key}`` or
``{'limit'}``.

``PUBLISH`` is ``_PUBLISH`` with the rollups (:data:`ROLLUP`) merged in the same atomic call, before
it returns ``ok``: ``ARGV[16 + 3 * fields]`` is a msgpack ``[[width, retention, [[bucket, {key:
aggregate}], ...]], ...]`` per tier (``core/rollup.py``), ``KEYS[5 + 2 * i]`` / ``KEYS[6 + 2 * i]``
tier ``i``'s hash (bucket -> msgpack ``{field order as a string: aggregate}``) and sorted set of buckets.
"""

_PUBLISH = r"""
local meta, fk, sk, ik, reg, greg = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local nf = tonumber(ARGV[12])
local extra = 13 + 3 * nf
local rbytes = tonumber(ARGV[extra])
local maxf = tonumber(ARGV[extra + 1])
local counted = ARGV[extra + 2] == '1'
local new, seen = {}, {}
for i = 0, nf - 1 do
  local key, typ = ARGV[13 + 3 * i], ARGV[14 + 3 * i]
  local have = redis.call('HGET', fk, key)
  if have then
    local htype = string.match(have, '^%d+|(%a+)|')
    if htype ~= typ then return {'schema', key, htype, typ} end
  elseif not seen[key] then
    seen[key] = true
    new[#new + 1] = i
  end
end
if maxf > 0 and #new > 0 then
  local have = redis.call('HLEN', fk)
  if have + #new > maxf then
    local first = new[math.max(1, maxf - have + 1)]
    return {'fields', tostring(have), tostring(#new), ARGV[13 + 3 * first]}
  end
end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  if counted and redis.call('SCARD', reg) - redis.call('SCARD', greg) >= tonumber(ARGV[3]) then return {'limit'} end
  epoch = ARGV[2]
  redis.call('HSET', meta, 'epoch', epoch, 'n', '0', 'lms', '0', 'cells', '0', 'bytes', '0')
  redis.call('SADD', reg, ARGV[1])
  if not counted then redis.call('SADD', greg, ARGV[1]) end
end
local order = redis.call('HLEN', fk)
local defs = {}
for j, i in ipairs(new) do
  local def = ARGV[15 + 3 * i]
  redis.call('HSET', fk, ARGV[13 + 3 * i], string.format('%d', order + j - 1) .. '|' .. ARGV[14 + 3 * i] .. '|' .. def)
  defs[j] = def
end
local k = tonumber(ARGV[9])
if k == 0 then
  return {'ok', redis.call('HGET', meta, 'hid') or '', redis.call('HGET', meta, 'n'), epoch}
end
local t0, t1 = tonumber(ARGV[7]), tonumber(ARGV[8])
local ms = tonumber(redis.call('HGET', meta, 'lms'))
if t1 > ms then ms = t1 end
local hwm = redis.call('HGET', meta, 'max')
local n = tonumber(redis.call('HGET', meta, 'n')) + k
local nstr = string.format('%.0f', n)
local newjson = ''
if #defs > 0 then newjson = '[' .. table.concat(defs, ',') .. ']' end
local msstr = string.format('%.0f', ms)
local id = redis.call('XADD', sk, msstr .. '-*', 'd', ARGV[10], 't0', ARGV[7], 't1', ARGV[8], 'hwm', hwm or '',
  'n', nstr, 'e', epoch, 'new', newjson)
local mx = ARGV[8]
if hwm and tonumber(hwm) >= t1 then mx = hwm end
redis.call('HSET', meta, 'n', nstr, 'lms', msstr, 'hid', id, 'max', mx)
if hwm and t0 < tonumber(hwm) then redis.call('HSET', meta, 'late', id) end
local now = tonumber(ARGV[4])
local wi = math.floor(now / 10000)
local mwi = tonumber(redis.call('HGET', meta, 'wi') or '-1')
if mwi == wi then
  redis.call('HINCRBY', meta, 'wc', k)
elseif mwi == wi - 1 then
  redis.call('HSET', meta, 'wi', wi, 'pc', redis.call('HGET', meta, 'wc') or '0', 'wc', k)
else
  redis.call('HSET', meta, 'wi', wi, 'pc', '0', 'wc', k)
end
local size = #ARGV[10]
redis.call('RPUSH', ik, id .. ' ' .. nstr .. ' ' .. ARGV[9] .. ' ' .. ARGV[11] .. ' ' .. ARGV[8] .. ' ' .. size)
local cells = tonumber(redis.call('HGET', meta, 'cells') or '0') + tonumber(ARGV[11])
local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0') + size
local cutoff = now - tonumber(ARGV[5])
local rp = tonumber(ARGV[6])
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
return {'ok', id, nstr, epoch}
"""

ROLLUP = r"""
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
local roll = ARGV[extra + 3]
if roll and roll ~= '' then
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
  for ti, tier in ipairs(cmsgpack.unpack(roll)) do
    local width, keep, parts = tier[1], tier[2], tier[3]
    local hk, zk = KEYS[5 + 2 * ti], KEYS[6 + 2 * ti]
    local cutoff = now - keep
    for _, part in ipairs(parts) do
      local bucket = part[1]
      if bucket + width > cutoff then
        local bs = string.format('%.0f', bucket)
        local raw = redis.call('HGET', hk, bs)
        local row = {}
        if raw then row = cmsgpack.unpack(raw) end
        for key, agg in pairs(part[2]) do
          local o = order_of(key)
          if o then
            local have = row[o]
            if have then row[o] = merge(have, agg) else row[o] = agg end
          end
        end
        redis.call('HSET', hk, bs, cmsgpack.pack(row))
        if not raw then redis.call('ZADD', zk, bucket, bs) end
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

PUBLISH = _PUBLISH.replace("return {'ok', id, nstr, epoch}\n", ROLLUP + "return {'ok', id, nstr, epoch}\n")
assert PUBLISH != _PUBLISH

LEASE = r"""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
