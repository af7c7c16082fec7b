"""Calibration images: reading and decoding files, preprocessing, the calibration set."""
