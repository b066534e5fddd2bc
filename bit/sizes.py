"""BiT sizes by name: (units per block, width factor). No torch here, so a script's
--help lists them without loading it."""
from collections import OrderedDict

KNOWN_MODELS = OrderedDict()
for _tier in ("M", "S"):
    for _depth, _units in (("50", (3, 4, 6, 3)), ("101", (3, 4, 23, 3)), ("152", (3, 8, 36, 3))):
        for _wf in (1, 2, 3, 4):
            KNOWN_MODELS[f"BiT-{_tier}-R{_depth}x{_wf}"] = (_units, _wf)
# smallest GroupNorm(32)-compatible net: stem and first bottleneck have 32 channels
KNOWN_MODELS["tiny"] = ((1, 1, 1, 1), 0.5)
