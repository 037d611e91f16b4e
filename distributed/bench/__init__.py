"""`python -m distributed bench`: measured ratios against the ideal and against the simple strategies."""
