"""Executes one notebook in place on the Deno kernel (run by scripts/notebooks.ts).

Deno's kernel (2.x) reports a cell finished before it has forwarded the cell's last
console.log lines, and nbclient stops listening at that point, so trailing output is lost at
random. Each cell therefore runs with a short awaited pause appended, which lets the kernel
flush its stdout first; the notebook is saved with its own sources.
"""
import sys

import nbformat
from nbclient import NotebookClient

FLUSH = "\n;await new Promise((resolve) => setTimeout(resolve, 40));"

path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
sources = [cell.source for cell in nb.cells]
for cell in nb.cells:
    if cell.cell_type == "code":
        cell.source += FLUSH
try:
    NotebookClient(nb, timeout=120, kernel_name="deno", record_timing=False,
                   resources={"metadata": {"path": sys.argv[2]}}).execute()
finally:
    for cell, source in zip(nb.cells, sources):
        cell.source = source
nbformat.write(nb, path)
