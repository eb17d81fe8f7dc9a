-- wrk script of `featurestream bench serving`: POST /get-online-features for one random
-- user of USERS (comma-separated env list), the recommender_v1 service; optional pacing
-- per connection (DELAY_MS) for a fixed request rate; prints one JSON line at the end.
local users = {}
for id in string.gmatch(os.getenv("USERS") or "1", "[^,]+") do
  users[#users + 1] = id
end
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  local user = users[math.random(#users)]
  local body = '{"feature_service":"recommender_v1","entities":{"user_id":[' .. user ..
    '],"item_id":[7],"request_time_ms":[' .. os.time() * 1000 .. '],"item_price":[30.0]}}'
  return wrk.format(nil, "/get-online-features", nil, body)
end

if delay_ms > 0 then
  delay = function()
    return delay_ms
  end
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
