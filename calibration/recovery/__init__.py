"""Training on the calibration images: feature mimicking, recovery, recoverability (PRACTISE)."""
