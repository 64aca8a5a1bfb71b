"""A plugin package outside the library: one strategy, one algorithm and one reward, each one
module, registered through the ``diffexp.plugins`` entry-point group (``plugin.py``)."""
