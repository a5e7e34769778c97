"""The command line, `python -m engine COMMAND ...`: one module per command group."""
