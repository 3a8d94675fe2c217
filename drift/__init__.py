"""Fleet drift audit: `python -m drift --stack customer-... [--stack ...]` (see drift/fleet.py)."""
