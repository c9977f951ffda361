-- wrk script for bench/content.sh: every request is a GET of one random
-- 64 KiB-aligned block of the test file, as the Avail client streams a package
-- (`Range: bytes=a-b`, a = k * 64 KiB, b = a + 64 KiB - 1).
--
-- Environment: CONTENT_PATH (request path, default /big.bin), CONTENT_BLOCKS
-- (number of blocks in the file), CONTENT_BLOCK (block size, default 65536).

local path = os.getenv("CONTENT_PATH") or "/big.bin"
local blocks = tonumber(os.getenv("CONTENT_BLOCKS") or "16384")
local block = tonumber(os.getenv("CONTENT_BLOCK") or "65536")

-- Each wrk thread has its own Lua state; give each its own seed.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
  local first = math.random(0, blocks - 1) * block
  return wrk.format("GET", path, { ["Range"] = "bytes=" .. first .. "-" .. (first + block - 1) })
end

-- One machine-readable line for the driving script. Any status other than
-- 2xx/3xx, or a socket error, counts in `errors`.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d bytes=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
