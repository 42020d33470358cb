"""One module definition for every set of identical copies in an export.

Amaranth writes a module definition per instance: the default design has 256 decoder
lanes in three forms, four passes, four ingress parsers, and each of them is a module of
its own, with its own generated names (`\\port$145011$0`, `_12_`). `dedupe` finds the
definitions that are the same circuit and keeps the first of each set, in one of two forms:

- `shared=True` (the export, `aggswitch.export.generate`): every instance of a copy
  instantiates the kept definition, its connections renamed port for port, and the copy
  is left out. The instance names, and so every hierarchical path, stay as they were. The
  default export is less than half the size, and Verilator reads and compiles it in about
  two thirds of the CPU time (README, "Verilog export").
- `shared=False` (`make timing --dedupe` on any Verilog in write_verilog's form): every
  other copy becomes a wrapper, its own header and port declarations around one instance
  (named WRAPPED) of the kept definition, port for port. The modules that instantiate
  copies are left as they are, text and names, so Yosys maps them as it did without this
  step; scripts/timing.py leaves the wrapper's instance out of the block paths, so the
  report has every copy, path and LUT as before.

Two definitions are the same circuit when their texts are equal after renaming the
generated names (escaped identifiers, `_N_`) in order of first appearance, the port list
first, with every copy they instantiate taken as its kept definition (bottom-up). Names
that Amaranth took from the design (`bits`, `q__0`, `lane7`) must be equal. The port
lists map a copy's ports to the kept definition's by position. Every name in a
write_verilog module body is declared in that body (no hierarchical references), so two
texts equal up to a one-to-one renaming are the same circuit.

Command line (the wrapper form): `python scripts/verilog_dedupe.py IN.v OUT.v`.
"""
import re
import sys
from pathlib import Path

MODULE = re.compile(r"^module (\S+)\s*\((.*?)\);\n(.*?)^endmodule\n", re.M | re.S)
# write_verilog's instantiation: the type and the instance name on one line, then one
# `.port(expression)` a line, then `  );`
INSTANCE = re.compile(r"^  (\S+)\s+(\S+) \(\n((?:    \..*\n)*?)  \);\n", re.M)
CONNECTION = re.compile(r"^    \.(\\\S+ |[A-Za-z_][A-Za-z0-9_$]*)\((.*)\),?$", re.M)
# Generated names: escaped identifiers (a backslash, then up to a space) and `_12_`.
GENERATED = re.compile(r"\\\S+ |\b_\d+_\b")
IDENT = re.compile(r"\\\S+ |[A-Za-z_][A-Za-z0-9_$]*")


class Module:
    def __init__(self, prefix, header, name, ports, body):
        self.prefix, self.header, self.name, self.body = prefix, header, name, body
        self.ports_text = ports
        self.ports = [p.strip() for p in IDENT.findall(ports)]

    def text(self):
        return f"{self.prefix}{self.header}{self.body}endmodule\n"


