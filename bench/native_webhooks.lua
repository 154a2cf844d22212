-- wrk script: send unique, pre-signed AUREN-native webhooks and count answers per status.
--
-- bridge_throughput.py writes one file per wrk thread ("<prefix>.<n>"), each a sequence of
-- "<byte length>\n<raw HTTP request>" records, signed moments before wrk starts. Thread n sends
-- only its own file, so no request is sent twice. Should a file run out, the thread starts over
-- and counts it in `wrapped`: a repeated request is a re-delivery (200 duplicate), and the
-- bench then reports the run as invalid rather than silently measuring deduplication.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local path = args[1] .. "." .. id
   local file = assert(io.open(path, "rb"))
   pool = {}
   while true do
      local length = file:read("*l")
      if not length then break end
      pool[#pool + 1] = file:read(tonumber(length))
   end
   file:close()
   loaded = #pool
   cursor = 0
   wrapped = 0
   statuses = {}
   accepted = 0
end

function request()
   cursor = cursor + 1
   if cursor > loaded then
      cursor = 1
      wrapped = wrapped + 1
   end
   return pool[cursor]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   -- The bridge answers {"accepted": n, "duplicates": m}: events it made durable.
   if status >= 200 and status < 300 and body then
      accepted = accepted + (tonumber(body:match('"accepted":(%d+)')) or 0)
   end
end

function done(summary, latency, requests)
   local totals, wrapped_total, loaded_total, accepted_total = {}, 0, 0, 0
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         totals[status] = (totals[status] or 0) + count
      end
      wrapped_total = wrapped_total + thread:get("wrapped")
      loaded_total = loaded_total + thread:get("loaded")
      accepted_total = accepted_total + thread:get("accepted")
   end
   for status, count in pairs(totals) do
      io.write(string.format("AUREN status %d %d\n", status, count))
   end
   io.write(string.format("AUREN loaded %d\nAUREN wrapped %d\nAUREN accepted %d\n",
                          loaded_total, wrapped_total, accepted_total))
   for _, p in ipairs({50, 90, 99, 99.9}) do
      io.write(string.format("AUREN latency_us p%s %d\n", p, latency:percentile(p)))
   end
end
