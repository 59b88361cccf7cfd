-- ringman.lua: route each request to the instance ringman names for its key.
--
-- Use it from nginx's Lua module (Debian: libnginx-mod-http-lua), as
-- nginx/lua.conf does:
--
--   init_by_lua_block   { require("ringman").configure{ addr = "127.0.0.1:6380" } }
--   init_worker_by_lua_block { require("ringman").init_worker() }
--   upstream ringman_backend {          # the fast path
--       server 0.0.0.1;   # never used: pick() sets every peer
--       balancer_by_lua_block { require("ringman").pick() }
--       keepalive 64;     # after balancer_by_lua_block, so it wraps it
--   }
--   upstream ringman_routed {           # the slow path
--       server 0.0.0.1;
--       balancer_by_lua_block { require("ringman").balance() }
--       keepalive 64;
--   }
--   location / {
--       set $ringman_key $host$uri;
--       proxy_pass http://ringman_backend;
--       error_page 500 = @ringman;
--   }
--   location @ringman {
--       access_by_lua_block { require("ringman").route(ngx.var.ringman_key) }
--       proxy_pass http://ringman_routed;
--   }
--
-- pick([opts]) runs in balancer_by_lua alone: on the first try it finds up
-- to N candidates for $ringman_key in the worker's copy of the table (see
-- "table" below), allows N-1 more tries (set_more_tries) and sets the owner
-- as the peer; on each retry it sets the next candidate, so when the owner
-- refuses connections (or whatever proxy_next_upstream names) nginx moves
-- on to the instance that would own the key without it, with no second
-- lookup. What it cannot answer from a copy, it ends with 500, and
-- error_page sends the request to the slow path: route(key [, opts]) in the
-- access phase finds the candidates (from the copy or by a lookup) or ends
-- the request with the status codes below, and keeps them in ngx.ctx for
-- balance(), which tries them the same way.
--
-- Two modes (configure{ mode = ... }):
--   "table" (default): each worker keeps a copy of the service's placement
--     and of the overrides (RESP `RING.TABLE service epoch`, polled every
--     `refresh` seconds; an unchanged table costs one nil reply) and answers
--     each request itself: the override of the key's host if there is one,
--     else row xxhash64(key) % partitions of the table, exactly as ringman
--     answers (README: How it decides; router.Export documents the rules). No round trip per
--     request. A copy is at most `refresh` seconds behind ringman while polls
--     succeed; when they fail for longer than `max_stale` seconds the copy is
--     dropped and requests fall back to per-request lookups (so a dead
--     ringman means 503, as in "lookup" mode). The hash comes from Debian's
--     libxxhash0 (a dependency of apt, so always installed) through LuaJIT's
--     FFI; if it cannot be loaded, or ringman does not know RING.TABLE, the
--     module logs it once and uses "lookup" mode.
--   "lookup": one `RING.LOOKUP <key> <N> [service]` per request over a
--     pooled connection.
--
-- Status codes:
--   no route (no override and no live instance)      -> opts.no_route_status (404)
--   ringman unreachable, too slow, or an error reply -> 503, within the timeouts
--     (in "table" mode: only before the first table or once it is stale)
--   every candidate failed (or none is usable)       -> 502 (nginx's own answer
--                                                       once the tries run out)
--
-- Choices:
--   * It speaks RESP itself over an ngx.socket.tcp cosocket instead of using
--     lua-resty-redis. The two commands and their reply shapes (arrays of
--     bulk strings) take ~60 lines; in return the module does not depend on
--     which name the client library is installed under (Debian ships
--     lua-resty-redis 0.27 as `nginx.redis`, OpenResty as `resty.redis`), it
--     gets separate connect/send/read timeouts (nginx.redis 0.27 has
--     set_timeout() only), and it bounds what it reads from the server
--     (array and string sizes). The key is sent as a RESP bulk string, so any
--     byte in it (spaces, CR, LF, NUL) is data, never protocol.
--   * Connections are pooled per worker with setkeepalive(); `addr` may be
--     "host:port" or "unix:/path/ringman.sock". A pooled connection the server
--     has closed (ringman restarted) fails on first use: that one command is
--     retried once on a fresh connection, so the worst case is twice the
--     timeouts; a fresh connection is never retried.
--   * Each worker polls for itself: workers of one nginx may disagree for at
--     most `refresh` seconds after a change, as nginx boxes of a pool do.
--   * Hostnames are rejected, not resolved: balancer.set_current_peer takes
--     an IP literal only, and resolving in the access phase would need
--     lua-resty-dns (not packaged by Debian) plus a resolver config. A
--     candidate like "app.internal:8080" is skipped with one error log line
--     per name and worker ("advertise IP:port"); if no candidate is left the
--     answer is 502. Advertise IP:port in `ringman serve --service`, or use
--     nginx/auth_request.conf, whose proxy_pass resolves names through nginx's
--     `resolver`.
--   * Nothing is logged per request except failures.

