-- GET one key, linearizable: /v1/kv/<key> against etcd's POST /v3/kv/range.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*/)') .. 'common.lua')

function init(args)
  if common.target(args) == 'ours' then
    wrk.method, wrk.path = 'GET', '/v1/kv/' .. common.one
  else
    wrk.method, wrk.path = 'POST', '/v3/kv/range'
    wrk.body = '{"key":"' .. common.b64(common.one) .. '"}'
  end
end
