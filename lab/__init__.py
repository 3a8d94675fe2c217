"""An emulated customer instance on this machine, for tests and for people (`python -m lab up`)."""