local ngx = ngx
local balancer = require "ngx.balancer"

local tcp = ngx.socket.tcp
local tonumber, pairs, type = tonumber, pairs, type
local sub, byte, match, find, lower, gmatch = string.sub, string.byte, string.match, string.find, string.lower, string.gmatch
local min = math.min

local ffi = require "ffi"

-- xxh64 is XXH64 from Debian's libxxhash0 (ringman's key hash), or nil.
-- route() and init_worker() test libxxhash, not xxh64: that keeps the
-- library handle an upvalue, and so alive. A collected ffi.load handle
-- unloads the library under the function pointer (the worker crashes).
local libxxhash, xxh64
do
    local ok, lib = pcall(ffi.load, "libxxhash.so.0")
    if ok and pcall(ffi.cdef, "unsigned long long XXH64(const char *input, size_t length, unsigned long long seed);") then
        libxxhash, xxh64 = lib, lib.XXH64
    end
end

local _M = { _VERSION = "1.2" }

-- Defaults; configure() overrides them, route()'s opts override them per call.
local conf = {
    addr = "127.0.0.1:6380",  -- ringman --redis-addr ("host:port" or "unix:/path")
    password = nil,           -- ringman --requirepass
    service = nil,            -- nil: ringman's default service
    candidates = 3,           -- N of RING.LOOKUP: fail-over depth, 1 to MAX_CANDIDATES
    connect_timeout = 100,    -- ms
    send_timeout = 100,       -- ms
    read_timeout = 250,       -- ms
    pool_size = 64,           -- idle connections kept per worker
    keepalive_timeout = 60000, -- ms an idle pooled connection is kept (ringman's --idle-timeout is longer)
    no_route_status = 404,
    mode = "table",           -- "table": answer from a polled copy; "lookup": ask per request
    refresh = 0.1,            -- s between RING.TABLE polls ("table" mode)
    max_stale = 30,           -- s a copy is used after its last successful poll
    table_timeout = 2000,     -- ms to read a whole table (large override tables)
}

-- Bounds on what a reply may hold.
local LOOKUP_LIMITS = { items = 64, bulk = 4096 }          -- "host:port" is short
local TABLE_LIMITS = { items = 8, bulk = 64 * 1024 * 1024 } -- 2^20 partitions × 8 × 2 bytes fit

local host, port -- parsed from conf.addr

-- MAX_CANDIDATES is ringman's bound on N (router.MaxCandidates). ringman
-- refuses any other N instead of clamping it, so a bad one is refused here
-- too, where it is configured, rather than turning every lookup into a 503.
local MAX_CANDIDATES = 8

local function valid_candidates(n)
    return type(n) == "number" and n % 1 == 0 and n >= 1 and n <= MAX_CANDIDATES
end

local function check_candidates(n, level)
    if not valid_candidates(n) then
        error("ringman: candidates must be a whole number from 1 to " .. MAX_CANDIDATES .. ", got " .. tostring(n), level + 1)
    end
    return n
end

local function parse_addr(addr)
    if sub(addr, 1, 5) == "unix:" then
        return addr, nil
    end
    local h, p = match(addr, "^%[(.+)%]:(%d+)$")
    if not h then
        h, p = match(addr, "^([^:]+):(%d+)$")
    end
    p = tonumber(p)
    if not h or not p or p < 1 or p > 65535 then
        error("ringman: addr must be host:port or unix:/path, got " .. tostring(addr), 3)
    end
    return h, p
end

host, port = parse_addr(conf.addr)

-- configure sets module-wide options (call it from init_by_lua*).
function _M.configure(opts)
    for k, v in pairs(opts or {}) do
        if conf[k] == nil and k ~= "password" and k ~= "service" then
            error("ringman: unknown option " .. tostring(k), 2)
        end
        conf[k] = v
    end
    check_candidates(conf.candidates, 2)
    if conf.mode ~= "table" and conf.mode ~= "lookup" then
        error("ringman: mode must be \"table\" or \"lookup\", got " .. tostring(conf.mode), 2)
    end
    if conf.mode == "table" and not libxxhash then
        ngx.log(ngx.WARN, "ringman: libxxhash.so.0 cannot be loaded (apt-get install libxxhash0); ",
            "looking keys up per request")
    end
    host, port = parse_addr(conf.addr)
end

local function command(args)
    local buf = { "*", #args, "\r\n" }
    for i = 1, #args do
        local a = args[i]
        buf[#buf + 1] = "$"
        buf[#buf + 1] = #a
        buf[#buf + 1] = "\r\n"
        buf[#buf + 1] = a
        buf[#buf + 1] = "\r\n"
    end
    return buf -- cosockets send tables without concatenating
end

-- read_bulk reads the rest of a bulk string whose header line is line.
local function read_bulk(sock, line, limits)
    local n = tonumber(sub(line, 2))
    if not n then
        return nil, "bad bulk header " .. line
    end
    if n < 0 then
        return ngx.null
    end
    if n > limits.bulk then
        return nil, "bulk string of " .. n .. " bytes"
    end
    local data, err = sock:receive(n + 2)
    if not data then
        return nil, err
    end
    return sub(data, 1, n)
end

-- read_reply reads one reply: an array of strings (nil items allowed), a
-- string, ngx.null, or (false, message) for an error reply. Transport
-- errors return nil, err.
local function read_reply(sock, limits)
    local line, err = sock:receive() -- one line, CRLF stripped
    if not line then
        return nil, err
    end
    local t = byte(line)
    if t == 42 then -- '*'
        local n = tonumber(sub(line, 2))
        if not n then
            return nil, "bad array header " .. line
        end
        if n < 0 then
            return ngx.null
        end
        if n > limits.items then
            return nil, "array of " .. n .. " items"
        end
        local out = {}
        for i = 1, n do
            local item, ierr = sock:receive()
            if not item then
                return nil, ierr
            end
            if byte(item) ~= 36 then -- '$'
                return nil, "array item is not a bulk string: " .. sub(item, 1, 64)
            end
            local v, berr = read_bulk(sock, item, limits)
            if v == nil then
                return nil, berr
            end
            out[i] = v
        end
        return out
    elseif t == 36 then -- '$'
        return read_bulk(sock, line, limits)
    elseif t == 45 then -- '-'
        return false, sub(line, 2)
    elseif t == 43 or t == 58 then -- '+' or ':'
        return sub(line, 2)
    end
    return nil, "unexpected reply " .. sub(line, 1, 64)
end

-- ask sends one command and reads its reply on a pooled connection.
-- It returns the reply, or (false, msg) for an error reply, or nil, err.
local function ask(args, limits, read_timeout, retry)
    local sock = tcp()
    sock:settimeouts(conf.connect_timeout, conf.send_timeout, read_timeout)
    local ok, err
    if port then
        ok, err = sock:connect(host, port)
    else
        ok, err = sock:connect(host)
    end
    if not ok then
        return nil, "connect " .. conf.addr .. ": " .. err
    end
    local reused = sock:getreusedtimes() > 0
    if not reused and conf.password then
        local _, aerr = sock:send(command({ "AUTH", conf.password }))
        local res, rerr = read_reply(sock, LOOKUP_LIMITS)
        if aerr or not res then
            sock:close()
            return nil, "AUTH: " .. (aerr or rerr or "refused")
        end
    end
    local _, serr = sock:send(command(args))
    local res, rerr
    if not serr then
        res, rerr = read_reply(sock, limits)
    end
    if serr or res == nil then
        sock:close()
        if reused and not retry then
            -- The server may have closed this idle connection: once more on a new one.
            return ask(args, limits, read_timeout, true)
        end
        return nil, conf.addr .. ": " .. (serr or rerr)
    end
    sock:setkeepalive(conf.keepalive_timeout, conf.pool_size)
    return res, rerr
end

-- lookup returns ringman's candidates for key (owner first), an empty
-- table when there is no route, or nil, err when ringman cannot answer.
function _M.lookup(key, service, n)
    n = n or conf.candidates
    if not valid_candidates(n) then
        return nil, "candidates must be a whole number from 1 to " .. MAX_CANDIDATES .. ", got " .. tostring(n)
    end
    local args = { "RING.LOOKUP", key, tostring(n) }
    service = service or conf.service
    if service then
        args[4] = service
    end
    local res, err = ask(args, LOOKUP_LIMITS, conf.read_timeout)
    if res == nil then
        return nil, err
    end
    if res == false then
        return nil, "ringman error: " .. err
    end
    if res == ngx.null then
        return {}
    end
    if type(res) ~= "table" then
        return nil, "unexpected RING.LOOKUP reply " .. tostring(res)
    end
    local out = {}
    for i = 1, #res do
        if res[i] ~= ngx.null and res[i] ~= "" then
            out[#out + 1] = res[i]
        end
    end
    return out
end

local rejected = {} -- hostnames already logged, per worker
local rejected_count = 0

local function valid_ipv4(h)
    local a, b, c, d = match(h, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    return a and tonumber(a) < 256 and tonumber(b) < 256 and tonumber(c) < 256 and tonumber(d) < 256
end

-- peer splits "ip:port" / "[ipv6]:port"; nil for anything else.
local function peer(backend)
    local h, p = match(backend, "^%[([%x:.]+)%]:(%d+)$")
    if not h then
        h, p = match(backend, "^([^:]+):(%d+)$")
        if h and not valid_ipv4(h) then
            if not rejected[h] and rejected_count < 1000 then
                rejected[h] = true
                rejected_count = rejected_count + 1
                ngx.log(ngx.ERR, "ringman: candidate ", backend, " is a hostname; balancer_by_lua needs an ",
                    "IP literal, so it is skipped (advertise IP:port, or use auth_request.conf with a resolver)")
            end
            return nil
        end
    end
    p = tonumber(p)
    if not h or not p or p < 1 or p > 65535 then
        ngx.log(ngx.ERR, "ringman: candidate ", backend, " is not host:port; skipped")
        return nil
    end
    return { h, p }
end

-- The "table" mode: a per-worker copy of each service's RING.TABLE.

local tables = {}     -- service ("" = ringman's default) -> copy, see parse_table
local wanted = {}     -- services whose copies the timer refreshes
local no_table = {}   -- services that must use lookups (logged once)
local polling = false -- a refresh is running
local started = false -- the refresh timer is running in this worker
local failing = {}    -- service -> true while its polls fail (logged once)

-- parse_table turns a RING.TABLE reply into a copy:
-- { epoch, parts, width, tbl = raw uint16 table, peers = {peer or false},
--   names = {instance}, ov = {host -> backend}, nov, wild, ok_at }.
local function parse_table(res)
    if type(res) ~= "table" or #res ~= 8 or res[1] ~= "ringman-table/1" then
        return nil, "unknown RING.TABLE reply format " .. tostring(type(res) == "table" and res[1])
    end
    if res[3] ~= "xxhash64" then
        return nil, "ringman hashes keys with " .. res[3] .. ", which this module cannot compute"
    end
    local t = { epoch = res[2], parts = tonumber(res[4]), width = tonumber(res[5]), tbl = res[7],
                names = {}, peers = {}, ov = {}, nov = 0, wild = false }
    if not t.parts or not t.width or #t.tbl ~= 2 * t.parts * t.width then
        return nil, "RING.TABLE: table size does not match its partitions and width"
    end
    for inst in gmatch(res[6], "([^\n]+)\n") do
        t.names[#t.names + 1] = inst
        t.peers[#t.peers + 1] = peer(inst) or false
    end
    for h, b in gmatch(res[8], "([^\t\n]+)\t([^\n]+)\n") do
        t.ov[h] = b
        t.nov = t.nov + 1
        if byte(h) == 42 then -- '*'
            t.wild = true
        end
    end
    return t
end

-- fetch refreshes service's copy: one RING.TABLE with the epoch it has.
local function fetch(service)
    local t = tables[service]
    local res, err = ask({ "RING.TABLE", service, t and t.epoch or "" }, TABLE_LIMITS, conf.table_timeout)
    if res == nil then
        if not failing[service] then
            failing[service] = true
            ngx.log(ngx.ERR, "ringman: RING.TABLE ", service, ": ", err, " (the copy is used for up to ",
                conf.max_stale, " s more)")
        end
        return
    end
    if res == false and find(err, "unknown command", 1, true) then -- a ringman before RING.TABLE
        ngx.log(ngx.ERR, "ringman: RING.TABLE ", service, ": ", err, "; looking keys up per request instead")
        no_table[service], wanted[service], tables[service] = true, nil, nil
        return
    end
    if res == false then -- NOAUTH, a custom hash, ...: the copy ages like on a failed poll
        if not failing[service] then
            failing[service] = true
            ngx.log(ngx.ERR, "ringman: RING.TABLE ", service, ": ", err)
        end
        return
    end
    if failing[service] then
        failing[service] = nil
        ngx.log(ngx.NOTICE, "ringman: RING.TABLE ", service, " answers again")
    end
    if res == ngx.null then -- unchanged
        if t then
            t.ok_at = ngx.now()
        end
        return
    end
    local nt, perr = parse_table(res)
    if not nt then
        ngx.log(ngx.ERR, "ringman: ", perr, "; looking keys up per request instead")
        no_table[service], wanted[service], tables[service] = true, nil, nil
        return
    end
    nt.ok_at = ngx.now()
    tables[service] = nt
end

local function refresh(premature)
    if premature or polling then
        return
    end
    polling = true
    for service in pairs(wanted) do
        local ok, err = pcall(fetch, service)
        if not ok then
            ngx.log(ngx.ERR, "ringman: refreshing ", service, ": ", err)
        end
    end
    polling = false
end

-- want makes the worker keep a copy of service from now on.
local function want(service)
    if no_table[service] or wanted[service] then
        return
    end
    wanted[service] = true
    if not started then
        local ok, err = ngx.timer.every(conf.refresh, refresh)
        if not ok then
            ngx.log(ngx.ERR, "ringman: cannot start the refresh timer: ", err)
            wanted[service], no_table[service] = nil, true
            return
        end
        started = true
    end
    ngx.timer.at(0, refresh) -- the first copy now, not a refresh later
end

-- fresh returns service's copy when it may be used.
local function fresh(service)
    local t = tables[service]
    if t then
        if ngx.now() - t.ok_at <= conf.max_stale then
            return t
        end
        ngx.log(ngx.ERR, "ringman: the copy of service ", service, " is older than ", conf.max_stale,
            " s (ringman unreachable?); looking keys up per request until a poll succeeds")
        tables[service] = nil
    end
    want(service)
    return nil
end

-- override returns the backend of key's host in copy t (README: How it decides: the text
-- before the first '/' of a key that does not start with '/', without :port
-- and one trailing dot, lower-cased; exact host first, then the nearest
-- "*." wildcard), or nil.
local function override(t, key)
    if byte(key) == 47 or key == "" then -- '/'
        return nil
    end
    local host = match(key, "^[^/:]*")
    if byte(host, -1) == 46 then -- '.'
        host = sub(host, 1, -2)
    end
    if host == "" or #host > 253 then
        return nil
    end
    host = lower(host)
    local b = t.ov[host]
    if b or not t.wild then
        return b
    end
    local i = find(host, ".", 2, true)
    while i do
        b = t.ov["*" .. sub(host, i)]
        if b then
            return b
        end
        i = find(host, ".", i + 1, true)
    end
    return nil
end

-- from_table answers key from copy t: up to n candidates, owner first, as
-- peers ({ip, port}; unusable ones left out) or, with names, as the
-- instances' "host:port" strings; and whether the key had any candidate.
local function from_table(t, key, n, names)
    if t.nov > 0 then
        local b = override(t, key)
        if b then
            if names then
                return { b }, true
            end
            return { peer(b) }, true -- {} for an unusable backend: 502
        end
    end
    if t.width == 0 then
        return {}, false
    end
    local p = tonumber(xxh64(key, #key, 0) % t.parts)
    local at = p * t.width * 2 + 1
    local list, from = {}, names and t.names or t.peers
    for i = 0, min(n, t.width) - 1 do
        local lo, hi = byte(t.tbl, at + 2 * i, at + 2 * i + 1)
        local c = from[lo + hi * 256 + 1]
        if c then
            list[#list + 1] = c
        end
    end
    return list, true
end

-- copy returns the copy of the table route() may use, or nil.
local function copy(opts)
    if conf.mode == "table" and libxxhash then
        return fresh(opts.service or conf.service or "")
    end
    return nil
end

-- candidates returns up to N backends ("host:port") for key, owner first, as
-- route() would pick them, and where they came from ("table" or "lookup");
-- or nil, err. For logging and debugging from Lua code; opts as route's.
function _M.candidates(key, opts)
    opts = opts or {}
    local n = check_candidates(opts.candidates or conf.candidates, 2)
    local t = copy(opts)
    if t then
        return (from_table(t, key, n, true)), "table"
    end
    local cands, err = _M.lookup(key, opts.service, n)
    if not cands then
        return nil, err
    end
    return cands, "lookup"
end

-- init_worker starts keeping the default service's copy (call it from
-- init_worker_by_lua*); without it the first request of each service does.
function _M.init_worker()
    if conf.mode == "table" and libxxhash then
        want(conf.service or "")
    end
end

-- route finds key's candidates and keeps the usable ones in ngx.ctx for
-- balance(); it ends the request with 404 (no route), 503 (ringman cannot
-- answer) or 502 (no usable candidate). opts: service, candidates,
-- no_route_status.
function _M.route(key, opts)
    opts = opts or {}
    local n = check_candidates(opts.candidates or conf.candidates, 2)
    local t = copy(opts)
    local peers, found
    if t then
        peers, found = from_table(t, key, n)
    else
        local cands, err = _M.lookup(key, opts.service, n)
        if not cands then
            ngx.log(ngx.ERR, "ringman: lookup failed: ", err)
            return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
        end
        peers, found = {}, #cands > 0
        for i = 1, #cands do
            peers[#peers + 1] = peer(cands[i])
        end
    end
    if not found then
        return ngx.exit(opts.no_route_status or conf.no_route_status)
    end
    if #peers == 0 then
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    ngx.ctx.ringman = { peers = peers, tried = 0 }
end

-- try sets peers[i] as the peer of this try; on the first try it also
-- allows one more try per further candidate.
local function try(peers, i)
    if i == 1 and #peers > 1 then
        local ok, err = balancer.set_more_tries(#peers - 1)
        if not ok then
            ngx.log(ngx.ERR, "ringman: set_more_tries: ", err)
        end
    end
    local p = peers[i]
    local ok, err = balancer.set_current_peer(p[1], p[2])
    if not ok then
        ngx.log(ngx.ERR, "ringman: set_current_peer ", p[1], ":", p[2], ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

-- pick is route() and balance() in one, for balancer_by_lua alone: the
-- fast path of lua.conf. The key is the nginx variable $ringman_key (set it
-- in the location); opts: service, candidates. On the first try it answers
-- from the worker's copy of the table; when it cannot (no fresh copy yet or
-- any more, "lookup" mode, no route, no usable candidate) it ends the try
-- with ngx.ERROR, which nginx answers with 500, and the location's
-- `error_page 500 = @ringman` hands the request to route() and balance(),
-- which look the key up, or answer 404, 503 or 502 as they always do. The
-- balancer runs without the access phase's coroutine: measured about 10%
-- more requests per second than route() + balance() (make bench).
function _M.pick(opts)
    if balancer.get_last_failure() then -- a retry: the next candidate
        return _M.balance()
    end
    local key = ngx.var.ringman_key
    local t = key and copy(opts or conf)
    if not t then
        if not key then
            ngx.log(ngx.ERR, "ringman: pick() needs $ringman_key (set $ringman_key $host$uri; in the location)")
        end
        return ngx.exit(ngx.ERROR)
    end
    local n = check_candidates(opts and opts.candidates or conf.candidates, 2)
    local peers, found = from_table(t, key, n)
    if not found or not peers[1] then
        return ngx.exit(ngx.ERROR)
    end
    if #peers > 1 then
        ngx.ctx.ringman = { peers = peers, tried = 1 } -- for the retries
    end
    return try(peers, 1)
end

-- balance sets the next candidate as the peer of this try (balancer_by_lua).
function _M.balance()
    local st = ngx.ctx.ringman
    if not st then
        ngx.log(ngx.ERR, "ringman: balance() without route() in this request (access_by_lua missing?)")
        return ngx.exit(ngx.ERROR)
    end
    local i = st.tried + 1
    local p = st.peers[i]
    if not p then
        return ngx.exit(ngx.ERROR) -- no candidate left: nginx answers 502
    end
    st.tried = i
    return try(st.peers, i)
end

return _M
