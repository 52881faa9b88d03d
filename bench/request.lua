-- One script for every wrk run; the request comes from the environment so baseline and
-- server are driven identically. Without a request() function wrk still sends a static,
-- pre-built request, so the script costs nothing per request (a paced probe aside).
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
-- A body read from a file (a fixed multipart upload), once per thread at start.
local body_file = os.getenv("WRK_BODY_FILE")
if body_file then
  local file = assert(io.open(body_file, "rb"))
  body = file:read("*a")
  file:close()
end
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
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
