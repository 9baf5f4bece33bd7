"""The cifar family's normalization from a train split's pixels, in numpy (no TensorFlow):
shared by the tf.data preprocessing (preprocess.normalize) and the device pipeline
(device_data), so that both subtract the same mean and divide by the same std."""

import dataclasses

import numpy as np

NORMALIZATIONS = ('pixel_mean', 'channel')  # data.normalize, the cifar family's


@dataclasses.dataclass(frozen=True)
class Normalization:
  """x -> (x - mean) / std on the 0-255 scale; mean is [C] or a per-pixel [H, W, C]."""

  mean: np.ndarray
  std: np.ndarray

  def scale_offset(self) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / std as x * scale + offset: one multiply-add per value."""
    return 1 / self.std, -self.mean / self.std


def normalization_from_images(images: np.ndarray, mode: str) -> Normalization:
  """Statistics of a decoded uint8 [N, H, W, C] train split.

  pixel_mean: subtract the mean image (He et al.), divide by one global std.
  channel: per-channel mean and std.
  """
  channels = images.shape[-1]
  if mode == 'pixel_mean':
    mean = images.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = np.full([channels], _histogram_moments(images.ravel())[1], np.float32)
  else:  # channel
    pixels = images.reshape(-1, channels)
    moments = [_histogram_moments(np.ascontiguousarray(pixels[:, c])) for c in range(channels)]
    mean, std = (np.array(m, np.float32) for m in zip(*moments, strict=True))
  return Normalization(mean, np.maximum(std, 1e-3))


def _histogram_moments(values: np.ndarray) -> tuple[float, float]:
  """Mean and std of uint8 values from their histogram: exact, without a float copy."""
  counts = np.bincount(values, minlength=256).astype(np.float64)
  levels = np.arange(256, dtype=np.float64)
  mean = (counts @ levels) / counts.sum()
  return mean, np.sqrt((counts @ (levels - mean) ** 2) / counts.sum())
