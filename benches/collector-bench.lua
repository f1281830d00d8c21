-- wrk script for benches/collector-bench.sh: POSTs reports from a pool of
-- distinct installations (70 % surveyd app-v1 payloads, 30 % upstream
-- kopano-server payloads with raw ids, tab-indented as jsoncpp writes
-- them), so the collector hashes, validates and upserts real variety.
-- The pool is built once per wrk thread so request() costs nothing.

local POOL = 50000
local counter = 0
local reqs = {}
local n = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

local function hex(len)
  local t = {}
  for i = 1, len do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end

local function s(name, value)
  return string.format('"%s":{"desc":"","type":"string","value":"%s"}', name, value)
end

local function i(name, value)
  return string.format('"%s":{"desc":"","mode":"gauge","type":"int","value":%d}', name, value)
end

local function surveyd()
  return '{"stats":{' .. table.concat({
    i("usercnt_active", math.random(0, 5000)), i("usercnt_contact", math.random(0, 500)),
    i("usercnt_equipment", math.random(0, 20)), i("usercnt_na_user", math.random(0, 50)),
    i("usercnt_nonactive", math.random(0, 100)), i("usercnt_room", math.random(0, 30)),
    s("attachment_storage", "files"), s("id_scheme", "app-v1"),
    s("machine_id_hash", hex(32)), s("osrelease", "Debian GNU/Linux 12 (bookworm)"),
    s("program_name", "kopano-server"), s("program_version", "10.0." .. math.random(0, 9)),
    s("server_guid_hash", hex(32)), s("userplugin", "ldap"),
    s("utsname", "Linux x86_64 6.1.0-18-amd64"),
  }, ",") .. '},"version":2}'
end

local function up(name, desc, value)
  return string.format('\t\t"%s" : \n\t\t{\n\t\t\t"desc" : "%s",\n\t\t\t"type" : "string",\n\t\t\t"value" : "%s"\n\t\t}', name, desc, value)
end

local function upi(name, desc, value)
  return string.format('\t\t"%s" : \n\t\t{\n\t\t\t"desc" : "%s",\n\t\t\t"mode" : "counter",\n\t\t\t"type" : "int",\n\t\t\t"value" : %d\n\t\t}', name, desc, value)
end

local function upstream()
  return '{\n\t"stats" : \n\t{\n' .. table.concat({
    up("machine_id", "", hex(32)),
    up("osrelease", "Pretty operating system name", "Debian GNU/Linux 10 (buster)"),
    up("program_name", "Program name", "kopano-server"),
    up("program_version", "Program version", "8.7." .. math.random(0, 30)),
    up("server_guid", "Server GUID", hex(32)),
    upi("usercnt_active", "Active users", math.random(0, 5000)),
    upi("usercnt_nonactive", "Non-active users", math.random(0, 100)),
    up("userplugin", "User plugin", "db"),
    up("utsname", "Pretty platform name", "Linux x86_64 4.19.0-6-amd64"),
  }, ",\n") .. '\n\t},\n\t"version" : 2\n}'
end

function init(args)
  -- Fixed per thread, so the warm-up and the measured run share the pool.
  math.randomseed(id * 7919)
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-Kopano-Stats-Request"] = "1",
  }
  for k = 1, POOL do
    local body = (k % 10 < 7) and surveyd() or upstream()
    reqs[k] = wrk.format("POST", wrk.path, headers, body)
  end
end

function request()
  n = n % POOL + 1
  return reqs[n]
end
