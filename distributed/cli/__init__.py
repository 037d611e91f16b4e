"""`python -m distributed ...`: the command line, terminal output, charts and local fleets for demos."""
