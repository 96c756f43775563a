"""The reference's network-selection fixtures (task-relations section 6.3), as data.

The TAG, CS and HOA matrices of the TAG paper's notebooks for Taskonomy (5 tasks) and
CelebA (9 tasks), rounded as printed in the reference; rows are "onto" (target), columns
"from" (partner), the orientation :func:`taskspace.mtl.selection.select_groups` reads.
The tests reproduce the reference's expected selections from them and the selection
benchmark times the exact solver on them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["C", "C_TAG", "MATRICES", "TK", "TK_TAG", "c_cs", "tk_cs"]

TK = ["seg", "depth", "normal", "key", "edge"]
TK_TAG = [
    [11.9993, 0.1154, 0.0489, 0.0045, 0.0088],
    [0.4136, 7.3276, 0.2914, 0.0135, 0.0740],
    [0.1398, 0.2210, 1.0710, 0.0105, 0.0765],
    [0.0211, 0.0134, 0.0107, 0.7339, 0.6897],
    [0.0567, 0.0367, 0.0360, 0.3037, 5.9662],
]
TK_HOA = [
    [0.0509, 0.0528, 0.0471, 0.0655, 0.0606],
    [0.2636, 0.2616, 0.2551, 0.2674, 0.2675],
    [0.1004, 0.1002, 0.0975, 0.1110, 0.1082],
    [0.0972, 0.1068, 0.0568, 0.0910, 0.0933],
    [0.0287, 0.0423, 0.0310, 0.0232, 0.0337],
]
TK_CS_PAIRS = {
    ("seg", "depth"): 0.2596,
    ("seg", "normal"): 0.2424,
    ("seg", "key"): 0.0541,
    ("seg", "edge"): 0.0886,
    ("depth", "normal"): 0.9116,
    ("depth", "key"): 0.0915,
    ("depth", "edge"): 0.1565,
    ("normal", "key"): 0.1459,
    ("normal", "edge"): 0.2801,
    ("key", "edge"): 2.9681,
}

C = ["5oCS", "BlackH", "BlondH", "BrownH", "Goatee", "Mustache", "NoBeard", "Rosy", "Hat"]
C_TAG = [
    [239.7, -83.3, -86.1, -82.4, -82.0, -86.0, -49.0, -87.4, -86.8],
    [-188.2, 378.9, -184.5, -147.5, -189.5, -191.0, -185.3, -190.7, -189.4],
    [-121.1, -109.6, 310.7, -106.0, -122.6, -124.4, -117.2, -120.6, -123.3],
    [-143.7, -112.2, -139.8, 321.5, -145.4, -146.8, -142.4, -146.3, -146.2],
    [-85.5, -92.2, -95.8, -91.7, 238.4, -65.4, -46.0, -98.6, -95.7],
    [-30.2, -32.7, -34.8, -33.5, -0.8, 178.7, -15.3, -35.2, -34.4],
    [-109.5, -147.5, -152.4, -148.5, -127.3, -147.1, 291.8, -157.5, -156.2],
    [-75.0, -74.2, -72.0, -73.8, -76.5, -76.5, -75.2, 240.4, -77.0],
    [-109.4, -100.8, -113.5, -110.6, -110.3, -116.1, -106.5, -119.4, 374.6],
]
C_CS_UPPER = [  # row i holds pairs (i, j) for j > i
    [0.251, 0.206, 0.288, 0.626, 0.382, 2.112, 0.149, 0.298],
    [0.421, 1.369, 0.240, 0.154, 0.369, 0.131, 0.256],
    [0.541, 0.178, 0.103, 0.357, 0.299, 0.199],
    [0.226, 0.103, 0.362, 0.131, 0.162],
    [2.885, 1.958, 0.084, 0.362],
    [0.928, 0.117, 0.240],
    [0.151, 0.276],
    [0.073],
]
C_HOA_ACC = [
    [92.28, 91.73, 92.09, 92.16, 92.34, 92.30, 92.18, 92.12, 92.20],
    [90.41, 90.19, 90.29, 90.48, 90.24, 90.46, 90.30, 90.22, 90.34],
    [94.87, 95.00, 94.96, 94.87, 94.95, 94.94, 94.94, 94.75, 94.98],
    [84.44, 84.42, 84.39, 84.39, 84.09, 84.31, 84.30, 84.39, 84.39],
    [95.84, 95.76, 95.81, 95.77, 95.90, 95.87, 96.07, 95.83, 95.83],
    [95.69, 95.68, 95.80, 95.77, 95.75, 95.84, 95.75, 95.82, 95.74],
    [94.14, 94.01, 93.99, 94.17, 94.47, 94.30, 94.44, 93.96, 94.14],
    [94.66, 94.69, 94.64, 94.72, 94.68, 94.62, 94.62, 94.64, 94.59],
    [98.61, 98.63, 98.64, 98.56, 98.69, 98.66, 98.67, 98.59, 98.69],
]


def tk_cs() -> np.ndarray:
    a = np.full((5, 5), 9.799)
    for (x, y), v in TK_CS_PAIRS.items():
        a[TK.index(x), TK.index(y)] = a[TK.index(y), TK.index(x)] = v
    return a


def c_cs() -> np.ndarray:
    a = np.full((9, 9), 22.0)
    for i, row in enumerate(C_CS_UPPER):
        for k, v in enumerate(row):
            a[i, i + 1 + k] = a[i + 1 + k, i] = v
    return a


#: name -> (A[onto, from], task names, kind); CelebA HOA as error = 100 - accuracy.
MATRICES: dict[str, tuple[np.ndarray, list[str], str]] = {
    "tk_tag": (np.array(TK_TAG), TK, "tag"),
    "tk_cs": (tk_cs(), TK, "cs"),
    "tk_hoa": (np.array(TK_HOA), TK, "hoa"),
    "c_tag": (np.array(C_TAG), C, "tag"),
    "c_cs": (c_cs(), C, "cs"),
    "c_hoa": (100.0 - np.array(C_HOA_ACC), C, "hoa"),
}
