#!/usr/bin/env python3
"""Checks the import graph of src/: no module uses another in a circle, and the layers are used
downwards only (each layer may use the root files and the layers before it):

    names -> lock -> session -> shared -> shapes -> api

A module's imports are the `crate::` paths in its file. Exits 1 with the offending edges."""
import pathlib
import re
import sys

LAYERS = ["names", "lock", "session", "shared", "shapes", "api"]
src = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path):
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts) or "lib"


modules = {module_of(path): path for path in src.rglob("*.rs")}
graph = {}
for module, path in modules.items():
    used = set()
    for match in re.finditer(r"crate::([a-z_]+(?:::[a-z_]+)*)", path.read_text()):
        parts = match.group(1).split("::")
        # The longest prefix that names a module of ours.
        for end in range(len(parts), 0, -1):
            candidate = "::".join(parts[:end])
            if candidate in modules:
                if candidate != module:
                    used.add(candidate)
                break
    graph[module] = used

problems = []
layer = {name: index for index, name in enumerate(LAYERS)}
for module, used in sorted(graph.items()):
    own = layer.get(module.split("::")[0])
    for target in sorted(used):
        theirs = layer.get(target.split("::")[0])
        if own is not None and theirs is not None and theirs > own:
            problems.append(f"{module} uses {target}, a layer above it")
        if own is None and module != "lib" and theirs is not None:
            problems.append(f"{module} (a root file) uses {target}, a layer")

# Circles: a depth-first search for a back edge.
state = {}
def visit(module, stack):
    state[module] = "open"
    stack.append(module)
    for target in sorted(graph[module]):
        if state.get(target) == "open":
            cycle = stack[stack.index(target):] + [target]
            problems.append("circle: " + " -> ".join(cycle))
        elif target not in state:
            visit(target, stack)
    stack.pop()
    state[module] = "done"

for module in sorted(graph):
    if module not in state:
        visit(module, [])

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"imports: {len(graph)} modules, {sum(map(len, graph.values()))} edges, no circle, "
      f"layers used downwards only")
