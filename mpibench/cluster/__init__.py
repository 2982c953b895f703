"""Everything that speaks MPI: topology and binding, the layout table, coordinator, worker, scaling, session.

`launch.launch` runs one `python -m mpibench.run` on every rank. Nothing outside this package (and
`run.py`) imports mpi4py.
"""
