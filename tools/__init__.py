"""The tools that run a whole fleet on this machine: ``sasfleet demo``, ``bench``, ``scale``
and ``chaos``, the local fleet harness they share, and the chaos suite's handlers."""
