"""Root pytest configuration, for the notebooks under solutions/ and labs/ (tests/ has its own conftest).

nbval waits at most 5 seconds (a constant, `IPyNbCell.output_timeout`, with no option) for each output message
after a cell's reply; on a loaded 2-core machine the kernel's output thread can lag that far behind a long
training cell, and CI once failed lab 01's SFT cell on that wait alone ("Timeout of 5 seconds exceeded waiting
for output") though the cell had finished. The wait is raised here; a cell that really hangs is still caught by
nbval's own cell timeout and by CI's limit.
"""

NBVAL_OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):       # nbval's notebook cells
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
