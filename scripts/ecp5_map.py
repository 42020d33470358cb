"""The Yosys commands that synthesise for the ECP5, shared by `make synth`
(scripts/synth.py) and `make timing` (scripts/timing.py), so that the level report and
the routed build see the same mapping.

They are `synth_ecp5`'s own script, whose LUT mapping step can be changed. synth_ecp5
maps with `abc -lut 4:7`: LUT4 to LUT7, at an area cost of 1, 2, 4 and 8 LUT4s and a delay
of one level each. ABC's mapper minimises depth first, so it spends LUT7s (8 LUT4 sites
each) wherever they save a level. `lut_sizes` = "4:5" stops at LUT5 (a LUT4 pair and a
PFUMX in one slice): a function of more than five inputs then costs a level more. On one
universal decoder lane alone that halves the area (1,120 -> 541 LUT4-equivalents, 6 -> 8
levels), but on the whole flattened `PORTS=4 DATA_WIDTH=128` build it saves only 4 % of
the LUT4s, and four paths of the hierarchical report (`make timing`) become 9 levels deep
(README, "Measured (Lattice ECP5-85k)"). So the default stays synth_ecp5's own;
`make synth SYNTH_OPTS="--lut-sizes 4:5"` and `make timing TIMING_OPTS="--lut-sizes 4:5"`
build and report the other mapping.
"""

# LUT sizes the mapper may use (`abc -lut`): synth_ecp5's own.
LUT_SIZES = "4:7"

# synth_ecp5 options that bring their own LUT mapping: with them the default script runs.
OWN_MAPPING = ("-nowidelut", "-abc9", "-abc2", "-asyncprld", "-vpr")


def synth_ecp5(top, flags="", json=None, lut_sizes=LUT_SIZES):
    """Yosys commands (one string, a command per line) that run synth_ecp5 on the design
    read before them, with `abc -lut <lut_sizes>` as its LUT mapping step. `flags` are
    further synth_ecp5 options (e.g. -noflatten); `json` writes the netlist there."""
    opts = " ".join([f"-top {top}"] + flags.split())
    out = f" -json {json}" if json else ""
    if lut_sizes == "4:7" or any(f in flags.split() for f in OWN_MAPPING):
        return f"synth_ecp5 {opts}{out}\n"
    return (f"synth_ecp5 {opts} -run :map_luts\n"
            # synth_ecp5's map_luts step, with the LUT sizes changed
            "techmap -map +/ecp5/latches_map.v\n"
            f"abc -dress -lut {lut_sizes}\n"
            "clean\n"
            f"synth_ecp5 {opts} -run map_cells:{out}\n")
