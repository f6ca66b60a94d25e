-- Counts RESP (Redis) messages per TCP connection and direction, for the
-- tshark comparison tests: `tshark -q -r FILE -d tcp.port==P,resp
-- -X lua_script:resp_count.lua` with RESP_PORT=P in the environment.
--
-- Wireshark's RESP dissector has no request/response marker and shows an
-- array that spans TCP segments again in every segment (flagged
-- `resp.reassembled_in_next_frame`): a top-level element is one that arrives
-- when no array is open, and one carrying that flag is not counted (its
-- complete form comes later). Prints one line per connection and direction:
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
    counts[key] = counts[key] or { n = 0, err = 0 }
    local c = counts[key]
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
    close()
end

function tap.draw()
    for key, c in pairs(counts) do
        print(key .. " " .. c.n .. " " .. c.err)
    end
end
