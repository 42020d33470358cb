"""Elaboration-time parameters of the switch (SPEC §1) and the figures derived from them."""

from dataclasses import dataclass


# AGG header and frame constants (SPEC §3).
HEADER_BYTES = 64
AGG_VERSION = 1
OP_DATA = 0
OP_RESULT = 1
RESULT_WORKER = 0xFF

# dtype codes (SPEC §4).
DTYPE_INT32 = 0
DTYPE_FP32 = 1
DTYPE_BF16 = 2
DTYPE_MXINT8 = 3
DTYPE_MXFP8_E4M3 = 4
DTYPE_MXFP8_E5M2 = 5

# MX payloads start with a 64-byte line of block scales (SPEC §3).
MX_SCALE_BYTES = 64
MX_BLOCK = 32

# AGG flag bits (SPEC §3).
FLAG_BANK = 1 << 0
FLAG_RETX = 1 << 1
FLAG_OVERFLOW = 1 << 2
FLAG_NAN = 1 << 3
FLAG_UNICAST = 1 << 4

# Drop reasons in the order of docs/SPEC.md §10.2 (the value is the counter index).
DROP_NOT_AGG = 0
DROP_MALFORMED = 1
DROP_JOB_DISABLED = 2
DROP_SLOT_RANGE = 3
DROP_WORKER = 4
DROP_MISMATCH = 5
DROP_DUPLICATE = 6
DROP_REASONS = ("not_agg", "malformed", "job_disabled", "slot_range", "worker", "mismatch", "duplicate")

# Reset defaults (docs/SPEC.md §10.1).
DEFAULT_MAC = 0x02_41_47_00_00_01
DEFAULT_IP = 0x0A_00_00_01  # 10.0.0.1
DEFAULT_AGG_PORT = 0x4147


