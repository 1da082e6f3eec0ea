-- GET one key, serializable (member-local read): ?serializable against "serializable": true.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*/)') .. 'common.lua')

function init(args)
  if common.target(args) == 'ours' then
    wrk.method, wrk.path = 'GET', '/v1/kv/' .. common.one .. '?serializable'
  else
    wrk.method, wrk.path = 'POST', '/v3/kv/range'
    wrk.body = '{"key":"' .. common.b64(common.one) .. '","serializable":true}'
  end
end
