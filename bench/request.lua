-- One script for every wrk run; the request comes from the environment so baseline and
-- server are driven identically. Without a request() function wrk still sends a static,
-- pre-built request, so the script costs nothing per request (a paced probe aside).
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local authorization = os.getenv("WRK_AUTHORIZATION")
if authorization then
  wrk.headers["Authorization"] = authorization
end
-- Paces each connection, so a probe measures latency without competing for the CPU it observes.
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end
