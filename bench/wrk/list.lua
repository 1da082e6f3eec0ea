-- GET a 100-key prefix listing: /v1/kv/<prefix>?prefix against a /v3/kv/range over the prefix.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*/)') .. 'common.lua')

function init(args)
  if common.target(args) == 'ours' then
    wrk.method, wrk.path = 'GET', '/v1/kv/' .. common.list_prefix .. '?prefix'
  else
    wrk.method, wrk.path = 'POST', '/v3/kv/range'
    wrk.body = '{"key":"' .. common.b64(common.list_prefix) .. '","range_end":"' .. common.b64(common.list_end) .. '"}'
  end
end