def parse(text: str):
    """(head, [Module], tail) of write_verilog's output."""
    modules, pos = [], 0
    head = None
    for m in MODULE.finditer(text):
        between = text[pos:m.start()]
        if head is None:
            # attributes just above the first module belong to it
            cut = between.rfind("\n\n") + 2 if "\n\n" in between else 0
            head, between = between[:cut], between[cut:]
        header = m.group(0)[:m.start(3) - m.start()]
        modules.append(Module(between, header, m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    return head or "", modules, text[pos:]


def _instances(body: str, names):
    return [m for m in INSTANCE.finditer(body) if m.group(1) in names]


def _order(modules):
    """Children before parents."""
    by_name = {m.name: m for m in modules}
    done, order = set(), []

    def visit(m, stack=()):
        if m.name in done:
            return
        if m.name in stack:
            raise ValueError(f"recursive module {m.name}")
        for inst in _instances(m.body, by_name):
            visit(by_name[inst.group(1)], stack + (m.name,))
        done.add(m.name)
        order.append(m)
    for m in modules:
        visit(m)
    return order


def canonical(ports_text: str, body: str, keep=frozenset()) -> str:
    names = {}

    def rename(m):
        s = m.group(0)
        if s.strip() in keep:
            return s
        if s not in names:
            names[s] = f"\\n{len(names)} " if s.startswith("\\") else f"_n{len(names)}_"
        return names[s]
    return GENERATED.sub(rename, ports_text + ");\n" + body)


# The instance of the kept definition in a copy's wrapper: scripts/timing.py leaves it out
# of the block paths, so the copy's cells are named as without the wrapper.
WRAPPED = "__dedupe__"
PORT_DECL = re.compile(r"^  (?:input|output|inout)\b.*\n", re.M)


def _name(n: str) -> str:
    return n + " " if n.startswith("\\") else n


def wrapper(copy: Module, kept: Module) -> str:
    """`copy`'s header and port declarations around an instance of `kept`, port for port."""
    conns = ",\n".join(f"    .{_name(k)}({_name(c)})" for c, k in zip(copy.ports, kept.ports))
    decls = "".join(PORT_DECL.findall(copy.body))
    return (f"{copy.prefix}{copy.header}{decls}  {_name(kept.name)} {WRAPPED} (\n{conns}\n  );\n"
            "endmodule\n")


def dedupe(text: str, shared: bool = False):
    """(`text` with one definition for each set of identical modules, {copy: kept}): with
    `shared`, every instance of a copy instantiates the kept definition and the copy is
    left out; else each copy is a wrapper of the kept definition (module docstring). The
    modules that only a copy instantiated are left out."""
    head, modules, tail = parse(text)
    by_name = {m.name: m for m in modules}
    kept_of, port_map = {}, {}          # copy -> kept module name; -> {port: kept port}
    seen = {}                           # canonical text -> kept Module
    children = {}
    bodies = {}                         # module -> its body with copies as kept definitions
    for m in _order(modules):
        insts = _instances(m.body, by_name)
        children[m.name] = [i.group(1) for i in insts]

        def as_kept(inst):
            child = inst.group(1)
            if child not in kept_of:
                return inst.group(0)
            pm = port_map[child]

            def conn(c):
                new = _name(pm[c.group(1).strip()])
                return c.group(0).replace("." + c.group(1), "." + new, 1)
            conns = CONNECTION.sub(conn, inst.group(3))
            return f"  {kept_of[child]}  {inst.group(2)} (\n{conns}  );\n"
        # compared as if every copy it instantiates were its kept definition
        body = INSTANCE.sub(lambda i: as_kept(i) if i.group(1) in by_name else i.group(0), m.body)
        bodies[m.name] = body
        first = seen.setdefault(canonical(m.ports_text, body, keep=by_name.keys()), m)
        if first is not m:
            if len(first.ports) != len(m.ports):
                raise AssertionError(f"{m.name} matches {first.name} with another port count")
            kept_of[m.name] = first.name
            port_map[m.name] = dict(zip(m.ports, first.ports))
    # what the top instantiates, through the wrappers
    used = set()
    todo = [m.name for m in modules if not any(m.name in c for c in children.values())]
    while todo:
        name = todo.pop()
        if name in used:
            continue
        used.add(name)
        todo += [kept_of[name]] if name in kept_of else children[name]
    if shared:
        out = "".join(f"{m.prefix}{m.header}{bodies[m.name]}endmodule\n" for m in modules
                      if m.name in used and m.name not in kept_of)
    else:
        out = "".join(wrapper(m, by_name[kept_of[m.name]]) if m.name in kept_of else m.text()
                      for m in modules if m.name in used)
    return head + out + tail, kept_of


def main(argv=None):
    """IN.v OUT.v: the wrapper form (scripts/verilog_dedupe.py)."""
    src, dst = (argv or sys.argv[1:])[:2]
    out, kept_of = dedupe(Path(src).read_text())
    Path(dst).write_text(out)
    print(f"{len(kept_of)} copies of a module defined as wrappers of its first definition")
