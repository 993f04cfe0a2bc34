"""Parallel-in-time evaluation of recurrent cells, reached through `jaxseq.unroll(method=...)`.

- `method="associative"`: cells whose step is an elementwise linear recurrence
  (`cell.linear`: mingru, minlstm, lru) in one `lax.associative_scan`.
- `method="deer"`: any cell, by Newton (DEER) or diagonal quasi-Newton (ELK)
  iterations on the whole trajectory; `deer(...)` also reports the iterations.

The building blocks `linear_scan` and `matrix_scan` solve h_t = a_t h_{t-1} + b_t
for every t at once.
"""

from jaxseq.parallel.newton import DeerInfo, deer
from jaxseq.parallel.scan import linear_scan, matrix_scan

__all__ = ["DeerInfo", "deer", "linear_scan", "matrix_scan"]
