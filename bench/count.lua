-- Stops wrk's thread after a fixed number of answers (REQUESTS, default
-- 10000) and says so by creating DONE_FILE, so that the caller can end wrk
-- (SIGINT) at once: instruction counts then cover the same work for every
-- proxy. Use with -t1.
local limit = tonumber(os.getenv("REQUESTS") or "10000")
local done_file = os.getenv("DONE_FILE")
local answered = 0

function response(status, headers, body)
  answered = answered + 1
  if answered == limit then
    if done_file then
      local f = io.open(done_file, "w")
      if f then f:close() end
    end
    wrk.thread:stop()
  end
end
