-- Wireshark dissector for the AGG header of aggswitch (docs/SPEC.md §3, §10.5).
--
-- Registered on UDP port 0x4147 (16711), the switch's default AGG port, both as destination
-- (DATA, worker to switch) and source (RESULT, switch to worker); the port is a preference
-- (Edit > Preferences > Protocols > AGG) for switches configured with another one.
--
--   wireshark -X lua_script:tools/wireshark/aggswitch.lua capture.pcapng
--   tshark -X lua_script:tools/wireshark/aggswitch.lua -r capture.pcapng -V -Y agg
--
-- or copy the file into Wireshark's personal Lua plugins folder (Help > About > Folders).
-- Every header field is a filterable field (agg.op, agg.dtype, agg.flags.bank, agg.seq,
-- agg.timestamp, ...); flags and dtype are shown by name, a RESULT's bytes 15-18 as its
-- timestamp (the switch's cycle counter at completion), an MX payload's 64-byte scale line
-- as one E8M0 scale per 32-element block, and the element count is checked against the
-- payload length (agg.count_ok, and an expert warning when they disagree).

local agg = Proto("agg", "aggswitch AGG header")

local AGG_HDR_LEN = 22
local MX_SCALE_LINE = 64
local MX_BLOCK = 32

local OPS = { [0] = "DATA", [1] = "RESULT" }
local DTYPES = { [0] = "INT32", [1] = "FP32", [2] = "BF16", [3] = "MXINT8",
                 [4] = "MXFP8_E4M3", [5] = "MXFP8_E5M2" }
-- payload bytes per element; MX dtypes add the 64-byte scale line
local ELEM_BYTES = { [0] = 4, [1] = 4, [2] = 2, [3] = 1, [4] = 1, [5] = 1 }
local FLAGS = { { 0x01, "BANK" }, { 0x02, "RETX" }, { 0x04, "OVERFLOW" }, { 0x08, "NAN" },
                { 0x10, "UNICAST" } }

local f = agg.fields
f.version = ProtoField.uint8("agg.version", "Version", base.DEC, nil, 0xF0)
f.op = ProtoField.uint8("agg.op", "Op", base.DEC, OPS, 0x0F)
f.dtype = ProtoField.uint8("agg.dtype", "Data type", base.DEC, DTYPES)
f.job = ProtoField.uint16("agg.job", "Job", base.DEC)
f.slot = ProtoField.uint16("agg.slot", "Slot", base.DEC)
f.worker = ProtoField.uint8("agg.worker", "Worker", base.DEC)
f.flags = ProtoField.uint8("agg.flags", "Flags", base.HEX)
f.flag_bank = ProtoField.bool("agg.flags.bank", "BANK", 8, { "bank 1", "bank 0" }, 0x01)
f.flag_retx = ProtoField.bool("agg.flags.retx", "RETX", 8, { "retransmission", "first transmission" }, 0x02)
f.flag_overflow = ProtoField.bool("agg.flags.overflow", "OVERFLOW", 8, { "an element saturated", "no saturation" }, 0x04)
f.flag_nan = ProtoField.bool("agg.flags.nan", "NAN", 8, { "a contribution carried a NaN", "no NaN" }, 0x08)
f.flag_unicast = ProtoField.bool("agg.flags.unicast", "UNICAST", 8, { "resend to one port", "multicast" }, 0x10)
f.flag_other = ProtoField.uint8("agg.flags.other", "Undefined flag bits", base.HEX, nil, 0xE0)
f.seq = ProtoField.uint32("agg.seq", "Sequence", base.DEC)
f.count = ProtoField.uint16("agg.count", "Element count", base.DEC)
f.scale = ProtoField.int8("agg.scale", "Scale", base.DEC)
f.timestamp = ProtoField.uint32("agg.timestamp", "Timestamp (switch cycle at completion)", base.DEC)
f.reserved = ProtoField.bytes("agg.reserved", "Reserved")
f.payload = ProtoField.bytes("agg.payload", "Payload")
f.payload_len = ProtoField.uint32("agg.payload_len", "Payload length", base.DEC)
f.expected_len = ProtoField.uint32("agg.expected_len", "Payload length for count and dtype", base.DEC)
f.count_ok = ProtoField.bool("agg.count_ok", "Count matches the payload length")
f.mx_line = ProtoField.bytes("agg.mx.scale_line", "MX scale line")
f.mx_scale = ProtoField.uint8("agg.mx.scale", "Block scale (E8M0)", base.HEX)
f.mx_pad = ProtoField.bytes("agg.mx.padding", "Scale line padding")
f.elements = ProtoField.bytes("agg.elements", "Elements")

local e_count = ProtoExpert.new("agg.count_mismatch", "Element count does not match the payload length",
                                expert.group.MALFORMED, expert.severity.WARN)
local e_short = ProtoExpert.new("agg.short", "Shorter than the 22-byte AGG header",
                                expert.group.MALFORMED, expert.severity.ERROR)
local e_dtype = ProtoExpert.new("agg.unknown_dtype", "Unknown data type",
                                expert.group.PROTOCOL, expert.severity.WARN)
agg.experts = { e_count, e_short, e_dtype }

agg.prefs.udp_port = Pref.uint("UDP port", 0x4147, "The switch's AGG UDP port (default 0x4147 = 16711)")

local function flag_names(v)
    local names = {}
    for _, fl in ipairs(FLAGS) do
        if bit.band(v, fl[1]) ~= 0 then names[#names + 1] = fl[2] end
    end
    return table.concat(names, ", ")
end

local function e8m0_text(s)
    if s == 0xFF then return "NaN" end
    return string.format("2^%d", s - 127)
end

function agg.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "AGG"
    local t = tree:add(agg, tvb())
    if len < AGG_HDR_LEN then
        t:add_proto_expert_info(e_short)
        return len
    end
    local op = bit.band(tvb(0, 1):uint(), 0x0F)
    local dtype = tvb(1, 1):uint()
    local flags = tvb(7, 1):uint()
    local count = tvb(12, 2):uint()

    t:add(f.version, tvb(0, 1))
    t:add(f.op, tvb(0, 1))
    local dt = t:add(f.dtype, tvb(1, 1))
    if DTYPES[dtype] == nil then dt:add_proto_expert_info(e_dtype) end
    t:add(f.job, tvb(2, 2))
    t:add(f.slot, tvb(4, 2))
    local wt = t:add(f.worker, tvb(6, 1))
    if tvb(6, 1):uint() == 0xFF then wt:append_text(" (the switch)") end
    local ft = t:add(f.flags, tvb(7, 1))
    local names = flag_names(flags)
    if names ~= "" then ft:append_text(" (" .. names .. ")") end
    ft:add(f.flag_bank, tvb(7, 1))
    ft:add(f.flag_retx, tvb(7, 1))
    ft:add(f.flag_overflow, tvb(7, 1))
    ft:add(f.flag_nan, tvb(7, 1))
    ft:add(f.flag_unicast, tvb(7, 1))
    ft:add(f.flag_other, tvb(7, 1))
    t:add(f.seq, tvb(8, 4))
    t:add(f.count, tvb(12, 2))
    t:add(f.scale, tvb(14, 1))
    if op == 1 then
        t:add(f.timestamp, tvb(15, 4))
        t:add(f.reserved, tvb(19, 3))
    else
        t:add(f.reserved, tvb(15, 7))
    end

    local plen = len - AGG_HDR_LEN
    local pt = t:add(f.payload, tvb(AGG_HDR_LEN, plen))
    pt:add(f.payload_len, plen):set_generated()
    local mx = dtype >= 3 and dtype <= 5
    if ELEM_BYTES[dtype] ~= nil then
        local want = count * ELEM_BYTES[dtype] + (mx and MX_SCALE_LINE or 0)
        pt:add(f.expected_len, want):set_generated()
        local ok = pt:add(f.count_ok, want == plen):set_generated()
        if want ~= plen then
            ok:add_proto_expert_info(e_count, string.format(
                "count %d of %s needs %d payload bytes, the payload has %d",
                count, DTYPES[dtype], want, plen))
        end
    end
    local elems_at = AGG_HDR_LEN
    if mx and plen >= MX_SCALE_LINE then
        local lt = pt:add(f.mx_line, tvb(AGG_HDR_LEN, MX_SCALE_LINE))
        local blocks = math.min(math.floor(count / MX_BLOCK), MX_SCALE_LINE)
        for b = 0, blocks - 1 do
            local s = tvb(AGG_HDR_LEN + b, 1):uint()
            lt:add(f.mx_scale, tvb(AGG_HDR_LEN + b, 1)):append_text(
                string.format(" block %d: %s", b, e8m0_text(s)))
        end
        if blocks < MX_SCALE_LINE then
            lt:add(f.mx_pad, tvb(AGG_HDR_LEN + blocks, MX_SCALE_LINE - blocks))
        end
        elems_at = AGG_HDR_LEN + MX_SCALE_LINE
    end
    if len > elems_at then
        pt:add(f.elements, tvb(elems_at, len - elems_at))
    end

    local info = string.format("%s %s job %d slot %d seq %d count %d",
        OPS[op] or ("op " .. op), DTYPES[dtype] or ("dtype " .. dtype),
        tvb(2, 2):uint(), tvb(4, 2):uint(), tvb(8, 4):uint(), count)
    if op == 1 then
        info = info .. string.format(" ts %d", tvb(15, 4):uint())
    else
        info = info .. string.format(" worker %d", tvb(6, 1):uint())
    end
    if names ~= "" then info = info .. " [" .. names .. "]" end
    pinfo.cols.info = info
    return len
end

local registered_port = nil
local function register()
    local udp = DissectorTable.get("udp.port")
    if registered_port ~= nil then udp:remove(registered_port, agg) end
    registered_port = agg.prefs.udp_port
    udp:add(registered_port, agg)
end

function agg.prefs_changed()
    if registered_port ~= agg.prefs.udp_port then register() end
end

register()
