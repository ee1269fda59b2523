"""Old name of liquid_control.util.timing (same module object). Kept only while nodes/sim_node.py,
bag_player_node.py and mavlink_bridge_node.py, owned by a parallel change, still import it by this
name; delete it once they import liquid_control.util.timing."""
import sys

from liquid_control.util import timing as _module

sys.modules[__name__] = _module
