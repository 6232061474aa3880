"""The control plane's core (pure): ``plane.ControlPlane`` takes inputs with ``now`` and
leaves ``effects`` for its shell (meshd.daemon.control); ``peer`` is a neighbour as it
knows it."""
