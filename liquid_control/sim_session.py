"""Old name of liquid_control.simulation.session (same module object). Kept only while nodes/sim_node.py,
owned by a parallel change, still import it by this name; delete it once they import
liquid_control.simulation.session."""
import sys

from liquid_control.simulation import session as _module

sys.modules[__name__] = _module
