"""A small driver for the switch's register block, by register name (regmap.py).

It works over any object with `async read(addr) -> int` and `async write(addr, value)`
on 32-bit words at byte addresses: in simulation an adapter around cocotbext-axi's
AxiLiteMaster (tb/cocotb), on hardware whatever maps the AXI4-Lite window.
"""

from .params import Params
from .regmap import (by_name, PORT_COUNTERS, GLOBAL_COUNTERS, ID_MAGIC)


class RegisterError(Exception):
    pass


class AggSwitchDriver:
    def __init__(self, bus, params: Params = Params()):
        self.bus = bus
        self.params = params
        self.regs = by_name(params)

    async def read(self, name: str) -> int:
        return await self.bus.read(self.regs[name].offset)

    async def write(self, name: str, value: int):
        reg = self.regs[name]
        if reg.access != "rw":
            raise RegisterError(f"{name} is {reg.access}")
        if value >> reg.bits:
            raise RegisterError(f"{name} is {reg.bits} bits wide: 0x{value:X} does not fit")
        await self.bus.write(reg.offset, value)

    async def identify(self) -> dict:
        """Identification and elaborated parameters; raises if this is not an aggswitch."""
        ident = await self.read("ID")
        if ident != ID_MAGIC:
            raise RegisterError(f"ID reads 0x{ident:08X}, not 0x{ID_MAGIC:08X}")
        out = {}
        for name in ("VERSION", "PORTS", "DATA_WIDTH", "SLOTS", "SLOT_ELEMS", "JOBS", "LATENCY"):
            out[name.lower()] = await self.read(name)
        return out

    async def set_switch_address(self, mac: int, ip: int, agg_port: int):
        await self.write("SWITCH_MAC_HI", mac >> 32)
        await self.write("SWITCH_MAC_LO", mac & 0xFFFFFFFF)
        await self.write("SWITCH_IP", ip)
        await self.write("AGG_PORT", agg_port)

    async def configure_job(self, job: int, *, port_mask: int, slot_base: int, slot_count: int,
                            enable: bool = True):
        """Set a job's entry. The job is disabled while its fields change and enabled last,
        so no frame is admitted against a half-written entry."""
        p = self.params
        if not 0 <= job < p.jobs:
            raise RegisterError(f"job {job} out of range (jobs = {p.jobs})")
        if port_mask >> p.ports or (enable and port_mask == 0):
            raise RegisterError(f"port mask 0x{port_mask:X} invalid for {p.ports} ports")
        if slot_base < 0 or slot_count < 0 or slot_base + slot_count > p.slots:
            raise RegisterError(f"slots {slot_base}..{slot_base + slot_count - 1} outside the pool of {p.slots}")
        await self.write(f"JOB{job}_CTRL", 0)
        await self.write(f"JOB{job}_PORT_MASK", port_mask)
        await self.write(f"JOB{job}_SLOT_BASE", slot_base)
        await self.write(f"JOB{job}_SLOT_COUNT", slot_count)
        if enable:
            await self.write(f"JOB{job}_CTRL", 1)

    async def disable_job(self, job: int):
        await self.write(f"JOB{job}_CTRL", 0)

    async def job(self, job: int) -> dict:
        return {
            "enable": bool(await self.read(f"JOB{job}_CTRL") & 1),
            "port_mask": await self.read(f"JOB{job}_PORT_MASK"),
            "slot_base": await self.read(f"JOB{job}_SLOT_BASE"),
            "slot_count": await self.read(f"JOB{job}_SLOT_COUNT"),
        }

    async def counters(self) -> dict:
        """{"ports": [{counter: value} per port], "results": .., "overflows": .., "nans": ..}"""
        out = {"ports": []}
        for n in range(self.params.ports):
            out["ports"].append({c: await self.read(f"P{n}_{c.upper()}") for c in PORT_COUNTERS})
        for c in GLOBAL_COUNTERS:
            out[c] = await self.read(c.upper())
        return out
