-- PUT a 100-byte value on a random one of 1000 keys: PUT /v1/kv/<key> against POST /v3/kv/put.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*/)') .. 'common.lua')

local requests = {}

-- Every request is built once here, so the load generator spends its core on sending.
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match('0x(%x+)') or '0', 16) % 100000)
  local ours = common.target(args) == 'ours'
  local value64 = common.b64(common.value)
  for i = 0, common.put_keys - 1 do
    local key = '/bench/put/' .. i
    if ours then
      requests[i + 1] = wrk.format('PUT', '/v1/kv/' .. key, nil, common.value)
    else
      requests[i + 1] = wrk.format('POST', '/v3/kv/put', nil, '{"key":"' .. common.b64(key) .. '","value":"' .. value64 .. '"}')
    end
  end
end

function request()
  return requests[math.random(#requests)]
end
