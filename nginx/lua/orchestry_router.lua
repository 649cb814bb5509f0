-- Orchestry's router: which replica serves a request, changed without reloading nginx.
--
-- The routing table lives in the shared dict `orchestry_routes` as ONE JSON value (key "table"), so a PUT
-- replaces it atomically; the counter "version" is bumped after each write as a cheap change hint. Every
-- worker keeps the decoded table and decodes again only when the hint moved, so a request costs two
-- shared-dict reads. The shared dict survives a HUP reload but not a restart: `init` loads the routes file
-- (written by Orchestry before every push) so a restarted nginx routes at once.
--
-- Values are validated here as well as in Python: the control endpoint is the trust boundary of nginx.
-- Every write to it (PUT) must carry the node's control secret (header X-Orchestry-Control-Secret), read at
-- init from a 0600 file in the data directory that only Orchestry's user (and root) can read: another local
-- process can reach the loopback port but cannot redirect traffic. Reads stay open (they reveal replica
-- addresses and counters, which `ss` or `docker ps` show any local user anyway). The other way round, every
-- control answer to a request carrying a nonce (X-Orchestry-Control-Nonce) carries HMAC-SHA1(secret, nonce)
-- (X-Orchestry-Control-Proof): a process that took the control port while nginx was down cannot pass for it.

local cjson = require "cjson.safe"
local balancer = require "ngx.balancer"
local bit = require "bit"

