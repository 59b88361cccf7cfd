-- ringman.lua: route each request to the instance ringman names for its key.
--
-- Use it from nginx's Lua module (Debian: libnginx-mod-http-lua), as
-- nginx/lua.conf does:
--
--   init_by_lua_block   { require("ringman").configure{ addr = "127.0.0.1:6380" } }
--   upstream ringman_backend {
--       server 0.0.0.1;   # never used: balance() picks every peer
--       balancer_by_lua_block { require("ringman").balance() }
--       keepalive 64;     # after balancer_by_lua_block, so it wraps it
--   }
--   location / {
--       access_by_lua_block { require("ringman").route(ngx.var.host .. ngx.var.uri) }
--       proxy_pass http://ringman_backend;
--   }
--
-- route(key [, opts]) runs in the access phase (set_by_lua cannot use
-- sockets). It asks ringman `RING.LOOKUP <key> <N> [service]` for N candidates,
-- owner first, and keeps them in ngx.ctx. balance() runs in balancer_by_lua:
-- on the first try it allows N-1 more tries (set_more_tries), and on every try
-- it sets the next candidate as the peer, so when the owner refuses
-- connections (or whatever proxy_next_upstream names) nginx moves on to the
-- instance that would own the key without it, with no second lookup.
--
-- Status codes:
--   no route (ringman answers nil / an empty array)  -> opts.no_route_status (404)
--   ringman unreachable, too slow, or an error reply -> 503, within the timeouts
--   every candidate failed (or none is usable)       -> 502 (nginx's own answer
--                                                       once the tries run out)
--
-- Choices:
--   * It speaks RESP itself over an ngx.socket.tcp cosocket instead of using
--     lua-resty-redis. The one command and its reply shape (an array of bulk
--     strings) take ~60 lines; in return the module does not depend on which
--     name the client library is installed under (Debian ships lua-resty-redis
--     0.27 as `nginx.redis`, OpenResty as `resty.redis`), it gets separate
--     connect/send/read timeouts (nginx.redis 0.27 has set_timeout() only),
--     and it bounds what it reads from the server (array and string sizes).
--     The key is sent as a RESP bulk string, so any byte in it (spaces, CR,
--     LF, NUL) is data, never protocol.
--   * Connections are pooled per worker with setkeepalive(); `addr` may be
--     "host:port" or "unix:/path/ringman.sock". A pooled connection the server
--     has closed (ringman restarted) fails on first use: that one lookup is
--     retried once on a fresh connection, so the worst case is twice the
--     timeouts; a fresh connection is never retried.
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
local tonumber = tonumber
local sub, byte, match = string.sub, string.byte, string.match

local _M = { _VERSION = "1.0" }

-- Defaults; configure() overrides them, route()'s opts override them per call.
local conf = {
    addr = "127.0.0.1:6380",  -- ringman --redis-addr ("host:port" or "unix:/path")
    password = nil,           -- ringman --requirepass
    service = nil,            -- nil: ringman's default service
    candidates = 3,           -- N of RING.LOOKUP: fail-over depth (ringman caps it at 8)
    connect_timeout = 100,    -- ms
    send_timeout = 100,       -- ms
    read_timeout = 250,       -- ms
    pool_size = 64,           -- idle connections kept per worker
    keepalive_timeout = 60000, -- ms an idle pooled connection is kept (ringman's --idle-timeout is longer)
    no_route_status = 404,
}

local MAX_ITEMS = 64     -- largest array reply accepted
local MAX_BULK = 4096    -- largest bulk string accepted ("host:port" is short)

local host, port -- parsed from conf.addr

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
local function read_bulk(sock, line)
    local n = tonumber(sub(line, 2))
    if not n then
        return nil, "bad bulk header " .. line
    end
    if n < 0 then
        return ngx.null
    end
    if n > MAX_BULK then
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
local function read_reply(sock)
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
        if n > MAX_ITEMS then
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
            local v, berr = read_bulk(sock, item)
            if v == nil then
                return nil, berr
            end
            out[i] = v
        end
        return out
    elseif t == 36 then -- '$'
        return read_bulk(sock, line)
    elseif t == 45 then -- '-'
        return false, sub(line, 2)
    elseif t == 43 or t == 58 then -- '+' or ':'
        return sub(line, 2)
    end
    return nil, "unexpected reply " .. sub(line, 1, 64)
end

-- ask sends one command and reads its reply on a pooled connection.
-- It returns the reply, or (false, msg) for an error reply, or nil, err.
local function ask(args, retry)
    local sock = tcp()
    sock:settimeouts(conf.connect_timeout, conf.send_timeout, conf.read_timeout)
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
        local res, rerr = read_reply(sock)
        if aerr or not res then
            sock:close()
            return nil, "AUTH: " .. (aerr or rerr or "refused")
        end
    end
    local _, serr = sock:send(command(args))
    local res, rerr
    if not serr then
        res, rerr = read_reply(sock)
    end
    if serr or res == nil then
        sock:close()
        if reused and not retry then
            -- The server may have closed this idle connection: once more on a new one.
            return ask(args, true)
        end
        return nil, conf.addr .. ": " .. (serr or rerr)
    end
    sock:setkeepalive(conf.keepalive_timeout, conf.pool_size)
    return res, rerr
end

-- lookup returns ringman's candidates for key (owner first), an empty
-- table when there is no route, or nil, err when ringman cannot answer.
function _M.lookup(key, service, n)
    local args = { "RING.LOOKUP", key, tostring(n or conf.candidates) }
    service = service or conf.service
    if service then
        args[4] = service
    end
    local res, err = ask(args)
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

-- route looks key up and keeps the usable candidates in ngx.ctx for
-- balance(); it ends the request with 404 (no route), 503 (ringman cannot
-- answer) or 502 (no usable candidate). opts: service, candidates,
-- no_route_status.
function _M.route(key, opts)
    opts = opts or {}
    local cands, err = _M.lookup(key, opts.service, opts.candidates)
    if not cands then
        ngx.log(ngx.ERR, "ringman: lookup failed: ", err)
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    if #cands == 0 then
        return ngx.exit(opts.no_route_status or conf.no_route_status)
    end
    local peers = {}
    for i = 1, #cands do
        peers[#peers + 1] = peer(cands[i])
    end
    if #peers == 0 then
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    ngx.ctx.ringman = { peers = peers, tried = 0 }
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
    if i == 1 and #st.peers > 1 then
        local ok, err = balancer.set_more_tries(#st.peers - 1)
        if not ok then
            ngx.log(ngx.ERR, "ringman: set_more_tries: ", err)
        end
    end
    local ok, err = balancer.set_current_peer(p[1], p[2])
    if not ok then
        ngx.log(ngx.ERR, "ringman: set_current_peer ", p[1], ":", p[2], ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

return _M