@dataclass(frozen=True)
class Params:
    ports: int = 4
    data_width: int = 512
    slots: int = 64
    slot_elems: int = 256
    jobs: int = 4

    def __post_init__(self):
        if not 2 <= self.ports <= 32:
            raise ValueError(f"ports must be 2..32, not {self.ports}")
        if self.data_width not in (128, 256, 512, 1024):
            raise ValueError(f"data_width must be 128, 256, 512 or 1024, not {self.data_width}")
        if self.slot_elems < 32 or self.slot_elems % 32:
            raise ValueError(f"slot_elems must be a positive multiple of 32, not {self.slot_elems}")
        if self.slots < 1 or self.jobs < 1:
            raise ValueError("slots and jobs must be at least 1")

    # --- derived figures -------------------------------------------------
    @property
    def beat_bytes(self):
        return self.data_width // 8

    @property
    def header_beats(self):
        """Beats holding the 64-byte L2..AGG header: below data_width 1024 the payload
        starts beat-aligned after them; at 1024 the header is the lower half of beat 0
        (`half_header`)."""
        return max(1, HEADER_BYTES // self.beat_bytes)

    @property
    def half_header(self):
        """data_width 1024: the 64-byte header fills half a beat. A non-MX payload then
        starts in the upper half of wire beat 0, and the ingress realigns it by half a beat
        into its buffer (and the egress back onto the wire); an MX payload's scale line is
        that upper half, and its elements start aligned at wire beat 1
        (docs/ARCHITECTURE.md, "data_width 1024")."""
        return HEADER_BYTES % self.beat_bytes != 0

    @property
    def lanes(self):
        """INT32 (or FP32) elements carried by one beat: an accumulator *line*."""
        return self.data_width // 32

    @property
    def beat_lanes(self):
        """Elements of the densest dtype (MX, one byte each) in one beat: the lanes of a
        pass's decoders and adders, which take one whole beat per cycle in every dtype."""
        return self.data_width // 8

    @property
    def acc_width(self):
        """Exact accumulator width: 32 bits plus ceil(log2(ports)) guard bits (SPEC §4)."""
        return 32 + (self.ports - 1).bit_length()

    @property
    def max_payload_bytes(self):
        return max(4 * self.slot_elems, 64 + self.slot_elems)

    @property
    def max_payload_beats(self):
        return -(-self.max_payload_bytes // self.beat_bytes)

    @property
    def max_frame_bytes(self):
        return HEADER_BYTES + self.max_payload_bytes

    @property
    def buffer_beats(self):
        """Depth of each ingress payload buffer and egress data FIFO: room for the frame in
        the engine, the one decided behind it and two more streaming in. At data_width
        1024 a frame can be as short as one beat, so the payloads that arrive between a
        frame's last beat and its release (its pass: the ingress, descriptor FIFO,
        decision, job queue and phase, the pass itself) can outnumber four: the buffer
        holds as many beats more as that path has cycles."""
        beats = 4 * self.max_payload_beats
        if self.half_header:
            beats += self.slot_lines + 2 * self.ports + 16
        return 1 << (beats - 1).bit_length()

    @property
    def egress_beats(self):
        """Depth of each egress payload FIFO, the prefetch of the port's reader of the
        result buffer (resbuf.py): it reads against this many credits, and once it has
        had to wait for room it is back at the bank of its next beat within `ports - 1`
        cycles and its beat in the FIFO 3 later. So `ports + 6` beats keep the MAC fed
        from a RESULT's first beat to its last. An MX RESULT starts once all its element
        beats are in (its scale line comes with them), so they must fit too; the power of
        two above."""
        mx_beats = -(-self.slot_elems // self.beat_lanes) if self.mx_ok else 0
        return 1 << max(self.ports + 6, mx_beats + 2).bit_length()

    @property
    def order_bits(self):
        """Width of the arrival-order tag (docs/ARCHITECTURE.md): frames that commit in the
        same cycle share a tag, and the tag advances by one per cycle in which any frame
        commits. The engine takes frames strictly in arrival order, so the queued frames
        span at most ports x DESC_FIFO_DEPTH (8) tags, and a modular compare over twice
        that is exact."""
        return (self.ports * 8).bit_length() + 1

    @property
    def slot_lines(self):
        """Accumulator lines (of `lanes` elements) per (slot, bank). A pass takes one beat
        per cycle, which is one line of INT32 or FP32 elements, two of BF16 and four of MX
        elements, so this is also the longest pass: a full slot of 32-bit elements."""
        return -(-self.slot_elems // self.lanes)

    @property
    def mx_ok(self):
        """Whether this build has the MX dtypes: every data_width of SPEC §1 does. At 128
        bits a 32-element block spans `block_beats` = 2 beats and the scale line 4."""
        return True

    @property
    def mx_blocks(self):
        """Most MX blocks in a payload (count <= slot_elems and <= 2048, SPEC §3)."""
        return min(self.slot_elems, 2048) // MX_BLOCK

    @property
    def scale_beats(self):
        """Beats of the 64-byte MX scale line at the start of an MX payload, in the
        ingress buffer and on the wire after the header beats: 0 at data_width 1024,
        where the line is the upper half of the header beat (captured, never buffered)."""
        if self.half_header:
            return 0
        return max(1, MX_SCALE_BYTES // self.beat_bytes)

    @property
    def block_beats(self):
        """Payload beats per MX block: 2 at data_width 128 (16 MX elements a beat), else 1."""
        return max(1, MX_BLOCK // self.beat_lanes)

    def name(self):
        return f"p{self.ports}_w{self.data_width}_s{self.slots}_e{self.slot_elems}_j{self.jobs}"


def encoder_latency(params: Params = Params()) -> int:
    """Cycles through the result encoder (aggswitch.codec.BeatEncoder), the same for every
    dtype: an input register, stage 1 (int32 saturation, leading-zero count), a window of
    `block_beats - 1` more beats so that an MX block's shared exponent sees the whole
    block before its first element is encoded, stage 2 (normalisation; the MX shared
    exponent), stage 3 (FP32/BF16 rounding; the MX shift to the block's grid), stage 4 (MX
    rounding, in a build with MX dtypes) and an output register: each stage at most 8 LUT
    levels."""
    return params.block_beats + (4 if params.mx_ok else 3)


def latency(params: Params = Params()) -> int:
    """Cycles from the tlast handshake of a completing DATA frame to the first tvalid of its
    RESULT on an idle port (docs/SPEC.md §10.4). One constant per parameter set and for
    every dtype.

    The idle path is `slot_lines + encoder_latency + 2 * ports + 17`: 2 ingress stages
    (beat register, verdict), 2 through the descriptor FIFO, engine PICK, DECIDE and
    COMMIT, the pass (one cycle per payload beat, then 2 decode stages and accumulate),
    the result encoder, the emitter's output register (the last beat into the result
    buffer), then the destination's reader of the result buffer (`ports + 2`: its
    reference ready, its first read, up to `ports - 1` cycles more for its turn at the
    buffer's bank 0, the read data), 2 through the egress `done` FIFO and the output
    register. The longest pass is a full slot of 32-bit elements (`slot_lines` beats);
    shorter ones are padded to it, so the constant holds for every dtype and count. The pass of the frame's port starts between 3 cycles after the
    decision (its job queue) and `ports - 1` more (the port's phase in the bank rotation,
    docs/engine-v2.md): `ports + 2` cycles on the longest path. docs/ARCHITECTURE.md has
    the cycle-by-cycle table.

    At data_width 1024 (`half_header`) it is 2 cycles longer: the ingress verdict comes
    a stage later (a frame may be a single beat, header and payload together, and a
    realigned payload's last half beat is written the cycle after tlast), and the egress
    sends the header together with the first half of payload beat 0, so it waits for
    that beat in its output-side register.
    """
    half = 2 if params.half_header else 0
    return params.slot_lines + encoder_latency(params) + 13 + (params.ports + 2) + (params.ports + 2) + half
