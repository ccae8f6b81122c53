"""Where the photo sits in the output frame.

- "fit": the whole photo, as large as fits, centred (bars where the aspect ratios differ).
- "auto": a head-and-shoulders shot. The photo is scaled so the face (forehead to chin)
  is FACE_SHARE of the frame height, the face centred across and a little above the
  middle. The top of the head is never cut when the photo shows it: HEADROOM face heights
  above the forehead (hair, a cap) stay in the frame, the face moved down (and, if need
  be, made smaller within FACE_SHARE_RANGE) to keep them. The photo stays over the
  canvas where it can (no bar is made by centring alone); it may be enlarged at most
  MAX_UPSCALE times. When that shot cannot be had - the face already fills the photo
  from top to bottom, the photo is too narrow to cover most of the frame, or the face
  would stay far too small - it falls back to "fit".
"""

from __future__ import annotations

from avatar_node.media.canvas import CanvasPlacement, place, placed

FRAMINGS = ("auto", "fit")
#: Target face height (mesh extent, forehead to chin) as a share of the frame height.
FACE_SHARE = 0.47
#: The range a head-and-shoulders frame keeps the face in.
FACE_SHARE_RANGE = (0.40, 0.55)
#: Where the face's centre sits, as a share of the frame height from the top.
FACE_CENTRE_Y = 0.47
#: Room kept above the face mesh's top (the upper forehead) for the rest of the head:
#: hair, a hat or a cap reach about half a face height above it.
HEADROOM = 0.55
#: The lowest the face's centre may be moved to make that room (share of frame height).
LOWEST_FACE_CENTRE_Y = 0.56
#: Space left between the top of the head and the frame's top (share of frame height).
TOP_MARGIN = 0.02
#: Largest enlargement of the photo (a bigger one looks soft).
MAX_UPSCALE = 2.6
#: Smallest share of the frame width the photo must cover for a head-and-shoulders shot.
MIN_WIDTH_COVER = 0.6


def frame_placement(
    photo_size: tuple[int, int],
    face_box: tuple[float, float, float, float],
    canvas_size: tuple[int, int],
    framing: str = "auto",
) -> CanvasPlacement:
    """Scale and offset of the photo on the canvas. `face_box` is (x0, y0, x1, y1) of the
    face mesh in photo pixels."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}; got {framing!r}")
    w, h = photo_size
    cw, ch = canvas_size
    fit = place(w, h, cw, ch)
    if framing == "fit":
        return fit
    x0, y0, x1, y1 = face_box
    face_h = max(y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # The head above the face, as far as the photo shows it, in face heights.
    above = min(HEADROOM, max(y0, 0.0) / face_h)
    share = FACE_SHARE
    centre_y = FACE_CENTRE_Y
    # Head top = centre - (0.5 + above) * share must stay below the margin: move the face
    # down first, then make it smaller.
    needed = TOP_MARGIN + (0.5 + above) * share
    if needed > centre_y:
        centre_y = min(needed, LOWEST_FACE_CENTRE_Y)
        share = max((centre_y - TOP_MARGIN) / (0.5 + above), FACE_SHARE_RANGE[0])
    scale = min(share * ch / face_h, MAX_UPSCALE)
    if h * scale < ch:  # the photo must fill the frame's height: enlarge within range
        scale = ch / h
    share = face_h * scale / ch
    if not FACE_SHARE_RANGE[0] - 0.02 <= share <= FACE_SHARE_RANGE[1] or scale > MAX_UPSCALE * 1.001:
        return fit
    if w * scale < MIN_WIDTH_COVER * cw or scale <= fit.scale:
        return fit
    ox = _clamp_offset(cw / 2 - cx * scale, w * scale, cw)
    oy = _clamp_offset(centre_y * ch - cy * scale, h * scale, ch)
    return placed(scale, ox, oy, w, h)


def _clamp_offset(offset: float, size: float, canvas: float) -> float:
    """Keep the canvas covered where the picture is large enough; else keep the picture
    on the canvas with the face as central as it allows."""
    if size >= canvas:
        return min(max(offset, canvas - size), 0.0)
    return min(max(offset, 0.0), canvas - size)
