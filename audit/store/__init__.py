"""The store: run records, the HDF5 run file and its checksums, run locks, the store directory and experiment.json."""
