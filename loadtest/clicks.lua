-- wrk request generator for loadtest/run: the same click traffic for
-- refedge and for the nginx reference.
--
-- Every request is a new visitor (distinct for 4,194,304 requests; an address in carrier-grade NAT
-- space, on no data-centre list, sent as X-Forwarded-For through a trusted
-- proxy on 127.0.0.1) clicking a random one of LINKS tracked links with the
-- headers a desktop Firefox sends on a navigation. After MAX_REQUESTS the
-- thread stops, so a run is bounded in count as well as in time.
--
-- done() prints one JSON line for the driver.

local links = tonumber(os.getenv("LINKS") or "10000")
local max_requests = tonumber(os.getenv("MAX_REQUESTS") or "3000000")
local seed = tonumber(os.getenv("SEED") or "1")

-- The request is assembled from pre-built pieces: string.format and
-- wrk.format per request would make wrk, not the server, the bottleneck.
local head = "GET "
local middle = " HTTP/1.1\r\n" ..
    "Host: 127.0.0.1\r\n" ..
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n" ..
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" ..
    "Accept-Language: en-US,en;q=0.5\r\n" ..
    "Sec-Fetch-Dest: document\r\n" ..
    "Sec-Fetch-Mode: navigate\r\n" ..
    "Sec-Fetch-Site: cross-site\r\n" ..
    "X-Forwarded-For: 100."
local tail = "\r\n\r\n"

local paths = {}
local octets = {}
local sent = 0
local visitor = 0

function init(args)
    math.randomseed(seed)
    for i = 0, links - 1 do
        paths[i] = string.format("/r/lt-%07d?utm_source=load", i)
    end
    for i = 0, 255 do
        octets[i] = tostring(i)
    end
    visitor = math.random(0, 4194303)
end

function request()
    sent = sent + 1
    if sent >= max_requests then
        wrk.thread:stop()
    end
    -- Visitors walk 100.64.0.0/10 from a random start: all distinct until
    -- 4,194,304 requests.
    visitor = (visitor + 1) % 4194304
    local v = visitor
    local c = v % 256; v = (v - c) / 256
    local b = v % 256; local a = (v - b) / 256
    return head .. paths[math.random(0, links - 1)] .. middle ..
        octets[64 + a] .. "." .. octets[b] .. "." .. octets[c] .. tail
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
        summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
        latency:percentile(50), latency:percentile(99)))
end
