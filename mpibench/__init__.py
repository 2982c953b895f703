"""mpibench: an MPI-parallel cluster benchmark for transformer inference."""

__version__ = "0.1.0"
SCHEMA_VERSION = 5
