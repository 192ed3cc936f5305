-- wrk script for perf/origin-http: agents polling the feed with conditional GETs.
--   ETAG        the feed's entity tag, sent as If-None-Match (so most answers are 304)
--   FULL_EVERY  every Nth request is unconditional (a 200 with the feed); 0: never
--   PAUSE_MS    mean pause between a connection's requests (uniform 0..2x, so the first
--               requests are spread too); 0: none (closed loop, as fast as the server goes)
local etag = os.getenv("ETAG") or ""
local full_every = tonumber(os.getenv("FULL_EVERY") or "0")
local pause_ms = tonumber(os.getenv("PAUSE_MS") or "0")
local n = 0

math.randomseed(os.time())

-- Without a request function wrk sends one prepared request (its fast path).
wrk.headers["If-None-Match"] = etag
if full_every > 0 then
   request = function()
      n = n + 1
      if n % full_every == 0 then
         return wrk.format("GET", "/feed.json", {})
      end
      return wrk.format("GET", "/feed.json")
   end
end

if pause_ms > 0 then
   delay = function()
      return math.random(0, 2 * pause_ms)
   end
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
