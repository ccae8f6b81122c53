"""Named vertex groups of MediaPipe's 468-point face mesh.

"Right" and "left" are the subject's: the right eye is on the picture's left.
Contours run from one corner to the other so that upper and lower lids (or lips)
pair up index by index.
"""

from __future__ import annotations

# Lips, corner to corner (picture left to right).
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_LEFT_CORNER = 61  # picture left
MOUTH_RIGHT_CORNER = 291
UPPER_LIP_INNER_CENTRE = 13
LOWER_LIP_INNER_CENTRE = 14
UPPER_LIP_OUTER_CENTRE = 0
LOWER_LIP_OUTER_CENTRE = 17

# Eyes, outer corner to inner corner.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362

RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)

NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10

# The outline of the face, clockwise from the top of the forehead.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
    377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
