"""The ``sasfleet`` command: the root group (``main``) and the operator commands (submit,
jobs, job, agents, schedule, dead, top) with their renderings. Services and ``shared``
never import it."""
