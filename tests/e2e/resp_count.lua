-- Counts RESP (Redis) messages per TCP connection and direction, for the
-- tshark comparison tests: `tshark -q -r FILE -d tcp.port==P,resp
-- -X lua_script:resp_count.lua` with RESP_PORT=P in the environment.
--
-- Wireshark's RESP dissector has no request/response marker and shows an
-- array that spans TCP segments again in every segment (flagged
-- `resp.reassembled_in_next_frame`): a top-level element is one that arrives
-- when no array is open, and one carrying that flag is not counted (its
-- complete form comes later). Wireshark 4.0 does not always reassemble a
-- reply longer than a segment either (redis-cli's 172 KB COMMAND DOCS reply
-- over five segments): it shows the array's first part unflagged, and the
-- rest of its elements as top-level elements of the following segments. So
-- a top-level array still open at the end of an unflagged segment takes in
-- the rest of that direction until the other side speaks again (`open`).
-- Prints one line per connection and direction:
-- `STREAM req|rsp COUNT ERRORS`.
local port = tonumber(os.getenv("RESP_PORT"))
local tcp_stream = Field.new("tcp.stream")
local tcp_dstport = Field.new("tcp.dstport")

local ELEM = {
    ["resp.array"] = true, ["resp.bulk_string"] = true, ["resp.string"] = true,
    ["resp.error"] = true, ["resp.integer"] = true,
}

local counts = {}
local tap = Listener.new("frame", "resp", true)

function tap.packet(pinfo, tvb)
    local stream = tostring(tcp_stream().value)
    local dir = (tcp_dstport().value == port) and "req" or "rsp"
    local key = stream .. " " .. dir
    local other = stream .. " " .. ((dir == "req") and "rsp" or "req")
    counts[key] = counts[key] or { n = 0, err = 0, open = false }
    local c = counts[key]
    if counts[other] then counts[other].open = false end
    if c.open then return end
    local stack, top, partial = {}, nil, false
    local function close()
        if top and not partial then
            c.n = c.n + 1
            if top == "resp.error" then c.err = c.err + 1 end
        end
        top, partial = nil, false
    end
    for _, fi in ipairs({ all_field_infos() }) do
        local n = fi.name
        if n == "resp" then
            close(); stack = {}
        elseif n == "resp.reassembled_in_next_frame" or n == "resp.partial" then
            partial = true
        elseif ELEM[n] then
            if #stack == 0 then
                close(); top = n
            else
                stack[#stack] = stack[#stack] - 1
            end
            while #stack > 0 and stack[#stack] <= 0 do stack[#stack] = nil end
        elseif n == "resp.array.length" then
            local l = tonumber(tostring(fi.value)) or 0
            if l > 0 then stack[#stack + 1] = l end
            while #stack > 0 and stack[#stack] <= 0 do stack[#stack] = nil end
        end
    end
    c.open = #stack > 0 and not partial
    close()
end

function tap.draw()
    for key, c in pairs(counts) do
        print(key .. " " .. c.n .. " " .. c.err)
    end
end
