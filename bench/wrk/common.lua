-- Shared by the scenario scripts (loaded with dofile from their own directory):
-- base64 for etcd's /v3 JSON, the fixed keys and value, and one result line
-- that bench/compare.ts parses (wrk's own text report is not meant for machines).
local common = {}

local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

function common.b64(s)
  return ((s:gsub('.', function(c)
    local bits, byte = '', c:byte()
    for i = 8, 1, -1 do bits = bits .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and '1' or '0') end
    return bits
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(bits)
    if #bits < 6 then return '' end
    local n = 0
    for i = 1, 6 do n = n + (bits:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return alphabet:sub(n + 1, n + 1)
  end) .. ({ '', '==', '=' })[#s % 3 + 1])
end

-- The keys compare.ts writes before the runs; the value is 100 bytes.
common.one = '/bench/one'
common.list_prefix = '/bench/list/'
common.list_end = '/bench/list0' -- etcd's range_end for the prefix: '/' + 1
common.value = string.rep('v', 100)
common.put_keys = 1000

-- args[1] is the gateway under test: 'ours' (and the naive gateway: the same /v1 API) or 'etcd'.
function common.target(args)
  local t = args[1]
  if t ~= 'ours' and t ~= 'etcd' then error('first script argument: ours or etcd') end
  return t
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,"status_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end

return common
