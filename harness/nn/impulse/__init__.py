"""Device impulse responses (DIRs): banks, loading, truncation, batched convolution.

The building blocks behind the ``vintage`` and ``multidir`` augmentations, meant
for any plugin that convolves training audio with measured or synthetic
impulse responses:

- :class:`IRBank`: impulse responses ``[N, L]`` at one sample rate, with one
  metadata dict per response (``microphone``, ``angle``, ``distance``, ``source``).
- Loading: :func:`list_ir_files` and :func:`load_ir_files` read a folder of
  audio files; :func:`load_sofa` reads a SOFA file of impulse responses.
  Every response is resampled once, at load time, to the target rate.
- :func:`kaiser_truncate` shortens responses to ``L`` samples with a Kaiser
  window; :func:`normalize_irs` scales each response.
- :func:`convolve`: batched FFT convolution (overlap-save) on the training device.
- :class:`ImpulseResponseAugmentation`: the waveform augmentation base class
  (path or embedded bank, probability, device-aware application, filters).
- :func:`frequency_responses_db` and :func:`quantile_bands`: the statistics
  behind ``harness plot dirs``.
- ``analog_*`` and :func:`spectrum_to_ir`: minimum-phase filter responses for
  building deterministic synthetic banks.
- :mod:`harness.nn.impulse.multidir`: the Multi DIR collection (file layout, filters and its
  embedded synthetic bank), shared by the ``multidir`` augmentation and ``harness dirgen``.

Modules: :mod:`~harness.nn.impulse.bank` (banks and reading files),
:mod:`~harness.nn.impulse.dsp` (onsets, truncation, normalization, convolution),
:mod:`~harness.nn.impulse.augmentation` (the base class), :mod:`~harness.nn.impulse.responses`
(statistics), :mod:`~harness.nn.impulse.filters` (analog prototypes); this package re-exports
their public names.

A third-party collection needs only a name and an embedded (or no) bank::

    from harness import hookimpl
    from harness.nn.impulse import ImpulseResponseAugmentation, IRBank

    class PhoneIRs(ImpulseResponseAugmentation):
        name = "phone-irs"
        description = "Convolve training clips with smartphone impulse responses."

        def embedded_bank(self, sample_rate: int) -> IRBank:
            raise UsageError("phone-irs needs --set aug.phone-irs.path=FOLDER")

    @hookimpl
    def register_augmentations(register):
        register(PhoneIRs)

It inherits the options of :class:`IRConfig` (``path``, ``p``, ``devices``,
``microphones``, ``length``, ``beta``, ``window``, ``align``, ``normalize``),
folder and SOFA loading, and device-aware application.

Decisions, for users who compare with published numbers:

- Files: a folder is searched for files with an audio suffix
  (:data:`AUDIO_SUFFIXES`); other files (README, licence, ``SOURCE.md``) are
  ignored. A file with an audio suffix that cannot be decoded is an error.
  A multi-channel file is an error: a DIR is one microphone's response, and
  silently picking a channel would hide a wrong file.
- Truncation: the segment starts ``pre`` samples before the response's onset
  (the first sample within 20 dB of its peak, as in ISO 3382-1) and is
  multiplied by the right half of a symmetric Kaiser window of length
  ``2L - 1`` (1 at the onset, ``1 / I0(beta)`` at the end). The literal
  reading of "windowed to L samples with a Kaiser window" (the first ``L``
  samples times the full symmetric ``kaiser(L, beta)``) is
  ``align="start", window="full"``.
- Normalization (after truncation): ``energy`` scales each response to unit
  L2 norm, so white input keeps its power; ``peak`` to a maximum magnitude of
  1; ``none`` keeps the file's scale.
"""

from __future__ import annotations

from harness.nn.impulse.augmentation import (
    DeviceClass,
    ImpulseResponseAugmentation,
    IRConfig,
    ir_groups,
    response_name,
)
from harness.nn.impulse.bank import (
    AUDIO_SUFFIXES,
    IRBank,
    default_meta,
    list_ir_files,
    load_chunk,
    load_ir_files,
    load_sofa,
    read_ir,
    resample_rows,
    sofa_sample_rate,
    sofa_source_positions,
    stack_padded,
)
from harness.nn.impulse.dsp import (
    ONSET_DB,
    PRE_ROLL_SECONDS,
    Align,
    Normalize,
    Window,
    block_length,
    convolve,
    fft_length,
    kaiser_truncate,
    kaiser_window,
    normalize_irs,
    onsets,
)
from harness.nn.impulse.filters import (
    analog_highpass,
    analog_low_shelf,
    analog_lowpass,
    analog_peaking,
    delay,
    spectrum_to_ir,
)
from harness.nn.impulse.responses import (
    ResponseBands,
    frequency_responses_db,
    log_frequencies,
    quantile_bands,
    smoothed_power,
)

__all__ = [
    "AUDIO_SUFFIXES",
    "ONSET_DB",
    "PRE_ROLL_SECONDS",
    "Align",
    "DeviceClass",
    "IRBank",
    "IRConfig",
    "ImpulseResponseAugmentation",
    "Normalize",
    "ResponseBands",
    "Window",
    "analog_highpass",
    "analog_low_shelf",
    "analog_lowpass",
    "analog_peaking",
    "block_length",
    "convolve",
    "default_meta",
    "delay",
    "fft_length",
    "frequency_responses_db",
    "ir_groups",
    "kaiser_truncate",
    "kaiser_window",
    "list_ir_files",
    "load_chunk",
    "load_ir_files",
    "load_sofa",
    "log_frequencies",
    "normalize_irs",
    "onsets",
    "quantile_bands",
    "read_ir",
    "resample_rows",
    "response_name",
    "smoothed_power",
    "sofa_sample_rate",
    "sofa_source_positions",
    "spectrum_to_ir",
    "stack_padded",
]
