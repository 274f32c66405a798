"""Executes one notebook in place on the Deno kernel and makes its outputs portable
(run by scripts/notebooks.ts: `execute-notebook.py NOTEBOOK REPO_ROOT`).

Deno's kernel (2.x) reports a cell finished before it has forwarded the cell's last
console.log lines, and nbclient stops listening at that point, so trailing output is lost at
random. Each cell therefore runs with a short awaited pause appended, which lets the kernel
flush its stdout first; the notebook is saved with its own sources.

Outputs lose ANSI colour codes, and the machine's paths become relative to notebooks/ (the
repository is "..", its parent "../..", HOME "~"). Prints the number of pictures last.
"""
import os
import re
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

FLUSH = "\n;await new Promise((resolve) => setTimeout(resolve, 40));"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

path, root = sys.argv[1], os.path.abspath(sys.argv[2])
swaps = [(root, ".."), (os.path.dirname(root), "../..")]  # longest first
home = os.environ.get("HOME", "/")
if home != "/":
    swaps.append((home, "~"))


def portable(value):
    if isinstance(value, str):
        value = ANSI.sub("", value)
        for old, new in swaps:
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    return value


nb = nbformat.read(path, as_version=4)
sources = [cell.source for cell in nb.cells]
for cell in nb.cells:
    if cell.cell_type == "code":
        cell.source += FLUSH
try:
    NotebookClient(nb, timeout=120, kernel_name="deno", record_timing=False,
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
except CellExecutionError as e:
    sys.exit(str(e))  # the cell and its error, without nbclient's traceback
finally:
    for cell, source in zip(nb.cells, sources):
        cell.source = source

pictures = 0
for cell in nb.cells:
    if cell.cell_type == "code":
        cell.outputs = [nbformat.from_dict(portable(o)) for o in cell.outputs]
        pictures += sum(1 for o in cell.outputs if {"image/svg+xml", "image/png"} & set(o.get("data", {})))
nbformat.write(nb, path)
print(pictures)
