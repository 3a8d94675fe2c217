"""Fleet operations: list the customer stacks, preview them for review, roll a change out in waves."""