local DICT = "orchestry_routes"
-- Requests in flight per replica address ("ip:port" -> count), for draining: counted from the balancer's
-- choice until the request's log phase; a retry moves the count to the next peer.
local INFLIGHT = "orchestry_inflight"
local LOCK_TTL = 5 -- seconds: a crashed writer cannot hold the lock longer
-- Traffic counters for the metrics (cumulative since nginx started; a reload keeps them): per app requests,
-- 5xx answers, requests open now, a latency histogram and requests by replica address. Orchestry reads
-- them every few seconds and turns differences into rates and a p95 (nginx/traffic.py). A few shared-dict
-- increments per request: cheaper than writing and parsing a log line, and exact under any load.
local STATS = "orchestry_stats"
-- Upper bounds (ms) of the latency buckets; the last bucket holds everything slower.
local BOUNDS = { 5, 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000 }
-- Generations are JSON numbers, held as doubles: above 2^53 - 1 two generations can read as the same one.
local MAX_GENERATION = 9007199254740991
-- Replicas known to be down, skipped by `route` until their mark expires: the controller marks a replica
-- whose container died (Docker's `die` event) before it changes anything else, and nginx marks one itself
-- on a connection error (PASSIVE_DOWN seconds), so requests stop going to a dead replica within
-- milliseconds instead of at the next table push. Keys "d:<address>" in the routes dict hold the mark's
-- expiry (ngx.now() seconds); "down_version" moves on every change, so workers re-read them only then.
-- When every peer of an app is marked, none is skipped (a mark never makes routing worse than the table).
local DOWN_PREFIX = "d:"
local PASSIVE_DOWN = 1
local MAX_DOWN = 60
local SECRET_HEADER = "X-Orchestry-Control-Secret"
local NONCE_HEADER = "X-Orchestry-Control-Nonce"
local PROOF_HEADER = "X-Orchestry-Control-Proof"

-- The edge (PUT /_orchestry/edge): host and path routes, TLS certificates by host, ACME HTTP-01 answers.
-- Keys: "version" (the controller's edge version), "hint" (bumped per write), "rules" (JSON), "cert:<id>"
-- (JSON {cert, key}: PEM), "host:<name>" (a certificate id; "*.example.com" for a wildcard),
-- "acme:<token>" (the key authorization).
local EDGE = "orchestry_edge"

-- Scale to zero (workflows/wake.py): apps listed in the table's `wake` map have their requests held while
-- they have no replica in rotation. Keys: "h:<app>" requests held now on this node; "w:<app>" a wake wanted
-- (expires after WANT_SECONDS and is recorded again while requests stay held); "s:<app>" when the first
-- of the requests held now arrived; "seq" moves at every wake recorded, for the controller's long-poll
-- (GET /_orchestry/wakes). Held requests poll the table every HOLD_STEP seconds.
local WAKE = "orchestry_wake"
local WANT_SECONDS = 1
local HOLD_STEP = 0.01
local WAKES_POLL = 0.005
local MAX_WAKES_WAIT = 30
local RETRY_FULL = 2 -- Retry-After (s) of a request beyond wake.maxQueuedRequests
local RETRY_TIMEOUT = 5 -- Retry-After (s) of a request held wake.timeoutSeconds in vain
local ACME_PREFIX = "/.well-known/acme-challenge/"

local _M = {}
local conf = { domain = "localhost", routes_file = nil, load = 0, count_traffic = true, stale_after = 10,
  control_secret = nil, tls_port = nil }
local edge_hint, edge_hosts, edge_off -- per worker: the decoded rules, by host, longest path first
local cert_hint, cert_cache = nil, {} -- per worker: parsed certificates and keys by host
local cached_version, cached_generation, cached_apps, cached_wake -- per worker, see above
local down_version, down, down_until = nil, {}, 0 -- per worker: address -> expiry of its down mark
local rr = {} -- per worker round-robin counters, by app
local hold -- defined below (route's wait for a replica of an app waking from zero)

local function valid_generation(g)
  return type(g) == "number" and g >= 0 and g == math.floor(g) and g <= MAX_GENERATION
end

local function valid_app(name)
  return type(name) == "string" and #name <= 63 and name:find("^[a-z0-9][-a-z0-9]*$") ~= nil
    and name:find("[a-z0-9]$") ~= nil
end

-- "IPv4:port" -> host, port; set_current_peer takes an IP, never a name.
local function parse_peer(addr)
  if type(addr) ~= "string" then return nil end
  local a, b, c, d, port = addr:match("^(%d+)%.(%d+)%.(%d+)%.(%d+):(%d+)$")
  if not a then return nil end
  for _, octet in ipairs({ a, b, c, d }) do
    if #octet > 3 or tonumber(octet) > 255 or (#octet > 1 and octet:sub(1, 1) == "0") then return nil end
  end
  if #port > 5 or port:sub(1, 1) == "0" or tonumber(port) > 65535 then return nil end
  return a .. "." .. b .. "." .. c .. "." .. d, tonumber(port)
end

-- A decoded body -> generation, apps; or nil and the reason.
local function check_table(t)
  if type(t) ~= "table" then return nil, "expected a JSON object" end
  local g = t.generation
  if not valid_generation(g) then
    return nil, "generation must be an integer from 0 to 2^53 - 1"
  end
  if type(t.apps) ~= "table" then return nil, "apps must be an object" end
  for name, peers in pairs(t.apps) do
    if not valid_app(name) then return nil, "invalid app name: " .. tostring(name) end
    if type(peers) ~= "table" then return nil, "addresses of " .. name .. " must be a list" end
    local count = 0
    for _ in pairs(peers) do count = count + 1 end
    if count ~= #peers then return nil, "addresses of " .. name .. " must be a list" end
    for _, addr in ipairs(peers) do
      if not parse_peer(addr) then return nil, "invalid address of " .. name .. ": " .. tostring(addr) end
    end
  end
  local wake = t.wake
  if wake == nil then wake = {} end
  if type(wake) ~= "table" then return nil, "wake must be an object" end
  for name, bounds in pairs(wake) do
    if type(name) ~= "string" or t.apps[name] == nil then return nil, "wake of an app not in apps: " .. tostring(name) end
    if type(bounds) ~= "table" then return nil, "wake of " .. name .. " must be an object" end
    local max, timeout = bounds.max, bounds.timeout
    if type(max) ~= "number" or max < 1 or max > 10000 or max ~= math.floor(max) then
      return nil, "wake.max of " .. name .. " must be an integer from 1 to 10000"
    end
    if type(timeout) ~= "number" or timeout <= 0 or timeout > 86400 then
      return nil, "wake.timeout of " .. name .. " must be a number of seconds in (0, 86400]"
    end
  end
  return g, t.apps, wake
end

-- Hand-made JSON: lua-cjson 2.1 writes an empty list as {} and large integers in exponent form.
-- Names and addresses were validated above, so they need no escaping.
local function encode_table(generation, apps, wake)
  local names = {}
  for name in pairs(apps) do names[#names + 1] = name end
  table.sort(names)
  local parts = {}
  for i, name in ipairs(names) do
    local quoted = {}
    for j, addr in ipairs(apps[name]) do quoted[j] = '"' .. addr .. '"' end
    parts[i] = '"' .. name .. '":[' .. table.concat(quoted, ",") .. "]"
  end
  local held = {}
  for name in pairs(wake or {}) do held[#held + 1] = name end
  table.sort(held)
  for i, name in ipairs(held) do
    held[i] = string.format('"%s":{"max":%d,"timeout":%.17g}', name, wake[name].max, wake[name].timeout)
  end
  local tail = #held > 0 and (',"wake":{' .. table.concat(held, ",") .. "}") or ""
  return string.format('{"generation":%d,"apps":{%s}%s}', generation, table.concat(parts, ","), tail)
end

local function current_generation()
  return ngx.shared[DICT]:get("generation")
end

-- Store a checked table unless it is older than the one served (`replace`: whatever is served). Returns
-- true, or false and the generation served. Writers take a lock in the dict, since the compare and the set
-- are two operations.
local function store(generation, apps, replace, wake)
  local dict = ngx.shared[DICT]
  local locked = false
  for _ = 1, 1000 do
    locked = dict:add("lock", true, LOCK_TTL)
    if locked or ngx.get_phase() == "init" then break end
    ngx.sleep(0.001)
  end
  if not locked and ngx.get_phase() ~= "init" then return false, nil, "locked by another writer" end
  local served = current_generation()
  local ok = replace or served == nil or generation >= served
  local err
  if ok then
    ok, err = dict:safe_set("table", encode_table(generation, apps, wake)) -- safe_: never evicts other keys
    if ok then
      dict:set("generation", generation)
      dict:incr("version", 1, 0)
      -- An app that may idle counts from zero at once: never requested is idle too (no counter is unknown).
      for name in pairs(wake or {}) do ngx.shared[STATS]:add("r:" .. name, 0) end
    end
  end
  if locked then dict:delete("lock") end
  return ok, served, err
end

-- The worker's decoded table: generation and {app = {{host, port}, ...}}; nil before any table arrived.
local function current()
  local dict = ngx.shared[DICT]
  local version = dict:get("version")
  if version ~= cached_version then
    local t = cjson.decode(dict:get("table") or "null")
    if t then
      local apps = {}
      for name, addrs in pairs(t.apps) do
        local peers = {}
        for i, addr in ipairs(addrs) do
          local host, port = parse_peer(addr)
          peers[i] = { host = host, port = port, address = addr }
        end
        apps[name] = peers
      end
      cached_generation, cached_apps, cached_wake = t.generation, apps, t.wake or {}
    end
    cached_version = version
  end
  return cached_generation, cached_apps, cached_wake
end

-- Mark `address` down for `seconds` (a later expiry is kept); every worker sees it at its next request.
local function mark_down(address, seconds)
  local dict = ngx.shared[DICT]
  local key = DOWN_PREFIX .. address
  ngx.update_time() -- a failure path, not every request: the cached time may lag on a busy worker
  local expiry = ngx.now() + seconds
  local held = dict:get(key)
  if held and held >= expiry then return end
  dict:set(key, expiry, seconds + 1)
  dict:incr("down_version", 1, 0)
end

-- The worker's down marks, re-read only when "down_version" moved.
local function down_marks()
  local dict = ngx.shared[DICT]
  local version = dict:get("down_version")
  if version ~= down_version then
    local marks, last = {}, 0
    for _, key in ipairs(dict:get_keys(0)) do
      if key:sub(1, #DOWN_PREFIX) == DOWN_PREFIX then
        local expiry = dict:get(key)
        if expiry then
          marks[key:sub(#DOWN_PREFIX + 1)] = expiry
          if expiry > last then last = expiry end
        end
      end
    end
    down, down_version, down_until = marks, version, last
  elseif down_until > 0 and ngx.now() >= down_until then
    down, down_until = {}, 0 -- every mark expired: requests skip the filter again
  end
  return down
end

-- The peers not marked down (all of them when every one is, or none is).
local function live_peers(peers)
  local marks = down_marks()
  if next(marks) == nil then return peers end
  local now = ngx.now()
  local alive = {}
  for _, peer in ipairs(peers) do
    local expiry = marks[peer.address]
    if not expiry or expiry <= now then alive[#alive + 1] = peer end
  end
  if #alive == 0 then return peers end
  return alive
end

local function hex(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function respond(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  if ngx.ctx.orch_control and conf.control_secret then -- the control server only: no oracle on the public port
    local nonce = ngx.req.get_headers()[NONCE_HEADER]
    if type(nonce) == "string" and #nonce >= 16 and #nonce <= 128 then
      ngx.header[PROOF_HEADER] = hex(ngx.hmac_sha1(conf.control_secret, nonce))
    end
  end
  ngx.print(type(body) == "string" and body or cjson.encode(body), "\n")
  return ngx.exit(status)
end

-- A control endpoint's answer to a method it does not take (`allow`: the ones it does).
local function not_allowed(allow)
  ngx.header["Allow"] = allow
  return respond(405, { error = "method_not_allowed" })
end

-- A control write's body, decoded: the value, or nil and cjson's error.
local function json_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local path = ngx.req.get_body_file() -- only if the body outgrew client_body_buffer_size
    local file = path and io.open(path, "r")
    if file then
      body = file:read("*a")
      file:close()
    end
  end
  return cjson.decode(body or "")
end

-- The control secret: the whole file, surrounding white space removed; nil when unreadable or too short
-- (every write is then refused: fail closed).
local function read_secret(path)
  local file = path and io.open(path, "r")
  if not file then return nil end
  local text = (file:read("*a") or ""):match("^%s*(.-)%s*$")
  file:close()
  if #text < 32 then return nil end
  return text
end

-- Compare in time that depends on the length only, not on where the first difference is.
local function same_secret(given, expected)
  if type(given) ~= "string" or type(expected) ~= "string" or #given ~= #expected then return false end
  local diff = 0
  for i = 1, #expected do
    diff = bit.bor(diff, bit.bxor(given:byte(i), expected:byte(i)))
  end
  return diff == 0
end

-- init_by_lua (master, at every start and reload): remember the settings, load the routes file.
function _M.init(settings)
  conf.control_secret = read_secret(settings.control_secret_file)
  if not conf.control_secret then
    ngx.log(ngx.ERR, "orchestry: no control secret in ", tostring(settings.control_secret_file),
      ": every write to the control endpoint is refused")
  end
  conf.domain = settings.domain
  conf.routes_file = settings.routes_file
  conf.count_traffic = settings.count_traffic ~= false
  conf.stale_after = settings.stale_after or conf.stale_after
  conf.tls_port = settings.tls_port
  -- Tells a reload apart: old workers answer the previous value until they exit.
  conf.load = ngx.shared[DICT]:incr("loads", 1, 0)
  -- When this nginx started (its counters count from then): set once, kept across reloads.
  ngx.shared[STATS]:add("started", ngx.now())
  local file = io.open(conf.routes_file, "r")
  if not file then return end -- nothing pushed yet: every app is unknown until the first push
  local text = file:read("*a")
  file:close()
  local generation, apps, wake = check_table(cjson.decode(text))
  if not generation then
    ngx.log(ngx.ERR, "orchestry: ignoring routes file ", conf.routes_file, ": ", apps or "invalid JSON")
    return
  end
  local ok, served, err = store(generation, apps, false, wake)
  if err then
    ngx.log(ngx.ERR, "orchestry: cannot store the routes file's table: ", err)
  elseif ok then
    ngx.log(ngx.NOTICE, "orchestry: loaded generation ", generation, " from ", conf.routes_file)
  else
    ngx.log(ngx.NOTICE, "orchestry: kept generation ", served, " over the routes file's ", generation)
  end
end

-- ----- the edge: host and path routes, certificates, ACME answers --------------------------------------

local function valid_host(h)
  return type(h) == "string" and #h <= 253 and h:find("^[%*a-z0-9][-a-z0-9%.]*$") ~= nil
    and (h:find("*", 1, true) == nil or h:find("^%*%.[^%*]+$") ~= nil)
end

local function valid_path(p)
  return type(p) == "string" and #p <= 1024 and p:sub(1, 1) == "/" and p:find("[%s%?#]") == nil
end

local function valid_token(t)
  return type(t) == "string" and #t >= 1 and #t <= 128 and t:find("^[A-Za-z0-9_-]+$") ~= nil
end

-- A decoded edge body -> nil, or the reason it is refused.
local function check_edge(t)
  if type(t) ~= "table" then return "expected a JSON object" end
  if not valid_generation(t.version) then return "version must be an integer from 0 to 2^53 - 1" end
  if type(t.rules) ~= "table" or type(t.off) ~= "table" then return "rules and off must be lists" end
  for _, r in ipairs(t.rules) do
    if type(r) ~= "table" or not valid_host(r.host) or not valid_path(r.path) or not valid_app(r.app) then
      return "invalid rule: " .. tostring(type(r) == "table" and (r.host or "?") .. (r.path or "") or r)
    end
  end
  for _, name in ipairs(t.off) do
    if not valid_app(name) then return "invalid app in off: " .. tostring(name) end
  end
  if type(t.certs) ~= "table" or type(t.hosts) ~= "table" or type(t.challenges) ~= "table" then
    return "certs, hosts and challenges must be objects"
  end
  for id, c in pairs(t.certs) do
    if type(id) ~= "string" or not id:find("^[0-9]+$") or type(c) ~= "table" or type(c.cert) ~= "string"
        or type(c.key) ~= "string" then
      return "invalid certificate " .. tostring(id)
    end
  end
  for host, id in pairs(t.hosts) do
    if not valid_host(host) or type(id) ~= "string" or t.certs[id] == nil then
      return "invalid host " .. tostring(host)
    end
  end
  for token, answer in pairs(t.challenges) do
    if not valid_token(token) or type(answer) ~= "string" or #answer > 512 then
      return "invalid challenge " .. tostring(token)
    end
  end
  return nil
end

-- Store a checked edge: new keys first, then the stale ones go, then the version and the hint move.
local function store_edge(t)
  local dict = ngx.shared[EDGE]
  local wanted = { rules = true, version = true, hint = true }
  local ok, err = dict:safe_set("rules", cjson.encode({ rules = t.rules, off = t.off }))
  if not ok then return false, err end
  for id, c in pairs(t.certs) do
    ok, err = dict:safe_set("cert:" .. id, cjson.encode({ cert = c.cert, key = c.key }))
    if not ok then return false, err end
    wanted["cert:" .. id] = true
  end
  for host, id in pairs(t.hosts) do
    ok, err = dict:safe_set("host:" .. host, id)
    if not ok then return false, err end
    wanted["host:" .. host] = true
  end
  for token, answer in pairs(t.challenges) do
    ok, err = dict:safe_set("acme:" .. token, answer)
    if not ok then return false, err end
    wanted["acme:" .. token] = true
  end
  for _, key in ipairs(dict:get_keys(0)) do
    if not wanted[key] then dict:delete(key) end
  end
  dict:set("version", t.version)
  dict:incr("hint", 1, 0)
  return true
end

-- The worker's decoded rules: host -> rules (longest path first), and the set of apps without a default.
local function edge_rules()
  local dict = ngx.shared[EDGE]
  local hint = dict:get("hint")
  if hint ~= edge_hint then
    local t = cjson.decode(dict:get("rules") or "null")
    local hosts, off = {}, {}
    if type(t) == "table" then
      for _, r in ipairs(t.rules or {}) do
        local list = hosts[r.host]
        if not list then
          list = {}
          hosts[r.host] = list
        end
        list[#list + 1] = r
      end
      for _, list in pairs(hosts) do
        table.sort(list, function(a, b) return #a.path > #b.path end)
      end
      for _, name in ipairs(t.off or {}) do off[name] = true end
    end
    edge_hosts, edge_off, edge_hint = hosts, off, hint
  end
  return edge_hosts or {}, edge_off or {}
end

local function path_matches(prefix, path)
  if prefix == "/" then return true end
  if path:sub(1, #prefix) ~= prefix then return false end
  local next_char = path:sub(#prefix + 1, #prefix + 1)
  return next_char == "" or next_char == "/" or next_char == "?"
end

-- The rule for host + raw URI: the exact host's rules, else the wildcard one label up; longest prefix.
local function match_rule(hosts, host, uri)
  local keys = { host }
  local first, parent = host:match("^([^%.]+)%.(.+)$")
  if first then keys[2] = "*." .. parent end
  for _, key in ipairs(keys) do
    local list = hosts[key]
    if list then
      for _, r in ipairs(list) do
        if path_matches(r.path, uri) then return r end
      end
    end
  end
  return nil
end

-- ssl_certificate_by_lua: the certificate of the SNI name (exact, then wildcard); none: the fallback one.
function _M.certificate()
  local ssl = require "ngx.ssl"
  local name = ssl.server_name()
  if not name then return end
  name = name:lower()
  local dict = ngx.shared[EDGE]
  local hint = dict:get("hint")
  if hint ~= cert_hint then
    cert_cache, cert_hint = {}, hint
  end
  local entry = cert_cache[name]
  if entry == nil then
    local id = dict:get("host:" .. name)
    if not id then
      local parent = name:match("^[^%.]+%.(.+)$")
      if parent then id = dict:get("host:*." .. parent) end
    end
    local raw = id and cjson.decode(dict:get("cert:" .. id) or "null")
    entry = false
    if type(raw) == "table" then
      local chain, cerr = ssl.parse_pem_cert(raw.cert)
      local key, kerr = ssl.parse_pem_priv_key(raw.key)
      if chain and key then
        entry = { chain = chain, key = key }
      else
        ngx.log(ngx.ERR, "orchestry: certificate ", id, " for ", name, " unusable: ", cerr or kerr)
      end
    end
    cert_cache[name] = entry
  end
  if not entry then return end -- the fallback certificate answers
  local ok, err = ssl.clear_certs()
  if ok then ok, err = ssl.set_cert(entry.chain) end
  if ok then ok, err = ssl.set_priv_key(entry.key) end
  if not ok then
    ngx.log(ngx.ERR, "orchestry: cannot set the certificate of ", name, ": ", err)
    return ngx.exit(ngx.ERROR)
  end
end

-- Control server: GET (the version served) or PUT /_orchestry/edge (the whole edge, replacing the last).
function _M.control_edge()
  local method = ngx.req.get_method()
  local dict = ngx.shared[EDGE]
  if method == "GET" then
    local version = dict:get("version")
    return respond(200, version and string.format('{"version":%d}', version) or '{"version":null}')
  end
  if method ~= "PUT" then return not_allowed("GET, PUT") end
  local decoded, json_err = json_body()
  if decoded == nil then return respond(400, { error = "invalid_json", detail = json_err }) end
  local problem = check_edge(decoded)
  if problem then return respond(400, { error = "invalid_edge", detail = problem }) end
  local ok, err = store_edge(decoded)
  if not ok then return respond(503, { error = "not_stored", detail = err }) end
  return respond(200, string.format('{"version":%d}', decoded.version))
end

-- A wake wanted for `app`: recorded at once, and again every WANT_SECONDS while requests stay held (a write
-- of the controller that failed, or a failover, is retried so).
local function want_wake(app)
  local wake = ngx.shared[WAKE]
  if wake:add("w:" .. app, true, WANT_SECONDS) then wake:incr("seq", 1, 0) end
end

local function give_up(status, body, retry_after)
  ngx.header["Retry-After"] = tostring(retry_after)
  return respond(status, body)
end

-- Hold a request for an app with no replica in rotation that may wake (it scales to zero), until a replica
-- is in the table (its peers are returned), or answer 503 (too many held, or held too long) or 404 (the app
-- left the table). Nothing went upstream yet, so a POST body or a websocket upgrade is sent once, later.
hold = function(app, bounds)
  local wake = ngx.shared[WAKE]
  local held = wake:incr("h:" .. app, 1, 0)
  ngx.ctx.orch_held = app -- released in the log phase, whatever happens meanwhile
  if held > bounds.max then
    return give_up(503, { error = "wake_queue_full", app = app,
      detail = string.format("%d requests already wait for %s to wake on this node (wake.maxQueuedRequests)",
        bounds.max, app) }, RETRY_FULL)
  end
  ngx.update_time()
  local started = ngx.now()
  wake:add("s:" .. app, started, bounds.timeout + 60)
  want_wake(app)
  local deadline = started + bounds.timeout
  while true do
    ngx.sleep(HOLD_STEP)
    local _, apps, wakes = current()
    local peers = apps and apps[app]
    if not peers then return respond(404, { error = "unknown_app", app = app }) end
    if #peers > 0 then
      ngx.update_time()
      ngx.ctx.orch_held_for = ngx.now() - started -- not the app's latency: left out of its histogram
      return peers
    end
    if not wakes[app] then return respond(503, { error = "no_healthy_replica", app = app }) end
    if ngx.now() >= deadline then
      return give_up(503, { error = "wake_timeout", app = app,
        detail = string.format("%s did not wake within %gs (wake.timeoutSeconds)", app, bounds.timeout) },
        RETRY_TIMEOUT)
    end
    want_wake(app)
  end
end

-- access_by_lua on the public server: pick the app by host (<app>.<domain>) or by path prefix (/<app>/...).
function _M.route()
  local host = (ngx.var.host or ""):lower()
  local uri = ngx.var.request_uri -- raw, as the client sent it: forwarded without re-encoding
  local tls = ngx.var.https == "on"
  if not tls and uri:sub(1, #ACME_PREFIX) == ACME_PREFIX then -- HTTP-01: answered here on every node
    local answer = ngx.shared[EDGE]:get("acme:" .. uri:sub(#ACME_PREFIX + 1):gsub("%?.*$", ""))
    if answer then
      ngx.header["Content-Type"] = "text/plain"
      ngx.print(answer)
      return ngx.exit(200)
    end
  end
  local hosts, off = edge_rules()
  local rule = match_rule(hosts, host, uri)
  local suffix = "." .. conf.domain
  local app, prefix, bare
  if rule then
    app = rule.app
    if not tls and rule.redirect and rule.tls ~= "off" and conf.tls_port then
      local method = ngx.req.get_method()
      local port = conf.tls_port == 443 and "" or (":" .. conf.tls_port)
      return ngx.redirect("https://" .. host .. port .. uri, (method == "GET" or method == "HEAD") and 301 or 308)
    end
    if tls and rule.hsts then ngx.var.orch_hsts = "max-age=31536000" end
    if rule.strip and rule.path ~= "/" then
      prefix = rule.path
      local rest = uri:sub(#rule.path + 1)
      uri = (rest == "" or rest:sub(1, 1) == "?") and ("/" .. rest) or rest
    end
  elseif #host > #suffix and host:sub(-#suffix) == suffix then
    app = host:sub(1, -#suffix - 1)
    if not valid_app(app) or off[app] then return respond(404, { error = "unknown_app", app = cjson.null }) end
  else
    local segment, rest = uri:match("^/([^/?]*)(.*)$")
    if not valid_app(segment) or off[segment] then return respond(404, { error = "unknown_app", app = cjson.null }) end
    app, prefix = segment, "/" .. segment
    bare = rest == "" or rest:sub(1, 1) == "?"
    uri = bare and "/" or rest
  end
  ngx.var.orch_app = app
  local generation, apps, wakes = current()
  if not generation then return respond(503, { error = "no_routes", app = app }) end
  ngx.var.orch_generation = generation
  local peers = apps[app]
  if not peers then return respond(404, { error = "unknown_app", app = app }) end
  if bare then
    -- /<app> -> /<app>/ so that the app's relative links resolve under its prefix.
    local method = ngx.req.get_method()
    local query = ngx.var.is_args .. (ngx.var.args or "")
    return ngx.redirect(prefix .. "/" .. query, (method == "GET" or method == "HEAD") and 301 or 308)
  end
  if #peers == 0 then
    local bounds = wakes[app]
    if not bounds then return respond(503, { error = "no_healthy_replica", app = app }) end
    peers = hold(app, bounds) -- answers 503 or 404 itself when it gives up
  end
  ngx.ctx.orch_peers = live_peers(peers)
  if conf.count_traffic then
    ngx.shared[STATS]:incr("a:" .. app, 1, 0) -- open until the log phase (done)
    ngx.ctx.orch_active = app
  end
  ngx.var.orch_uri = uri
  ngx.var.orch_prefix = prefix or ""
end

-- balancer_by_lua: round-robin per worker; a retry (proxy_next_upstream) takes the next peer in turn.
function _M.balance()
  local ctx = ngx.ctx
  local peers = ctx.orch_peers
  local tries = ctx.orch_tries
  if not tries then
    local n = (rr[ngx.var.orch_app] or 0) + 1
    rr[ngx.var.orch_app] = n
    ctx.orch_first = n
    tries = 0
    if #peers > 1 then balancer.set_more_tries(#peers - 1) end
  end
  if tries > 0 and ctx.orch_inflight and balancer.get_last_failure() == "failed" then
    mark_down(ctx.orch_inflight, PASSIVE_DOWN) -- its connection failed: others skip it for a moment
  end
  ctx.orch_tries = tries + 1
  local peer = peers[(ctx.orch_first + tries - 1) % #peers + 1]
  local inflight = ngx.shared[INFLIGHT]
  if ctx.orch_inflight then inflight:incr(ctx.orch_inflight, -1, 0) end
  inflight:incr(peer.address, 1, 0)
  ctx.orch_inflight = peer.address
  local ok, err = balancer.set_current_peer(peer.host, peer.port)
  if not ok then
    ngx.log(ngx.ERR, "orchestry: set_current_peer failed: ", err)
    return ngx.exit(502)
  end
end

local function bucket(ms)
  for i, bound in ipairs(BOUNDS) do
    if ms <= bound then return i end
  end
  return #BOUNDS + 1
end

-- log_by_lua on the public server: the request is over, its replica has one request less in flight, and
-- it counts in its app's traffic (only requests that were routed to a replica count).
function _M.done()
  local ctx = ngx.ctx
  if ctx.orch_held then
    local wake = ngx.shared[WAKE]
    if wake:incr("h:" .. ctx.orch_held, -1, 0) <= 0 then -- none held any more: no wake is wanted
      wake:delete("s:" .. ctx.orch_held)
      wake:delete("w:" .. ctx.orch_held)
    end
    ctx.orch_held = nil
  end
  local address = ctx.orch_inflight
  if address then
    ngx.shared[INFLIGHT]:incr(address, -1, 0)
    ctx.orch_inflight = nil
    -- A 502 before any response header from the last peer tried (a POST is never retried): its connection
    -- was refused or dropped, as a dead replica's is. Mark it for a moment.
    if ngx.status == 502 then
      local header_time = ngx.var.upstream_header_time or ""
      if header_time:sub(-1) == "-" then mark_down(address, PASSIVE_DOWN) end
    end
  end
  local app = ctx.orch_active
  if not app then return end
  ctx.orch_active = nil
  local stats = ngx.shared[STATS]
  stats:incr("a:" .. app, -1, 0)
  stats:incr("r:" .. app, 1, 0)
  if ngx.status >= 500 then stats:incr("e:" .. app, 1, 0) end
  local ms = math.max(0, (tonumber(ngx.var.request_time) or 0) - (ctx.orch_held_for or 0)) * 1000
  stats:incr("h:" .. app .. ":" .. bucket(ms), 1, 0)
  stats:incr("t:" .. app, ms, 0) -- summed latency: a Prometheus histogram's _sum
  if address then stats:incr("u:" .. app .. "|" .. address, 1, 0) end
end

-- access_by_lua on the control server: a write needs the node's control secret (reads are open).
function _M.control_access()
  ngx.ctx.orch_control = true
  local method = ngx.req.get_method()
  if method == "GET" or method == "HEAD" then return end
  local given = ngx.req.get_headers()[SECRET_HEADER]
  if given == nil then
    return respond(401, { error = "unauthorized", detail = "writes need the " .. SECRET_HEADER .. " header" })
  end
  if not conf.control_secret then
    return respond(503, { error = "no_control_secret", detail = "nginx read no control secret at start" })
  end
  if not same_secret(given, conf.control_secret) then
    return respond(403, { error = "forbidden", detail = "the control secret is wrong" })
  end
end

-- Control server (loopback only): GET or PUT /_orchestry/routes. `?replace=1` stores the table even when
-- nginx serves a higher generation: the controller's way to repair a table it did not write.
function _M.control_routes()
  local method = ngx.req.get_method()
  if method == "GET" then
    local raw = ngx.shared[DICT]:get("table")
    return respond(200, raw or '{"generation":null,"apps":{}}')
  end
  if method ~= "PUT" then return not_allowed("GET, PUT") end
  local decoded, json_err = json_body()
  if decoded == nil then return respond(400, { error = "invalid_json", detail = json_err }) end
  local generation, apps, wake = check_table(decoded)
  if not generation then return respond(400, { error = "invalid_routes", detail = apps }) end
  local ok, served, err = store(generation, apps, ngx.var.arg_replace == "1", wake)
  if err then return respond(503, { error = "not_stored", detail = err }) end
  if not ok then return respond(409, { error = "stale_generation", generation = served }) end
  return respond(200, string.format('{"generation":%d}', generation))
end

-- PUT /_orchestry/down {"addresses": ["ip:port", ...], "seconds": n}: skip these replicas for n seconds
-- (1..60), until a table without them arrives. The controller's first act when a replica's container dies.
-- GET: the marks in force, each with the seconds it has left.
function _M.control_down()
  local method = ngx.req.get_method()
  if method == "GET" then -- the marks in force: address -> seconds left
    ngx.update_time()
    local marks, now = {}, ngx.now()
    for address, expiry in pairs(down_marks()) do
      if expiry > now then marks[address] = expiry - now end
    end
    return respond(200, next(marks) and cjson.encode(marks) or "{}")
  end
  if method ~= "PUT" then return not_allowed("GET, PUT") end
  local decoded = json_body()
  if type(decoded) ~= "table" or type(decoded.addresses) ~= "table" then
    return respond(400, { error = "invalid_down", detail = "addresses must be a list" })
  end
  local seconds = decoded.seconds
  if type(seconds) ~= "number" or seconds < 1 or seconds > MAX_DOWN then
    return respond(400, { error = "invalid_down", detail = "seconds must be a number from 1 to " .. MAX_DOWN })
  end
  for _, addr in ipairs(decoded.addresses) do
    if not parse_peer(addr) then return respond(400, { error = "invalid_address", detail = tostring(addr) }) end
  end
  for _, addr in ipairs(decoded.addresses) do mark_down(addr, seconds) end
  return respond(200, { down = #decoded.addresses })
end

-- Every replica address with requests open through this nginx, and their counts (a JSON object).
local function inflight_json()
  local inflight = ngx.shared[INFLIGHT]
  local counts = {}
  for _, key in ipairs(inflight:get_keys(0)) do
    local n = inflight:get(key)
    if n and n > 0 then counts[key] = n end
  end
  return next(counts) and cjson.encode(counts) or "{}"
end

-- GET /_orchestry/generation -> {"generation": n|null}; with ?inflight=1 also "inflight" (as GET
-- /_orchestry/inflight answers), read in the same request: the route mirror's one call a pass, and a pair
-- that is consistent (no request picks a replica outside a table once that table's generation is served).
function _M.control_generation()
  local generation = current_generation()
  local body = generation and string.format('"generation":%d', generation) or '"generation":null'
  if ngx.req.get_uri_args().inflight then body = body .. ',"inflight":' .. inflight_json() end
  return respond(200, "{" .. body .. "}")
end

-- GET /_orchestry/inflight?address=ip:port -> {"address": n}; without an address, every non-zero count.
function _M.control_inflight()
  local address = ngx.req.get_uri_args().address
  if type(address) == "table" then return respond(400, { error = "invalid_address" }) end
  if not address then return respond(200, inflight_json()) end
  if not parse_peer(address) then return respond(400, { error = "invalid_address" }) end
  return respond(200, cjson.encode({ [address] = math.max(0, ngx.shared[INFLIGHT]:get(address) or 0) }))
end

-- GET /_orchestry/wakes?after=N&wait=S -> {"seq": n, "apps": {"<app>": {"held": k, "age": s}}}: the wakes
-- wanted now (an app with requests held, recorded within the last WANT_SECONDS), answered as soon as "seq"
-- passes N or after S seconds (at most MAX_WAKES_WAIT; 0: at once). The controller of this node keeps one
-- open (controller/wake.py): a wake reaches it within WAKES_POLL seconds, not at its next pass.
function _M.control_wakes()
  local args = ngx.req.get_uri_args()
  local after, wait = tonumber(args.after) or -1, tonumber(args.wait) or 0
  if wait < 0 or wait > MAX_WAKES_WAIT then
    return respond(400, { error = "invalid_wait", detail = "wait must be from 0 to " .. MAX_WAKES_WAIT .. " seconds" })
  end
  local wake = ngx.shared[WAKE]
  ngx.update_time()
  local deadline = ngx.now() + wait
  while (wake:get("seq") or 0) <= after and ngx.now() < deadline do
    ngx.sleep(WAKES_POLL)
  end
  ngx.update_time()
  local now, apps = ngx.now(), {}
  for _, key in ipairs(wake:get_keys(0)) do
    local held = key:sub(1, 2) == "w:" and (wake:get("h:" .. key:sub(3)) or 0) or 0
    if held > 0 then -- a request is held now (a wake wanted for requests already answered is stale)
      local since = wake:get("s:" .. key:sub(3))
      apps[key:sub(3)] = { held = held, age = since and math.max(0, now - since) or 0 }
    end
  end
  local body = string.format('{"seq":%d,"apps":%s}', wake:get("seq") or 0, next(apps) and cjson.encode(apps) or "{}")
  return respond(200, body)
end

-- GET /_orchestry/stats: every counter (see STATS), for nginx/traffic.py.
function _M.control_stats()
  local stats = ngx.shared[STATS]
  local apps = {}
  local function app_entry(name)
    local entry = apps[name]
    if not entry then
      local buckets = {}
      for i = 1, #BOUNDS + 1 do buckets[i] = 0 end
      entry = { requests = 0, errors = 0, active = 0, latency_ms = 0, buckets = buckets, replicas = {} }
      apps[name] = entry
    end
    return entry
  end
  for _, key in ipairs(stats:get_keys(0)) do
    local value = stats:get(key)
    if value then
      local kind, rest = key:sub(1, 1), key:sub(3)
      if kind == "r" then app_entry(rest).requests = value
      elseif kind == "e" then app_entry(rest).errors = value
      elseif kind == "a" then app_entry(rest).active = math.max(0, value)
      elseif kind == "t" then app_entry(rest).latency_ms = value
      elseif kind == "h" then
        local name, i = rest:match("^(.*):(%d+)$")
        if name then app_entry(name).buckets[tonumber(i)] = value end
      elseif kind == "u" then
        local name, address = rest:match("^(.*)|(.*)$")
        if name then app_entry(name).replicas[address] = value end
      end
    end
  end
  local body = cjson.encode({ bounds = BOUNDS, apps = apps, load = conf.load,
    started = ngx.shared[STATS]:get("started") })
  return respond(200, body)
end

-- PUT /_orchestry/confirmed {"generation": n}: this node's controller read the stored table and n is it.
-- The controller confirms about once a second; the time is kept in the routes dict (a reload keeps it, a
-- restart forgets it: a table loaded from the routes file is unconfirmed until the controller says so).
function _M.control_confirmed()
  if ngx.req.get_method() ~= "PUT" then return not_allowed("PUT") end
  local decoded = json_body()
  local g = type(decoded) == "table" and decoded.generation
  if not valid_generation(g) then
    return respond(400, { error = "invalid_generation", detail = "generation must be an integer from 0 to 2^53 - 1" })
  end
  local dict = ngx.shared[DICT]
  local served = current_generation()
  if served ~= g then
    return respond(409, { error = "stale_generation", generation = served or cjson.null })
  end
  dict:set("confirmed_at", ngx.now())
  return respond(200, string.format('{"generation":%d}', g))
end

-- GET /_orchestry/ready on the public port, for a load balancer in front of several nodes: 200 while this
-- node's controller confirms the table nginx serves, 503 once it has been silent for `stale_after` seconds
-- (the controller is dead or cut off from the database: the table may miss replicas the leader changed
-- since). nginx keeps routing its last table either way; the answer only tells the balancer to prefer others.
function _M.ready()
  local generation = current_generation()
  local confirmed = ngx.shared[DICT]:get("confirmed_at")
  local age = confirmed and ngx.now() - confirmed
  if generation and age and age <= conf.stale_after then
    return respond(200, string.format('{"ready":true,"generation":%d,"confirmed_seconds_ago":%.3f}', generation, age))
  end
  local detail
  if not generation then
    detail = "no routing table yet"
  elseif not age then
    detail = "the routing table was not confirmed by this node's controller since nginx started"
  else
    detail = string.format("the routing table was last confirmed by this node's controller %.1f s ago (limit %g s)",
      age, conf.stale_after)
  end
  return respond(503, { ready = false, error = "stale_routes", detail = detail,
    generation = generation or cjson.null })
end

-- Which configuration load this worker belongs to (see init), for confirming a reload.
function _M.control_status()
  local generation = current_generation()
  return respond(200, string.format('{"load":%d,"pid":%d,"generation":%s}', conf.load, ngx.worker.pid(),
    generation and string.format("%d", generation) or "null"))
end

return _M
