"""The suite around the library: benchmark scripts, probes and their results (see
``benchmark/README.md``). Not installed; run the scripts from a checkout (``python benchmark/...``)."""
