"""HDR video (PQ or HLG, BT.2020) mapped to the SDR BT.709 pictures the detector was trained on.

Phones record HDR by default (HLG or Dolby Vision with an HLG base), and streaming HDR is PQ.
Converted to 8-bit RGB as if it were SDR, such a frame is dim and desaturated: HDR puts the SDR
white at 75 % (HLG) or 58 % (PQ) of the signal, and BT.2020's wider primaries read as BT.709's
lose saturation. :class:`ToneMapper` does what BT.2408 describes for HDR-to-SDR conversion,
in display light: the signal to light (HLG's inverse OETF and its OOTF for a 1000 cd/m² display,
or PQ's EOTF), HDR reference white (203 cd/m²) to SDR white, BT.2020 to BT.709 primaries, a soft
shoulder that rolls highlights above 80 % of SDR white into its range instead of clipping them,
and BT.1886's gamma. Curves are lookup tables; the primaries are one ``cv2.transform``. A frame is
mapped a band of rows at a time, so the float intermediates stay in the CPU's cache.
"""
from __future__ import annotations

import av
import cv2
import numpy as np

TRC_PQ, TRC_HLG = 16, 18  # AVColorTransferCharacteristic
HDR_TRANSFERS = {TRC_PQ: "PQ (HDR10)", TRC_HLG: "HLG"}
_BT2020_COLORSPACES = frozenset({9, 10})  # AVColorSpace: BT.2020 non-constant / constant luminance
REF_WHITE_NITS = 203.0  # BT.2408's HDR reference white, mapped to SDR white
HLG_PEAK_NITS = 1000.0  # the display HLG's OOTF is taken for (its reference)
HLG_GAMMA = 1.2  # the OOTF's system gamma at 1000 cd/m²
SHOULDER = 0.8  # SDR light above this is rolled off smoothly towards white
_KR, _KB = 0.2627, 0.0593  # BT.2020 luma weights
_LUMA = np.array([_KR, 1 - _KR - _KB, _KB], np.float32)
_BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728],
                             [-0.1246, 1.1329, -0.0083],
                             [-0.0182, -0.1006, 1.1187]], np.float32)
_SIGNAL_BITS = 10
_RANGE = 2.0  # SDR light the output table spans: the shoulder has reached white (254.9 of 255) by then
# 32 rows of 1080p are 0.7 MB of float light: mapped band by band, each step reads the last one's
# output from cache instead of memory (a 1080p frame took about half the time it took whole)
_BAND_ROWS = 32


def _hlg_to_scene(signal: np.ndarray) -> np.ndarray:
    """HLG's inverse OETF: signal 0..1 to scene light 0..1."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    return np.where(signal <= 0.5, signal ** 2 / 3, (np.exp((signal - c) / a) + b) / 12)


def _pq_to_nits(signal: np.ndarray) -> np.ndarray:
    """PQ's EOTF (SMPTE ST 2084): signal 0..1 to display light in cd/m²."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = signal ** (1 / m2)
    return 10000 * (np.maximum(p - c1, 0) / (c2 - c3 * p)) ** (1 / m1)


def _shoulder(x: np.ndarray) -> np.ndarray:
    """Identity up to :data:`SHOULDER`, then a smooth roll-off that reaches 1 only at infinity."""
    room = 1 - SHOULDER
    return np.where(x <= SHOULDER, x, SHOULDER + room * (1 - np.exp(-(x - SHOULDER) / room)))


class ToneMapper:
    """Maps decoded frames of one HDR transfer (:data:`TRC_PQ` or :data:`TRC_HLG`) to SDR RGB.

    The signal is read in 10 bits (the light table is indexed by the 16-bit sample, each 10-bit
    step repeated), light is float32, and the output table is indexed by the square root of light,
    close to the output gamma, so its 256 steps fall about where the output's do."""

    def __init__(self, transfer: int) -> None:
        if transfer not in (TRC_PQ, TRC_HLG):
            raise ValueError(f"not an HDR transfer: {transfer}")
        self.transfer = transfer
        signal = (np.arange(2 ** _SIGNAL_BITS, dtype=np.float64) + 0.5) / 2 ** _SIGNAL_BITS  # each step's middle
        if transfer == TRC_HLG:
            # scene light; the OOTF (which needs all three channels) makes it display light in apply()
            self._to_light = _hlg_to_scene(signal).astype(np.float32)
        else:
            self._to_light = (_pq_to_nits(signal) / REF_WHITE_NITS).astype(np.float32)
        self._to_light = np.repeat(self._to_light, 2 ** (16 - _SIGNAL_BITS))
        root = np.arange(256, dtype=np.float64) / 255
        sdr = _shoulder(root ** 2 * _RANGE)
        self._to_sdr = np.round(255 * np.clip(sdr, 0, 1) ** (1 / 2.4)).astype(np.uint8)

    def apply(self, frame: av.VideoFrame) -> np.ndarray:
        """``frame`` as SDR BT.709 RGB, ``uint8`` ``(H, W, 3)``."""
        colorspace = "bt2020" if frame.colorspace in _BT2020_COLORSPACES else None
        # 10 bits of signal: at 8, PQ's steep curve and the output gamma make one step near black
        # several output levels (a pure red came back with 13 of green)
        wide = frame.reformat(format="rgb48le", src_colorspace=colorspace).to_ndarray()
        sdr = np.empty(wide.shape, np.uint8)
        for top in range(0, wide.shape[0], _BAND_ROWS):
            band = slice(top, top + _BAND_ROWS)
            self._map_rows(wide[band], sdr[band])
        return sdr

    def _map_rows(self, wide: np.ndarray, sdr: np.ndarray) -> None:
        """Maps ``wide`` (16-bit R'G'B' rows) into ``sdr`` (the same rows, 8-bit)."""
        # every 16-bit sample is in the table, so clipping changes nothing; it spares numpy's bounds check
        light = np.take(self._to_light, wide, mode="clip")
        if self.transfer == TRC_HLG:  # OOTF: display light = scene light * scene luminance ** (gamma - 1)
            luma = cv2.max(cv2.transform(light, _LUMA[None, :]), 1e-6)
            gain = cv2.pow(luma, HLG_GAMMA - 1) * np.float32(HLG_PEAK_NITS / REF_WHITE_NITS)
            light = cv2.multiply(light, cv2.merge([gain, gain, gain]))
        light = cv2.transform(light, _BT2020_TO_BT709)
        root = cv2.sqrt(cv2.max(light, 0.0))
        cv2.LUT(cv2.convertScaleAbs(root, alpha=255 / np.sqrt(_RANGE)), self._to_sdr, dst=sdr)


class SdrPictures:
    """Decoded frames as SDR RGB ``uint8``, each by its own transfer: a PQ or HLG frame tone-mapped
    (one :class:`ToneMapper` per transfer, made when first needed), any other converted as it is.

    The transfer can change within a stream (a broadcast that switches between SDR and HLG
    programmes, a playlist of clips), so it is read from every frame, not from the first.
    With ``tone_map`` False every frame is converted as it is."""

    def __init__(self, tone_map: bool = True) -> None:
        self.tone_map = tone_map
        self._mappers: dict[int, ToneMapper] = {}

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """``frame`` as SDR RGB ``uint8`` ``(H, W, 3)``."""
        transfer = frame.color_trc
        if not self.tone_map or transfer not in HDR_TRANSFERS:
            return frame.to_ndarray(format="rgb24")
        mapper = self._mappers.get(transfer)
        if mapper is None:
            mapper = self._mappers[transfer] = ToneMapper(transfer)
        return mapper.apply(frame)
