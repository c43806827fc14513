-- wrk script for the closed-loop scenarios of benches/load.rs.
--
--   wrk -t T -c C -d LIMIT -s scripts/bench/issue.lua URL -- TOKEN_DIR
--
-- Each wrk thread N (1-based) reads TOKEN_DIR/tokens-N.txt, one pre-minted JWT
-- a line, and sends every token once: `POST /issue` with
-- `Authorization: Bearer <token>` (the broker refuses a replayed token, so a
-- token is never reused). A connection whose thread has no token left sends
-- `GET /issue` instead, which the broker answers 405 without issuing; those
-- answers are counted apart ("surplus"), never as issuances. benches/load.rs
-- watches the STS's call count, notes the time and the broker's CPU when every
-- token has been issued, and then stops wrk with SIGINT (wrk then runs `done`).
--
-- Every answer is checked: 200 with an `access_key_id` of the fake STS counts
-- as issued; anything else is counted by status. `done` prints one line,
-- `WRK_RESULT {json}`, that benches/load.rs reads.

local FAKE_KEY = '"access_key_id"%s*:%s*"ASIADEVFAKE'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  local dir = args[1]
  if dir == nil then
    error("usage: wrk ... -s issue.lua URL -- TOKEN_DIR")
  end
  tokens = {}
  for line in io.lines(dir .. "/tokens-" .. id .. ".txt") do
    if line ~= "" then
      tokens[#tokens + 1] = "Bearer " .. line
    end
  end
  next_token = 1
  -- wrk calls request() once on its first thread before any connection
  -- exists, to check the script (script_verify_request): that call must not
  -- use up a token, or the token would be minted but never sent.
  verify_call_pending = (id == 1)
  issued = 0
  surplus = 0
  no_credentials = 0
  -- Other answers by status, as "status:count,status:count".
  other = {}
end

function request()
  local token = tokens[next_token]
  if token == nil then
    return wrk.format("GET", "/issue")
  end
  if verify_call_pending then
    verify_call_pending = false
    return wrk.format("POST", "/issue", { ["Authorization"] = token, ["Content-Length"] = "0" })
  end
  next_token = next_token + 1
  return wrk.format("POST", "/issue", { ["Authorization"] = token, ["Content-Length"] = "0" })
end

function response(status, headers, body)
  if status == 200 and body ~= nil and string.find(body, FAKE_KEY) then
    issued = issued + 1
  elseif status == 200 then
    no_credentials = no_credentials + 1
  elseif status == 405 and next_token > #tokens then
    surplus = surplus + 1
  else
    other[status] = (other[status] or 0) + 1
    -- Published for `done`, which reads plain thread globals only.
    other_text = ""
    for code, count in pairs(other) do
      other_text = other_text .. code .. ":" .. count .. ","
    end
  end
end

function done(summary, latency, requests)
  local total = { issued = 0, surplus = 0, no_credentials = 0, sent = 0, other = {} }
  for _, thread in ipairs(threads) do
    total.issued = total.issued + (thread:get("issued") or 0)
    total.surplus = total.surplus + (thread:get("surplus") or 0)
    total.no_credentials = total.no_credentials + (thread:get("no_credentials") or 0)
    total.sent = total.sent + (thread:get("next_token") or 1) - 1
    local text = thread:get("other_text") or ""
    for code, count in string.gmatch(text, "(%d+):(%d+),") do
      total.other[code] = (total.other[code] or 0) + tonumber(count)
    end
  end
  local other = {}
  for code, count in pairs(total.other) do
    other[#other + 1] = string.format('"%s":%d', code, count)
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us":%d,"answers":%d,"sent":%d,"issued":%d,"surplus":%d,' ..
    '"no_credentials":%d,"other_status":{%s},"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.duration, summary.requests, total.sent, total.issued, total.surplus,
    total.no_credentials, table.concat(other, ","), errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
