"""Executes one notebook in place on the Deno kernel and makes its outputs portable
(run by scripts/notebooks.ts: `execute-notebook.py NOTEBOOK REPO_ROOT`).

Deno's kernel (2.x) reports a cell finished before it has forwarded the cell's last
console.log lines, and nbclient stops listening at that point, so trailing output is lost at
random. Each cell therefore runs with two lines appended: a marker printed last, and a short
awaited pause that lets the kernel flush its stdout. A cell whose output does not end with
the marker lost some, and the notebook is run again (at most three times). The notebook is
saved with its own sources and without the markers.

Outputs lose ANSI colour codes, and the machine's paths become relative to notebooks/ (the
repository is "..", its parent "../..", HOME "~"). Prints the number of pictures last.
"""
import copy
import os
import re
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

MARKER = "<end of cell output>"
FLUSH = f"\n;console.log({MARKER!r});\nawait new Promise((resolve) => setTimeout(resolve, 40));"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TRIES = 3

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


def without_marker(outputs):
    """The outputs with the marker removed, or None when it is not the last thing printed."""
    streams = [o for o in outputs if o.output_type == "stream" and o.name == "stdout"]
    if not streams or not streams[-1].text.endswith(MARKER + "\n"):
        return None
    last = streams[-1]
    last.text = last.text[: -len(MARKER) - 1]
    return [o for o in outputs if o is not last or o.text]


def execute(original):
    nb = copy.deepcopy(original)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source += FLUSH
    try:
        NotebookClient(nb, timeout=120, kernel_name="deno", record_timing=False,
                       resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    except CellExecutionError as e:
        sys.exit(str(e))  # the cell and its error, without nbclient's traceback
    lost = False
    for cell, source in zip(nb.cells, (c.source for c in original.cells)):
        cell.source = source
        if cell.cell_type == "code":
            outputs = without_marker(cell.outputs)
            lost = lost or outputs is None
            cell.outputs = outputs or []
    return nb, lost


original = nbformat.read(path, as_version=4)
for attempt in range(1, TRIES + 1):
    nb, lost = execute(original)
    if not lost:
        break
    print(f"the kernel lost output of some cell (try {attempt} of {TRIES})", file=sys.stderr)
else:
    sys.exit(f"the kernel lost output in each of {TRIES} runs")

pictures = 0
for cell in nb.cells:
    if cell.cell_type == "code":
        cell.outputs = [nbformat.from_dict(portable(o)) for o in cell.outputs]
        pictures += sum(1 for o in cell.outputs if {"image/svg+xml", "image/png"} & set(o.get("data", {})))
nbformat.write(nb, path)
print(pictures)
