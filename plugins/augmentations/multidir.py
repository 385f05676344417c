"""``multidir``: convolve training clips with multi-angle, multi-distance microphone DIRs.

The "Multi DIRs" of the seed paper (Sections 4 and 5.3): impulse responses of
25 microphones (omni, cardioid, supercardioid, figure-8, ...; condenser,
moving-coil and ribbon) measured at incidence angles 0-355 degrees in 5 degree
steps and at 50, 125 and 500 cm (Franco Hernandez et al., JAES 2022).

``aug.multidir.path`` may be

- the collection's folder as distributed: 48 kHz WAV files in
  ``<Mic>_<distance>cm_Normalised_IRs/IRs/<Mic>_<distance>cm_<angle>Deg.wav``,
  searched recursively; microphone, distance (cm) and angle (degrees) are
  parsed from each file name (files named otherwise load with the stem as the
  microphone and no angle or distance);
- a ``.sofa`` file whose ``Data.IR`` holds impulse responses (read with
  ``sofar``; angle and distance from ``SourcePosition``).

Responses are resampled once to the backbone's rate and windowed to their first
1024 samples with a symmetric Kaiser window (beta 2), as Section 5.3 reads
(``window``/``align`` options: the right half of a Kaiser window from each
response's onset); filters select
microphones, an angle range and distances. Without a path, an embedded
synthetic bank of the same shape is used (see
:func:`harness.nn.impulse.multidir.synthetic_multidir`).
"""

from __future__ import annotations

from harness import hookimpl
from harness.nn.impulse.multidir import MultiDirCollection


class MultiDir(MultiDirCollection):
    """Multi-angle, multi-distance microphone DIRs (25 microphones), real or embedded."""

    name = "multidir"
    description = (
        "Convolve training clips with multi-angle, multi-distance microphone impulse "
        "responses (folder or SOFA file, or an embedded synthetic bank of 25 microphones)."
    )

    @classmethod
    def describe_extra(cls) -> list[str]:
        return [
            "path: the collection's folder (<Mic>_<d>cm_Normalised_IRs/IRs/<Mic>_<d>cm_<a>Deg.wav) "
            "or a .sofa file",
            "embedded bank (path empty): 25 synthetic microphones x 72 angles x 3 distances",
        ]


@hookimpl
def register_augmentations(register):
    register(MultiDir)
