"""Hand-made events in the release's 42-slot layout (NaN = undefined feature, -99 = missing j3)."""

import numpy as np

nan = np.nan
J1 = [120.0, 0.5, 1.0, 5.0, nan, nan]
J2 = [80.0, -0.3, -2.0, 4.0, nan, nan]
J3 = [45.0, 1.9, 0.2, 1.0, nan, nan]
B1 = [120.0, 0.5, 1.0, 5.0, 14.0, nan]
B2 = [80.0, -0.3, -2.0, 4.0, 9.0, nan]
LEPTON = [60.0, 0.1, 2.5, nan, nan, nan]
ENERGY = [150.0, nan, -1.2, nan, nan, 7.5]
NO_J3 = [-99.0, -99.0, -99.0, -99.0, nan, nan]

SEVEN_NODE_EVENT = np.array(J1 + J2 + J3 + B1 + B2 + LEPTON + ENERGY)
SIX_NODE_EVENT = np.array(J1 + J2 + NO_J3 + B1 + B2 + LEPTON + ENERGY)
