"""Old name of liquid_control.util.paths (same module object). Kept only while simulation/scenario.py,
owned by a parallel change, still import it by this name; delete it once they import
liquid_control.util.paths."""
import sys

from liquid_control.util import paths as _module

sys.modules[__name__] = _module
