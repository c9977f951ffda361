-- wrk script for bench/reporting-http.sh: every request is an MS-VAPR SetReport
-- (`POST /`), UTF-16LE without a processing instruction as Windows clients send
-- it, from one of REPORT_HOSTS clients, with a fresh `Avail-Report-Id`, so that
-- no report is a duplicate. Sizes follow App-V 5.1's (About App-V 5.1
-- reporting), as crates/store/benches/ingest.rs has them: 16-24 APP_RECORDs
-- (~0.25 KB each) and, on one report in ten, the client's package list of 30
-- PKG_DATA.
--
-- Environment: REPORT_HOSTS (clients, default 1000), REPORT_NONCE (8 hex
-- digits, the first group of every report id: one per run, so that runs never
-- repeat an id), REPORT_ENCODING (utf16, the default, or utf8).

local hosts = tonumber(os.getenv("REPORT_HOSTS") or "1000")
local nonce = os.getenv("REPORT_NONCE") or "00000000"
local utf16 = (os.getenv("REPORT_ENCODING") or "utf16") ~= "utf8"

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local tid, counter, day
local bodies, bodies_with_list = {}, {}

function init(args)
  tid = thread_id or 0
  counter = 0
  day = os.date("!%Y-%m-%d")
  math.randomseed(os.time() * 1000 + tid)
end

-- A deterministic GUID for (kind, n).
local function guid(kind, n)
  return string.format("%08x-%04x-4%03x-8%03x-%012x", 0x5eed0000 + kind, n % 65536, kind % 4096, n % 4096, n)
end

local function body(h, with_list)
  local parts = {}
  local host = string.format("pc%04d.corp.example.com", h)
  parts[#parts + 1] = string.format(
    '<CLIENT_DATA Host="%s" Ver="5.1.104.0" ProcessorArch="x64" OSVer="10.0" OSServicePack="0" OSType="Client">', host)
  if with_list then
    parts[#parts + 1] = "<PKG_LIST>"
    for i = 1, 30 do
      local p = (h * 7 + i * 13) % 150
      parts[#parts + 1] = string.format(
        '<PKG_DATA Guid="{%s}" VerGuid="{%s}" Name="Package %03d" Ver="1.0.%d.0" Source="\\\\content.corp.example.com\\appv\\package-%03d.appv" PctCached="%d"/>',
        guid(1, p), guid(2, p), p, p, p, (h + i) % 101)
    end
    parts[#parts + 1] = "</PKG_LIST>"
  else
    parts[#parts + 1] = "<PKG_LIST/>"
  end
  parts[#parts + 1] = "<APP_RECORDS>"
  local user = (h * 3) % 1500
  for i = 1, 16 + h % 9 do
    local p = (h * 7 + i * 13) % 150
    local hour, minute = (i * 37) % 24, (h + i) % 60
    parts[#parts + 1] = string.format(
      '<APP_RECORD Name="Application %03d" Ver="%d.%d.0.0" Server="pubsvr01.corp.example.com" User="CORP\\user%04d" PackageVersion="%s" Launched="%sT%02d:%02d:07Z" LaunchStatus="0-0" Shutdown="%sT%02d:%02d:41Z"/>',
      p, 1 + p % 9, p % 10, user, guid(2, p), day, hour, minute, day, hour, (minute + 17) % 60)
  end
  parts[#parts + 1] = "</APP_RECORDS></CLIENT_DATA>"
  local text = table.concat(parts)
  if utf16 then
    text = text:gsub(".", "%0\0")
  end
  return text
end

function request()
  counter = counter + 1
  local h = math.random(0, hosts - 1)
  local b
  if math.random(10) == 1 then
    b = bodies_with_list[h]
    if not b then b = body(h, true); bodies_with_list[h] = b end
  else
    b = bodies[h]
    if not b then b = body(h, false); bodies[h] = b end
  end
  local id = string.format("%s-%04x-4000-8000-%012x", nonce, tid, counter)
  return wrk.format("POST", "/", {
    ["Content-Type"] = utf16 and "text/xml; charset=utf-16" or "text/xml",
    ["Avail-Report-Id"] = id,
  }, b)
end

-- One machine-readable line for the driving script: `status` counts answers
-- other than 2xx/3xx, `socket` connect/read/write errors and timeouts.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d status=%d socket=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
